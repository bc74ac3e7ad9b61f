"""Throughput benchmark against the raw Kafka ceiling: ``python -m bench.throughput``.

Against the local Kafka broker, one topic is preloaded with ``--events`` schema-v1 events over
``--segments`` segments and another with as many events over ``--segments-large``. Then, in
rounds, each configuration runs in a fresh process (its own consumer group, its own peak RSS)
over the same topic:

* ``ceiling``: confluent-kafka batched ``consume`` plus msgspec typed decode, nothing else,
  with the consumer's prefetch tuned (:data:`TUNED`, the daemon's own prefetch defaults);
  ``ceiling_default`` is the same with librdkafka's default prefetch settings;
* ``e2e``: the daemon itself (``monitor.daemon.Daemon.run``) with the confluent backend and
  the default detector set; ``e2e_default_prefetch`` the same with librdkafka's default
  prefetch (:data:`LIBRDKAFKA_PREFETCH`) instead of the daemon's;
* ``e2e_kafka_python``: the daemon with the kafka-python backend;
* ``naive``: :mod:`bench.naive`, the hand-written baseline.

Ratios are taken against the ceiling of the same round, medians over rounds are reported.
Measured processes are pinned to one core (``--cpu``). A latency run per round produces at a
steady rate into a fresh topic while the daemon consumes it (:mod:`bench._latency`). Results
go to ``bench/results/throughput.json`` and, as tables, to ``docs/throughput.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench._kafka_load import (
    Preloaded,
    create_topic,
    delete_groups,
    delete_topics,
    preload,
    unique_topic,
)
from bench._latency import measure_latency
from bench._report import render
from bench._summary import environment, summarise

REPO_DIR = Path(__file__).resolve().parent.parent
RESULTS_PATH = REPO_DIR / "bench" / "results" / "throughput.json"
DOC_PATH = REPO_DIR / "docs" / "throughput.md"
#: Consumer prefetch settings for the ceiling, the same as the daemon's defaults
#: (``monitor.source.confluent.PREFETCH_DEFAULTS``): librdkafka's default
#: ``fetch.queue.backoff.ms`` (1000) idles the fetcher for a second whenever the local queue
#: is full, which caps any consumer that spends more than about 1 us per message.
DESCRIPTION = "Throughput benchmark of rollout-monitor against the raw Kafka ceiling."
TUNED: dict[str, Any] = {"fetch.queue.backoff.ms": 10, "queued.max.messages.kbytes": 16384}
#: librdkafka's own prefetch defaults, for ``e2e_default_prefetch``.
LIBRDKAFKA_PREFETCH: dict[str, Any] = {
    "fetch.queue.backoff.ms": 1000,
    "queued.max.messages.kbytes": 65536,
}


@dataclass(frozen=True)
class Config:
    bootstrap: str
    events: int
    segments: int
    segments_large: int
    runs: int
    slow_events: int
    partitions: int
    latency_rate: float
    latency_seconds: float
    max_seconds: float
    state_points: tuple[int, ...]
    state_events_per_segment: int
    extras: bool
    scrapes: int
    cpu: int | None
    quick: bool
    results: Path
    doc: Path


@dataclass(frozen=True)
class Plan:
    """One configuration measured on one preloaded topic."""

    name: str
    kind: str
    topic: Preloaded
    target: int
    backend: str = "confluent"
    librdkafka: dict[str, Any] = field(default_factory=dict)
    checkpoint_store: str | None = None


def parse_args(argv: Sequence[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="python -m bench.throughput", description=DESCRIPTION)
    p.add_argument("--events", type=int, help="events per topic (default 2M; quick 200k)")
    p.add_argument("--segments", type=int, default=1000, help="segments of the main topic")
    p.add_argument("--segments-large", type=int, default=10_000, help="of the second topic")
    p.add_argument("--runs", type=int, help="rounds; medians are reported (default 3; quick 1)")
    p.add_argument(
        "--slow-events", type=int, help="events read by kafka-python configurations (500k)"
    )
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--latency-rate", type=float, help="events/s of the latency run (default 50k)")
    p.add_argument("--latency-seconds", type=float, help="length of the latency run (default 30)")
    p.add_argument(
        "--max-seconds", type=float, help="cap on each measurement (default 45; quick 5)"
    )
    p.add_argument("--quick", action="store_true", help="small and fast, for development and tests")
    p.add_argument(
        "--cpu",
        type=int,
        default=(os.cpu_count() or 1) - 1,
        help="core the measured processes are pinned to (-1: no pinning)",
    )
    p.add_argument("--bootstrap", default=f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}")
    p.add_argument("--results", type=Path, default=RESULTS_PATH)
    p.add_argument("--doc", type=Path, default=DOC_PATH)
    a = p.parse_args(argv)
    events = a.events or (100_000 if a.quick else 2_000_000)
    return Config(
        bootstrap=a.bootstrap,
        events=events,
        segments=a.segments,
        segments_large=a.segments_large,
        runs=a.runs or (1 if a.quick else 3),
        slow_events=min(events, a.slow_events or (20_000 if a.quick else 500_000)),
        partitions=a.partitions,
        latency_rate=a.latency_rate or (10_000.0 if a.quick else 50_000.0),
        latency_seconds=a.latency_seconds or (3.0 if a.quick else 30.0),
        max_seconds=a.max_seconds or (5.0 if a.quick else 45.0),
        state_points=() if a.quick else (a.segments, 3 * a.segments, a.segments_large),
        state_events_per_segment=50,
        extras=not a.quick,
        scrapes=3 if a.quick else 7,
        cpu=None if a.cpu < 0 else a.cpu,
        quick=a.quick,
        results=a.results,
        doc=a.doc,
    )


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_MONITOR_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_DIR), env.get("PYTHONPATH")]))
    return env


def daemon_spec(
    bootstrap: str, topic: str, group: str, events: int, segments: int, cpu: int, **more: Any
) -> dict[str, Any]:
    """The spec of a ``daemon`` run of :mod:`bench._measure` over a preloaded topic, for the
    scripts that measure one thing of the daemon (``cpu`` < 0: not pinned)."""
    return {
        "kind": "daemon",
        "bootstrap": bootstrap,
        "topic": topic,
        "group": group,
        "target": events,
        "segments": segments,
        "cpu": None if cpu < 0 else cpu,
        "scrapes": 1,
        **more,
    }


def _spec(config: Config, plan: Plan) -> dict[str, Any]:
    return {
        "kind": plan.kind,
        "backend": plan.backend,
        "bootstrap": config.bootstrap,
        "topic": plan.topic.topic,
        "group": unique_topic(f"bench.{plan.name}"),
        "target": plan.target,
        "segments": plan.topic.segments,
        "cpu": config.cpu,
        "librdkafka": plan.librdkafka,
        "checkpoint_store": plan.checkpoint_store,
        "scrapes": config.scrapes,
        "max_seconds": config.max_seconds,
    }


def _run_child(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench._measure", json.dumps(spec)],
        cwd=REPO_DIR, env=_child_env(), capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['kind']} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure(config: Config, plan: Plan, groups: list[str]) -> dict[str, Any]:
    """Run ``plan`` in a fresh process; its result with the plan's name and topic."""
    spec = _spec(config, plan)
    groups.append(spec["group"])
    result = _run_child(spec)
    result.update(name=plan.name, segments=plan.topic.segments, topic_events=plan.topic.events)
    return result


