"""The fast per-segment exposition carries exactly the samples of the reference collectors, and
what it reads of the detectors (fixed thresholds once, fast statistic getters) is what their
formulas give."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from detectors import (
    DETECTORS,
    BankConfig,
    DetectorBank,
    FeatureDrift,
    MeanShiftCUSUM,
    RateBound,
    rate_bound,
    wilson_lower_bound,
)
from detectors.alarm import Alarm
from monitor.alerts import AlertLog, AlertTracker
from monitor.config import DetectorSettings, PipelineSettings
from monitor.events import InvalidEvent, decode_event
from monitor.exposition import SegmentExposition
from monitor.metrics import build_registry
from monitor.pipeline import Pipeline
from monitor.simulate import Fault, SimulationConfig, generate


@dataclass
class Msg:
    value: bytes
    topic: str = "t"
    partition: int = 0


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            value = s.value
            out[(s.name, tuple(sorted(s.labels.items())))] = "nan" if math.isnan(value) else value
    return out


def test_fast_exposition_equals_the_collectors() -> None:
    pipeline = Pipeline(
        PipelineSettings(max_segments=50), DetectorSettings(), AlertTracker(60, "d", [AlertLog()])
    )
    events = []
    for i in range(3000):
        env = f"env-{i % 7}" if i % 11 else 'we"ird\\env\nname'
        events.append(
            {
                "schema_version": 1,
                "event_id": f"e{i}",
                "ts": 1.0 + i,
                "run_id": "r",
                "env_id": env,
                "status": "failed" if i % 13 == 0 else "completed",
                "reward": None if i % 13 == 0 else float(i % 3) / 2,
                "completion_tokens": 100 + i % 50,
            }
        )
    pipeline.process_messages([Msg(json.dumps(e).encode()) for e in events])
    pipeline.tracker.on_alarm("r", "env-1", Alarm("error_rate", "page", 0.2, 0.05, "x"), 5, 5.0)
    full = build_registry(pipeline)
    core = build_registry(pipeline, per_segment=False)
    exposition = SegmentExposition(pipeline)
    first = exposition.render()
    fast = generate_latest(core) + first
    reference = _samples(generate_latest(full).decode())
    rendered = _samples(fast.decode())
    reference = {
        k: v for k, v in reference.items() if k[0] != "rollout_monitor_collect_duration_seconds"
    }
    rendered = {
        k: v for k, v in rendered.items() if k[0] != "rollout_monitor_collect_duration_seconds"
    }
    assert rendered == reference
    assert len(rendered) > 8 * 16 * 2
    # The texts kept for the next scrapes (reused once a batch has ended) say the same.
    pipeline.end_batch()  # (also resolves the alert above: the alert families change)
    for _ in range(2):
        kept = exposition.render()
        assert kept == SegmentExposition(pipeline).render()
    assert exposition.last_rendered == 0
    alerts = b"# HELP rollout_monitor_alarms_total"
    assert kept.split(alerts)[0] == first.split(alerts)[0]


# What the exporter reads of the detectors, on every scrape: thresholds that their class
# declares fixed are read once, and the statistic getters written for speed give the very
# float of the formulas they replace.


def _bank_stream(events: int, faults: tuple[Fault, ...]) -> Iterator[DetectorBank]:
    """The bank of each event's segment, after that event (simulated, with faults)."""
    banks: dict[tuple[str, str], DetectorBank] = {}
    config = SimulationConfig(seed=11, events=events, faults=faults)
    for message in generate(config):
        try:
            event = decode_event(message)
        except InvalidEvent:
            continue
        key = (event.run_id, event.env_id)
        bank = banks.get(key)
        if bank is None:
            bank = banks[key] = DetectorBank(BankConfig())
        bank.update(event)
        yield bank


_FAULTS = (
    Fault("reward_hack", "tool-use", 6000),
    Fault("zero_variance", "math-v2", 6000, end=14000),
    Fault("error_burst", "code-sandbox", 6000, end=12000),
    Fault("length_collapse", "math-v2", 16000),
    Fault("truncation", "code-sandbox", 16000),
    Fault("masked_failure", "tool-use", 18000),
    Fault("reward_drop", "code-sandbox", 22000),
)


