"""Regression checks of the detection benchmark (``bench.detection``).

The quick subset runs here (well under a minute on two processes): no page on the clean
controls, every fault caught at its largest magnitude, and exact detection indices on a few
seeded scenarios. The committed results must carry the documented keys, and the committed
markdown report must be what ``bench.report.render`` makes of the committed JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # ``bench`` is not an installed package
    sys.path.insert(0, str(ROOT))

from bench import detection  # noqa: E402
from bench.faults import FAULTS  # noqa: E402
from bench.report import render  # noqa: E402
from bench.scenarios import FAILURE_MODE_IDS, SegmentSpec, events, generate  # noqa: E402
from detectors import DETECTORS  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "detection.json"
DOC = ROOT / "docs" / "detection-benchmark.md"

PAGE_IDS = [i for i, cls in DETECTORS.items() if cls.severity == "page"]

#: Page-severity detectors whose clean-control pages are a known, reported shortfall (see
#: docs/detection-benchmark.md): the test documents it instead of hiding it.
KNOWN_PAGES: dict[str, str] = {}
#: Faults that a detector misses at the largest magnitude for a known reason
#: (bench.detection.EXPLANATIONS, rendered in docs/detection-benchmark.md).
KNOWN_MISSES: tuple[str, ...] = ()


@pytest.fixture(scope="module")
def quick() -> dict[str, Any]:
    return detection.run(quick=True, seed=0, workers=2)


@pytest.mark.slow
@pytest.mark.parametrize("detector_id", PAGE_IDS)
def test_quick_clean_controls_raise_no_page(quick: dict[str, Any], detector_id: str) -> None:
    entry = quick["detectors"][detector_id]
    pages = entry["false_alarms_by_severity"].get("page", 0)
    if pages and detector_id in KNOWN_PAGES:
        pytest.xfail(f"{pages} pages on clean controls: {KNOWN_PAGES[detector_id]}")
    assert pages == 0, entry["examples"]


@pytest.mark.slow
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_quick_fault_detected_at_largest_magnitude(quick: dict[str, Any], fault: str) -> None:
    if FAULTS[fault].detector not in DETECTORS:
        pytest.skip(f"{FAULTS[fault].detector} is not implemented")
    (row,) = [r for r in quick["faults"] if r["fault"] == fault]
    assert row["magnitude"] == FAULTS[fault].magnitudes[-1]
    assert row["trials"] >= 10
    if row["recall"] < 0.9 and fault in KNOWN_MISSES:
        pytest.xfail(f"recall {row['recall']}: {detection.EXPLANATIONS[fault]}")
    assert row["recall"] >= 0.9, row["misses"]


def _alarms(spec: SegmentSpec, detector_id: str, **params: Any) -> list[tuple[int, str]]:
    detector = DETECTORS[detector_id](**params)
    out = []
    for i, event in enumerate(events(generate(spec))):
        detector.update(event)
        if detector.alarm is not None:
            out.append((i, detector.alarm.severity))
    return out


@pytest.mark.parametrize(
    ("spec", "detector_id", "params", "expected"),
    [
        (SegmentSpec("production", "math", 8000, 11, "error_burst", 0.4, 3000),
         "error_rate", {"arl0": 4e6}, [(3106, "page")]),
        (SegmentSpec("learning", "code", 8000, 12, "reward_drop", 1.0, 3000),
         "reward_shift", {"arl0": 4e6}, [(3162, "page")]),
        (SegmentSpec("stationary", "tool", 8000, 13, "masked_failure", 0.05, 3000),
         "masked_failure", {}, [(3013, "page")]),
        (SegmentSpec("heavy_tails", "math", 8000, 14, "length_collapse", 2.0, 3000),
         "length_anomaly", {"arl0": 4e6}, [(3029, "warning")]),
        (SegmentSpec("grouped", "code", 8000, 15, "truncation", 0.7, 3000),
         "truncation_rate", {"arl0": 4e6}, [(3207, "warning"), (3425, "page")]),
    ],
)  # fmt: skip
def test_fixed_seed_detection_indices(
    spec: SegmentSpec, detector_id: str, params: dict[str, Any], expected: list[tuple[int, str]]
) -> None:
    assert _alarms(spec, detector_id, **params) == expected


def test_faulted_stream_equals_clean_stream_before_onset() -> None:
    for name, fault in FAULTS.items():
        env = fault.envs[0]
        clean = generate(SegmentSpec("production", env, 3000, 5)).events_list()
        faulted = generate(SegmentSpec("production", env, 3000, 5, name, fault.large[-1], 2000))
        assert faulted.events_list()[:2000] == clean[:2000], name


def test_every_failure_mode_has_faults_with_two_large_magnitudes() -> None:
    for detector_id in FAILURE_MODE_IDS:
        faults = [f for f in FAULTS.values() if f.detector == detector_id]
        assert faults, detector_id
        for fault in faults:
            assert len(fault.magnitudes) >= 2 and set(fault.large) <= set(fault.magnitudes)


def test_committed_results_have_the_documented_keys() -> None:
    results = json.loads(RESULTS.read_text())
    for key in ("command", "started", "finished", "machine", "seeds", "budget", "targets"):
        assert key in results
    assert results["machine"]["cores"] >= 1
    assert results["quick"] is False
    assert results["clean"]["events"] >= 10_000_000
    assert set(FAILURE_MODE_IDS) <= set(results["detectors"])
    for detector_id, entry in results["detectors"].items():
        for key in ("false_alarms_per_million", "clean_events", "recall", "median_delay",
                    "p90_delay"):  # fmt: skip
            assert key in entry, (detector_id, key)
    rows = {(r["shift_sigma"], r["detector"]): r for r in results["mean_shift"]}
    for shift in (0.5, 1.0, 2.0):
        for name in ("ours", "oracle_cusum", "adwin", "kswin", "page_hinkley"):
            row = rows[(shift, name)]
            for key in ("false_alarms_per_million", "median_delay", "miss_rate"):
                assert key in row, (shift, name, key)


def test_committed_report_matches_committed_results() -> None:
    results = json.loads(RESULTS.read_text())
    assert DOC.read_text() == render(results)