def probe_state(config: Config) -> list[dict[str, Any]]:
    """Pipeline state against segments, in memory, at equal events per segment."""
    results = []
    for segments in config.state_points:
        spec = {
            "kind": "state",
            "target": segments * config.state_events_per_segment,
            "segments": segments,
            "cpu": config.cpu,
        }
        result = _run_child(spec)
        result.update(name=f"state_{segments}", segments=segments)
        _say(f"state of {segments:,} segments: {result['extra']['state_mb']:.0f} MB "
             f"({result['extra']['kb_per_segment']:.1f} KB per segment)")  # fmt: skip
        results.append(result)
    return results


def _has_checkpoints() -> bool:
    from monitor.config import Settings

    return "checkpoint" in Settings.model_fields


def _plans(config: Config, main: Preloaded, large: Preloaded) -> list[Plan]:
    slow = config.slow_events
    plans = [
        Plan("ceiling", "ceiling", main, main.events, librdkafka=TUNED),
        Plan("e2e", "daemon", main, main.events),
        Plan("e2e_kafka_python", "daemon", main, slow, backend="kafka-python"),
        Plan("naive", "naive", main, slow, backend="kafka-python"),
        Plan("ceiling_large", "ceiling", large, large.events, librdkafka=TUNED),
        Plan("e2e_large", "daemon", large, large.events),
    ]
    if config.extras:
        extras = [
            Plan("ceiling_default", "ceiling", main, main.events),
            Plan(
                "e2e_default_prefetch",
                "daemon",
                main,
                main.events,
                librdkafka=LIBRDKAFKA_PREFETCH,
            ),
        ]
        if _has_checkpoints():
            extras.append(
                Plan("e2e_no_checkpoint", "daemon", main, main.events, checkpoint_store="none")
            )
        plans[2:2] = extras
    return plans