def test_a_threshold_declared_fixed_never_moves() -> None:
    """Over a long stream whose faults make most detectors detect (and reset), the threshold
    of every detector whose class sets ``fixed_threshold`` stays the value it had when built;
    a threshold that moves belongs to a class that does not set it (reward_distribution)."""
    assert {cls.detector_id for cls in DETECTORS.values() if not cls.fixed_threshold} == {
        "reward_distribution"
    }
    first: dict[int, dict[str, float]] = {}
    moved: set[str] = set()
    alarmed: set[str] = set()
    for bank in _bank_stream(30_000, _FAULTS):
        built = first.setdefault(id(bank), {d: x.threshold for d, x in bank.detectors.items()})
        for detector_id, detector in bank.detectors.items():
            if detector.alarm is not None:
                alarmed.add(detector_id)
            if detector.threshold != built[detector_id]:
                assert not type(detector).fixed_threshold, detector_id
                moved.add(detector_id)
    assert moved == {"reward_distribution"}  # the stream is long enough to move one
    assert len(alarmed) >= 6, alarmed  # and it made detectors detect, and reset


def _cusum_statistic(c: MeanShiftCUSUM) -> float:
    """MeanShiftCUSUM.statistic as it was written before the exporter needed it fast."""
    h = c._h
    stat = max(c._up / c._h_up * h, c._down / c._h_down * h) if h > 0.0 else 0.0
    sides = [(c._u0, c._d0, c._hu0, c._hd0)]
    if c._k1:
        sides.append((c._u1, c._d1, c._hu1, c._hd1))
    for up, down, h_up, h_down in sides[: len(c.fast_k)]:
        for side, limit in ((up, h_up), (down, h_down)):
            scaled = side / limit * h if limit > 0.0 else 0.0
            if scaled > stat:
                stat = scaled
    return stat


def _cusum_fast_busy(c: MeanShiftCUSUM) -> bool:
    sides = [(c._u0, c._d0, c._hu0, c._hd0)]
    if c._k1:
        sides.append((c._u1, c._d1, c._hu1, c._hd1))
    return any(
        up > 0.5 * h_up or down > 0.5 * h_down for up, down, h_up, h_down in sides[: len(c.fast_k)]
    )


def _same(a: float, b: float) -> bool:
    """Bit for bit (NaN and the sign of zero included)."""
    return type(a) is type(b) and float(a).hex() == float(b).hex()


_CUSUMS = [
    {},
    {"k": 3.0, "arl0": 1.01},  # h = 0
    {"batch_size": 4, "lags": 2, "warmup": 16, "fast_k": (0.5,), "arl0": 500.0},
    {"batch_size": 4, "lags": 2, "warmup": 16, "fast_k": (0.5, 1.0), "arl0": 500.0},
    {"batch_size": 8, "lags": 6, "warmup": 64, "fast_k": (1.0, 2.0)},
]


