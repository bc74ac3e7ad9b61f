"""Checks of the throughput benchmark (``bench.throughput``); nothing here asserts on timings.

The quick mode runs against the real broker (well under a minute) and must write every
documented key with a positive number, a markdown page that is exactly what
``bench._report.render`` makes of the JSON, and daemon runs whose exported counter covers
every event. The committed results must agree with their committed page.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # ``bench`` is not an installed package
    sys.path.insert(0, str(ROOT))

from bench._events import EventFactory  # noqa: E402
from bench._report import render  # noqa: E402
from monitor.events import decode_event  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "throughput.json"
DOC = ROOT / "docs" / "throughput.md"

REQUIRED = (
    "cores",
    "events",
    "segments",
    "ceiling_events_per_s",
    "e2e_events_per_s",
    "e2e_kafka_python_events_per_s",
    "naive_events_per_s",
    "latency_p50_s",
    "latency_p99_s",
    "rss_mb_1k_segments",
    "rss_mb_10k_segments",
    "scrape_ms_1k_segments",
    "scrape_ms_10k_segments",
    "e2e_ratio_to_ceiling",
    "e2e_speedup_over_naive",
)


def _missing_or_not_positive(results: dict[str, Any]) -> list[str]:
    bad = []
    for key in REQUIRED:
        value = results.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            bad.append(f"{key}={value!r}")
    return bad


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    from stack import StackAddresses, kafka_problem

    bootstrap = StackAddresses.from_env().kafka_bootstrap
    problem = kafka_problem(bootstrap)
    if problem is not None:
        pytest.fail(f"Kafka is not reachable at {bootstrap} ({problem}); start it with "
                    "`make stack-up`", pytrace=False)  # fmt: skip
    out = tmp_path_factory.mktemp("throughput")
    results, doc = out / "throughput.json", out / "throughput.md"
    command = [sys.executable, "-m", "bench.throughput", "--quick", "--bootstrap", bootstrap,
               "--results", str(results), "--doc", str(doc)]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=600)  # about 40 s on an idle machine
    except subprocess.TimeoutExpired:
        proc.terminate()  # lets the benchmark delete its topics
        _, stderr = proc.communicate(timeout=120)
        pytest.fail(f"the quick benchmark did not finish:\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(results.read_text()), doc.read_text()


@pytest.mark.stack
def test_quick_run_has_every_key_as_a_positive_number(quick: tuple[dict[str, Any], str]) -> None:
    results, _ = quick
    assert _missing_or_not_positive(results) == []
    assert results["quick"] is True
    assert results["segments"] == 1000 and results["segments_large"] == 10_000


@pytest.mark.stack
def test_quick_run_doc_is_rendered_from_its_json(quick: tuple[dict[str, Any], str]) -> None:
    results, doc = quick
    assert doc == render(results)
    assert f"| {results['ceiling_events_per_s']:,.0f} | 1.000 |" in doc


@pytest.mark.stack
def test_quick_run_daemon_exported_every_event(quick: tuple[dict[str, Any], str]) -> None:
    results, _ = quick
    daemon_runs = [m for m in results["measurements"] if m["kind"] == "daemon"]
    assert {m["name"] for m in daemon_runs} >= {"e2e", "e2e_kafka_python", "e2e_large"}
    for m in daemon_runs:
        assert m["extra"]["exported_processed"] >= m["events"] > 0, m["name"]
        assert m["extra"]["invalid"] == 0, m["name"]
    by_name = {m["name"]: m for m in daemon_runs}
    assert by_name["e2e"]["segments_seen"] == results["segments"]
    assert 0 < by_name["e2e_large"]["segments_seen"] <= results["segments_large"]
    assert all(m["extra"]["overflow_events"] == 0 for m in daemon_runs)
    ratio = by_name["e2e"]["events_per_s"] / next(
        m["events_per_s"] for m in results["measurements"] if m["name"] == "ceiling"
    )
    assert results["e2e_ratio_to_ceiling"] == pytest.approx(ratio)


def test_committed_results_match_their_doc() -> None:
    if not RESULTS.exists():
        pytest.fail(f"{RESULTS} is missing; run `make bench`")
    results = json.loads(RESULTS.read_text())
    assert _missing_or_not_positive(results) == []
    assert DOC.read_text() == render(results)


def test_generated_events_are_valid_and_spread_over_segments() -> None:
    factory = EventFactory(segments=50, seed=3)
    first = factory.messages(4000, np.full(4000, 1_764_000_000.0))
    second = factory.messages(1000, np.full(1000, 1_764_000_001.0))
    events = [decode_event(value) for _, value in first + second]
    assert len({e.event_id for e in events}) == len(events)
    assert len({(e.run_id, e.env_id) for e in events}) == 50
    assert all(
        k == f"{e.run_id}|{e.env_id}".encode() for (k, _), e in zip(first, events, strict=False)
    )
    statuses = {e.status for e in events}
    assert statuses == {"completed", "truncated", "failed"}
    assert all(e.reward is None and e.error is not None for e in events if e.status == "failed")
    groups: dict[str, int] = {}
    for e in events:
        assert e.group_id is not None
        groups[e.group_id] = groups.get(e.group_id, 0) + 1
    assert max(groups.values()) == 8


def test_measured_configurations_use_the_daemons_batch_size() -> None:
    """The ceiling, naive and daemon runs consume batches of the daemon's default size, so
    a change of that default cannot leave the benchmark measuring another configuration."""
    from bench._measure import Spec
    from monitor.config import PipelineSettings

    spec = Spec(kind="ceiling", target=1, segments=1)
    assert spec.batch_max_events == PipelineSettings().batch_max_events