def _preload(config: Config, segments: int, events: int, seed: int) -> Preloaded:
    topic = unique_topic(f"bench.throughput.s{segments}")
    create_topic(config.bootstrap, topic, config.partitions)
    loaded = preload(config.bootstrap, topic, events, segments, config.partitions, seed=seed)
    _say(
        f"preloaded {topic}: {events:,} events, {segments:,} segments, "
        f"{loaded.bytes / 1e6:,.0f} MB in {loaded.seconds:.1f} s"
    )
    return loaded


def _latency_round(
    config: Config, round_: int, created: list[str], groups: list[str]
) -> dict[str, Any]:
    latency, topic, group = measure_latency(
        config.bootstrap,
        config.segments,
        config.latency_rate,
        config.latency_seconds,
        {"bootstrap": config.bootstrap, "cpu": config.cpu},
        _child_env(),
        REPO_DIR,
    )
    created.append(topic)
    groups.append(group)
    bound = ">= " if latency.lower_bound else ""
    _say(
        f"round {round_ + 1}/{config.runs} latency at {latency.achieved_rate:,.0f}/s: "
        f"p50 {bound}{latency.p50_s:.3f} s, p99 {bound}{latency.p99_s:.3f} s"
    )
    return {**asdict(latency), "round": round_}


def _info(config: Config) -> dict[str, Any]:
    return {
        **environment(REPO_DIR),
        "quick": config.quick,
        "bootstrap": config.bootstrap,
        "events": config.events,
        "segments": config.segments,
        "segments_large": config.segments_large,
        "max_seconds": config.max_seconds,
        "state_events_per_segment": config.state_events_per_segment,
        "checkpoints": _has_checkpoints(),
        "partitions": config.partitions,
        "compression": "none",
        "runs": config.runs,
        "slow_events": config.slow_events,
        "pinned_cpu": config.cpu,
        "tuned_consumer": TUNED,
    }


def run(config: Config) -> dict[str, Any]:
    """Preload, measure every configuration ``runs`` times, and summarise."""
    started = time.monotonic()
    load_start = os.getloadavg()
    created: list[str] = []
    groups: list[str] = []
    measurements: list[dict[str, Any]] = []
    latency_runs: list[dict[str, Any]] = []
    try:
        main = _preload(config, config.segments, config.events, seed=1)
        created.append(main.topic)
        large = _preload(config, config.segments_large, config.events, seed=2)
        created.append(large.topic)
        plans = _plans(config, main, large)
        for round_ in range(config.runs):
            for plan in plans:
                result = {**measure(config, plan, groups), "round": round_}
                measurements.append(result)
                _say(
                    f"round {round_ + 1}/{config.runs} {plan.name:<17} "
                    f"{result['events_per_s']:>10,.0f} events/s over {result['events']:,} events, "
                    f"peak RSS {result['rss_peak_mb']:.0f} MB, load {result['load_start']:.2f}"
                )
            latency_runs.append(_latency_round(config, round_, created, groups))
        state = probe_state(config)
    finally:
        delete_topics(config.bootstrap, created)
        delete_groups(config.bootstrap, groups)
    info = {
        **_info(config),
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "wall_time_s": round(time.monotonic() - started, 1),
    }
    return summarise(info, measurements, latency_runs, state)


def write(results: dict[str, Any], results_path: Path, doc_path: Path) -> None:
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    doc_path.write_text(render(results))


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through run(), which deletes its topics


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    config = parse_args(argv)
    results = run(config)
    write(results, config.results, config.doc)
    _say(f"wrote {config.results} and {config.doc} ({results['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