@pytest.mark.parametrize("params", _CUSUMS, ids=str)
def test_the_cusum_statistic_is_the_formula_on_streams(params: dict[str, Any]) -> None:
    rng = random.Random(5)
    cusum = MeanShiftCUSUM(**params)
    nonzero = 0
    for i in range(20_000):
        shift = 2.5 if i % 5000 > 3500 else (-1.5 if i % 7000 > 6200 else 0.0)
        cusum.update(rng.gauss(shift, 1.0) * (1.0 + (i // 4000)))
        assert _same(cusum.statistic, _cusum_statistic(cusum)), i
        assert cusum._fast_busy() is _cusum_fast_busy(cusum), i
        nonzero += bool(cusum._u0 or cusum._d0 or cusum._u1 or cusum._d1)
    assert nonzero > 100 or not cusum.fast_k  # the per-sample charts took part


@pytest.mark.parametrize("params", _CUSUMS, ids=str)
def test_the_cusum_statistic_is_the_formula_on_random_states(params: dict[str, Any]) -> None:
    """Any state update can reach: sides >= 0 (often exactly 0), thresholds >= h > 0 (or
    h = 0), skewness factors of either sign of the skew."""
    rng = random.Random(17)
    cusum = MeanShiftCUSUM(**params)

    def side() -> float:
        return 0.0 if rng.random() < 0.4 else rng.expovariate(0.3)

    base = cusum._fast_base
    for _ in range(5000):
        cusum._up, cusum._down = side(), side()
        cusum._h_up = cusum._h * rng.uniform(1.0, 3.0)
        cusum._h_down = cusum._h * rng.choice([1.0, rng.uniform(1.0, 3.0)])
        cusum._u0, cusum._d0, cusum._u1, cusum._d1 = side(), side(), side(), side()
        for i, name in enumerate(("_hu0", "_hd0", "_hu1", "_hd1")):
            limit = base[i // 2] * rng.uniform(1.0, 3.0) if len(base) > i // 2 else math.inf
            setattr(cusum, name, limit)
        assert _same(cusum.statistic, _cusum_statistic(cusum))
        assert cusum._fast_busy() is _cusum_fast_busy(cusum)


def test_the_statistics_the_exporter_reads_are_their_formulas() -> None:
    """Each detector's statistic, after every event of a faulted stream, equals the formula
    it replaces (``max`` over parts, the Wilson bound computed afresh)."""

    def rate(r: RateBound) -> float:
        return wilson_lower_bound(r.count, r.n, r.z) if r._lower < 0 else r._lower

    formulas: dict[str, Callable[[Any], float]] = {
        "component_imbalance": lambda d: max(
            (_cusum_statistic(p.spread) for p in d._parts.values()), default=0.0
        ),
        "feature_drift": lambda d: max(
            (a / c for a, c in zip(d._d, d._crit, strict=True)), default=0.0
        ),
        "invalid_reward": lambda d: max(d._bound.statistic, d._repeat.statistic),
        "reward_shift": lambda d: _cusum_statistic(d.cusum),
        "length_anomaly": lambda d: _cusum_statistic(d.cusum),
        "reward_hacking": lambda d: _cusum_statistic(d._reward),
        "error_rate": lambda d: rate(d.rate),
        "truncation_rate": lambda d: rate(d.rate),
        "verifier_flakiness": lambda d: rate(d.rate),
        "zero_variance_groups": lambda d: rate(d._rate),
        "policy_staleness": lambda d: rate(d._rate),
    }
    seen: dict[str, set[float]] = {d: set() for d in formulas}
    for n, bank in enumerate(_bank_stream(24_000, _FAULTS)):
        if n % 3:
            continue
        for detector_id, formula in formulas.items():
            detector = bank.detectors[detector_id]
            value = detector.statistic
            assert _same(value, formula(detector)), (n, detector_id)
            seen[detector_id].add(value)
    assert all(len(values) > 1 for d, values in seen.items() if d != "verifier_flakiness"), {
        d: len(v) for d, v in seen.items()
    }


def test_feature_drift_statistic_is_max_over_fields() -> None:
    rng = random.Random(3)
    detector = FeatureDrift()
    for _ in range(2000):
        n = rng.randrange(0, 6)
        values = [0.0, 0.5, 1.5, math.nan, math.inf, 1e-300]
        detector._d = [rng.choice(values) if rng.random() < 0.3 else rng.random() for _ in range(n)]
        detector._crit = [rng.choice([1.0, rng.uniform(0.01, 2.0)]) for _ in range(n)]
        expected = max(
            (a / c for a, c in zip(detector._d, detector._crit, strict=True)), default=0.0
        )
        assert _same(detector.statistic, expected)


def test_the_remembered_wilson_bounds_stay_the_formula_and_bounded() -> None:
    rng = random.Random(9)
    remembered = rate_bound._stale_bound
    cap = remembered.cache_info().maxsize
    assert cap is not None
    for _ in range(3 * cap):
        n = rng.randrange(1, 3000)
        count = rng.randrange(0, n + 1)
        z = rng.choice([1.96, 4.5, 5.2])
        assert _same(remembered(count, n, z), wilson_lower_bound(count, n, z))
        assert remembered.cache_info().currsize <= cap
    detector = RateBound(threshold=0.2, window=300, min_samples=10)
    for i in range(5000):
        detector.update(rng.random() < (0.05 if i % 2000 < 1500 else 0.4))
        expected = (
            wilson_lower_bound(detector.count, detector.n, detector.z)
            if detector._lower < 0
            else detector._lower
        )
        assert _same(detector.statistic, expected)
