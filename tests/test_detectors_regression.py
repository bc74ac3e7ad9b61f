"""Fixed-seed regression tests (exact detection indices) and behaviour on realistic streams.

The exact indices were computed once from these seeded streams and are asserted so that any
change of a detector's numbers shows up here; a change that is intended updates them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pytest

from detectors import (
    DETECTORS,
    BankConfig,
    DetectorBank,
    ErrorRate,
    InvariantCounter,
    LengthAnomaly,
    MaskedFailure,
    MeanShiftCUSUM,
    RateBound,
    RewardShift,
    TruncationRate,
    cusum_threshold,
)
from detectors.alarm import Alarm
from monitor.events import ErrorInfo, ErrorWhere, RolloutEvent, Timings

_TIMINGS = Timings(score_s=0.5, score_timeout_s=30.0)


def event(**fields: Any) -> RolloutEvent:
    """A valid clean event; keyword arguments replace fields."""
    base: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "e",
        "ts": 0.0,
        "run_id": "run",
        "env_id": "env",
        "status": "completed",
        "reward": 1.0,
        "stop_reason": "stop",
        "completion_tokens": 800,
        "max_completion_tokens": 4096,
        "timings": _TIMINGS,
    }
    base.update(fields)
    return RolloutEvent(**base)


def detections(detector: Any, stream: Iterable[Any]) -> list[int]:
    """Indices of the updates on which a building block detected."""
    out = []
    for i, x in enumerate(stream):
        detector.update(x)
        if detector.drift_detected:
            out.append(i)
    return out


def alarms(detector: Any, stream: Iterable[Any]) -> list[tuple[int, Alarm]]:
    """(index, alarm) of the updates on which a failure-mode detector raised an alarm."""
    out = []
    for i, e in enumerate(stream):
        detector.update(e)
        if detector.alarm is not None:
            out.append((i, detector.alarm))
    return out


def rewards(probabilities: np.ndarray, seed: int) -> Iterator[RolloutEvent]:
    """Binary rewards with a per-episode success probability."""
    wins = np.random.default_rng(seed).random(len(probabilities)) < probabilities
    for win in wins.tolist():
        yield event(reward=float(win))


def steps(*parts: tuple[int, float]) -> np.ndarray:
    """A piecewise-constant sequence from (length, value) parts."""
    return np.concatenate([np.full(n, v) for n, v in parts])


def failures(
    shares: np.ndarray, seed: int, where: ErrorWhere = "verifier"
) -> Iterator[RolloutEvent]:
    failed = np.random.default_rng(seed).random(len(shares)) < shares
    for f in failed.tolist():
        if f:
            yield event(status="failed", reward=None, error=ErrorInfo(type="Boom", where=where))
        else:
            yield event()


def truncations(shares: np.ndarray, seed: int) -> Iterator[RolloutEvent]:
    cut = np.random.default_rng(seed).random(len(shares)) < shares
    for c in cut.tolist():
        if c:
            yield event(status="truncated", stop_reason="length", completion_tokens=4096)
        else:
            yield event()


def lengths(typical: np.ndarray, seed: int) -> Iterator[RolloutEvent]:
    noise = np.random.default_rng(seed).normal(0.0, 0.4, len(typical))
    for t in (typical * np.exp(noise)).astype(int).tolist():
        yield event(completion_tokens=t)


# -- exact detection indices -----------------------------------------------------------------


def test_cusum_threshold_matches_the_textbook_chart() -> None:
    # k = 0.5, h = 5: two-sided in-control ARL about 465 (one side about 930).
    assert cusum_threshold(0.5, 469) == pytest.approx(5.0, abs=0.01)
    assert cusum_threshold(0.5, 1_000_000) == pytest.approx(12.6495, abs=1e-4)


def test_mean_shift_cusum_indices() -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal(12_000)
    x[4000:8000] += 1.0
    x[8000:] -= 1.0
    detector = MeanShiftCUSUM()
    assert detections(detector, x.tolist()) == [4032, 8009]


def test_mean_shift_cusum_directions_and_post_change_mean() -> None:
    rng = np.random.default_rng(12)
    x = np.concatenate([rng.normal(10.0, 2.0, 3000), rng.normal(7.0, 2.0, 1000)])
    detector = MeanShiftCUSUM(arl0=100_000)
    found = None
    for i, v in enumerate(x.tolist()):
        detector.update(v)
        if detector.drift_detected:
            found = i
            break
    assert found == 3005
    assert detector.direction == "down"
    assert detector.baseline_mean == pytest.approx(10.0, abs=0.15)
    assert detector.baseline_std == pytest.approx(2.0, abs=0.15)
    assert detector.post_change_mean == pytest.approx(7.0, abs=1.0)


def test_mean_shift_cusum_relearns_after_a_detection() -> None:
    rng = np.random.default_rng(13)
    x = np.concatenate([rng.normal(0.0, 1.0, 2000), rng.normal(3.0, 1.0, 3000)])
    detector = MeanShiftCUSUM(arl0=100_000, warmup=300)
    assert detections(detector, x.tolist()) == [2003]
    assert detector.baseline_mean == pytest.approx(3.0, abs=0.1)
    assert not detector.warming_up


def test_rate_bound_indices() -> None:
    shares = steps((3000, 0.01), (2000, 0.3), (3000, 0.01), (2000, 0.3))
    bits = (np.random.default_rng(14).random(len(shares)) < shares).tolist()
    detector = RateBound()
    assert detections(detector, bits) == [3153, 8136]


def test_invariant_counter_indices() -> None:
    broken = {*range(100, 151, 5), 1500, 1600, 3000}
    detector = InvariantCounter(quiet=1000)
    assert detections(detector, [i in broken for i in range(4000)]) == [100, 1500, 3000]
    assert detector.violations == 14


def test_error_rate_indices() -> None:
    detector = ErrorRate()
    found = alarms(detector, failures(steps((3000, 0.01), (1000, 0.3)), seed=15))
    assert [(i, a.severity) for i, a in found] == [(3137, "page")]


def test_masked_failure_indices() -> None:
    def stream() -> Iterator[RolloutEvent]:
        for i in range(5000):
            if i in (200, 210, 1100, 2500):
                yield event(reward=0.0, error=ErrorInfo(type="Timeout", where="judge"))
            else:
                yield event()

    found = alarms(MaskedFailure(), stream())
    assert [i for i, _ in found] == [200, 2500]


def test_reward_shift_indices() -> None:
    p = steps((5000, 0.6), (3000, 0.2), (3000, 0.6))
    found = alarms(RewardShift(), rewards(p, seed=16))
    assert [(i, a.severity, a.direction) for i, a in found] == [
        (5087, "page", "down"),
        (8027, "info", "up"),
    ]


def test_length_anomaly_indices() -> None:
    typical = steps((3000, 800.0), (2000, 200.0), (2000, 3000.0))
    found = alarms(LengthAnomaly(), lengths(typical, seed=17))
    assert [(i, a.severity, a.direction) for i, a in found] == [
        (3006, "warning", "down"),
        (5002, "warning", "up"),
    ]


def test_truncation_rate_indices() -> None:
    found = alarms(TruncationRate(), truncations(steps((2000, 0.05), (1000, 0.7)), seed=18))
    assert [(i, a.severity) for i, a in found] == [(2187, "warning"), (2458, "page")]


def test_bank_indices() -> None:
    def stream() -> Iterator[RolloutEvent]:
        rng = np.random.default_rng(19)
        u = rng.random((8000, 2))
        for i in range(8000):
            broken = i >= 4000
            if u[i, 0] < (0.25 if broken else 0.01):
                yield event(status="failed", reward=None, error=ErrorInfo(type="X", where="env"))
            else:
                yield event(reward=float(u[i, 1] < (0.2 if broken else 0.6)))

    bank = DetectorBank()
    found = [(i, a.detector, a.severity) for i, e in enumerate(stream()) for a in bank.update(e)]
    assert found == [
        (4098, "reward_shift", "page"),
        (4179, "error_rate", "page"),
        (4880, "reward_distribution", "warning"),
    ]


# -- behaviour -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_slow_reward_rise_of_healthy_learning_does_not_page(seed: int) -> None:
    found = alarms(RewardShift(), rewards(np.linspace(0.2, 0.6, 50_000), seed=seed))
    assert [a for _, a in found if a.severity == "page"] == []


def test_success_drop_from_60_to_20_percent_is_detected_within_100_episodes() -> None:
    delays = []
    for seed in range(20):
        found = alarms(RewardShift(), rewards(steps((5000, 0.6), (500, 0.2)), seed=100 + seed))
        assert found, seed
        index, alarm = found[0]
        assert alarm.severity == "page"
        delays.append(index - 5000)
    assert min(delays) >= 0
    assert max(delays) < 100


def test_reward_rise_is_info_and_skips_unscored_and_eval_episodes() -> None:
    detector = RewardShift()
    p = steps((3000, 0.2), (1000, 0.7))
    wins = (np.random.default_rng(20).random(len(p)) < p).tolist()
    found = []
    for i, win in enumerate(wins):
        # Eval episodes always score 1 and unscored ones carry no reward: neither may count.
        for e in (event(reward=float(win)), event(reward=1.0, phase="eval"), event(reward=None)):
            detector.update(e)
            if detector.alarm is not None:
                found.append((i, detector.alarm))
    assert [(i, a.severity, a.direction) for i, a in found] == [(3029, "info", "up")]
    assert "rose from 0.2" in found[0][1].summary


def test_reward_shift_active_until_the_reward_recovers() -> None:
    detector = RewardShift()
    p = steps((4000, 0.6), (3000, 0.2), (3000, 0.6))
    states = []
    for i, e in enumerate(rewards(p, seed=21)):
        detector.update(e)
        if i in (3999, 4500, 6999, 9999):
            states.append(detector.active)
    assert states == [False, True, True, False]


def test_error_rate_step_from_1_to_30_percent_is_detected() -> None:
    for seed in range(10):
        detector = ErrorRate()
        found = alarms(detector, failures(steps((3000, 0.01), (400, 0.3)), seed=200 + seed))
        assert len(found) == 1, seed
        index, alarm = found[0]
        assert 3000 <= index < 3300
        assert alarm.severity == "page"
        assert detector.active


def test_error_rate_summary_names_the_dominant_where() -> None:
    detector = ErrorRate()
    found = alarms(detector, failures(steps((1000, 0.01), (400, 0.4)), seed=22, where="sandbox"))
    assert len(found) == 1
    summary = found[0][1].summary
    assert summary.startswith("failure share ")
    assert "over 500 episodes; mostly where=sandbox" in summary
    assert detector.where_counts["sandbox"] == detector.rate.count


def test_error_rate_does_not_page_below_five_percent() -> None:
    found = alarms(ErrorRate(), failures(np.full(50_000, 0.03), seed=23))
    assert found == []


def test_masked_failure_fires_once_per_span_and_again_after_quiet() -> None:
    detector = MaskedFailure(quiet=1000)
    timeout = Timings(score_s=30.0, score_timeout_s=30.0)
    found = []
    for i in range(6000):
        in_span = 1000 <= i < 2000 or i >= 5000
        if in_span and i % 7 == 0:
            e = event(reward=0.0, timings=timeout)
        else:
            e = event(reward=0.0 if i % 3 == 0 else 1.0)  # honest zeros are fine
        detector.update(e)
        if detector.alarm is not None:
            found.append((i, detector.alarm.summary))
        if i == 2500:
            assert detector.active
        if i == 3100:
            assert not detector.active
            assert detector.statistic == 0.0
    assert found == [
        (1001, "reward 0 at the scoring timeout (score_s 30 >= score_timeout_s 30)"),
        (5005, "reward 0 at the scoring timeout (score_s 30 >= score_timeout_s 30)"),
    ]
    assert detector.counter.violations == 143 + 143


def test_masked_failure_contract_cases() -> None:
    error = ErrorInfo(type="Timeout", where="judge")
    cases = {
        "reward with error": (event(reward=0.0, error=error), True),
        "positive reward with error": (event(reward=0.7, error=error), True),
        "null reward with error": (event(reward=None, error=error, status="failed"), False),
        "zero at the timeout": (
            event(reward=0.0, timings=Timings(score_s=31.0, score_timeout_s=30.0)),
            True,
        ),
        "zero below the timeout": (event(reward=0.0), False),
        "zero without timings": (event(reward=0.0, timings=None), False),
        "nonzero at the timeout": (
            event(reward=1.0, timings=Timings(score_s=30.0, score_timeout_s=30.0)),
            False,
        ),
    }
    for name, (e, violated) in cases.items():
        detector = MaskedFailure()
        detector.update(e)
        assert (detector.alarm is not None) == violated, name


def test_truncation_pages_at_half_and_only_warns_below() -> None:
    high = alarms(TruncationRate(), truncations(steps((2000, 0.05), (2000, 0.75)), seed=24))
    assert [a.severity for _, a in high] == ["warning", "page"]
    assert high[1][1].value >= 0.5
    moderate = alarms(TruncationRate(), truncations(steps((2000, 0.05), (4000, 0.35)), seed=25))
    assert [a.severity for _, a in moderate] == ["warning"]


def test_truncation_is_derived_from_each_episode() -> None:
    cases = [
        (event(status="truncated"), True),
        (event(stop_reason="length"), True),
        (event(stop_reason="max_turns"), True),
        (event(completion_tokens=4096, max_completion_tokens=4096), True),
        (event(num_turns=8, max_turns=8), True),
        (event(completion_tokens=4095, max_completion_tokens=4096), False),
        (event(num_turns=0, max_turns=8), False),
        (event(completion_tokens=None, max_completion_tokens=None), False),
    ]
    for e, truncated in cases:
        detector = TruncationRate(min_samples=1, window=1)
        detector.update(e)
        assert detector.rate.count == int(truncated), e


def test_length_anomaly_summary_says_collapse_or_explosion_in_tokens() -> None:
    typical = steps((3000, 800.0), (1000, 100.0))
    found = alarms(LengthAnomaly(), lengths(typical, seed=26))
    summary = found[0][1].summary
    assert summary.startswith("completion length collapse: typical length about ")
    baseline = float(summary.split("baseline ")[1].split(" tokens")[0])
    assert baseline == pytest.approx(800.0, rel=0.1)
    found = alarms(LengthAnomaly(), lengths(steps((3000, 800.0), (1000, 3000.0)), seed=27))
    assert found[0][1].summary.startswith("completion length explosion")


def test_length_anomaly_skips_missing_lengths() -> None:
    detector = LengthAnomaly()
    for _ in range(1000):
        detector.update(event(completion_tokens=None))
    assert detector.cusum.warming_up


# -- the bank --------------------------------------------------------------------------------


def test_bank_shares_its_budget_among_budgeted_detectors() -> None:
    bank = DetectorBank(BankConfig(arl0=1_000_000))
    arl0s = {i: getattr(d, "arl0", None) for i, d in bank.detectors.items()}
    unbudgeted = {"masked_failure", "group_invariant"}
    assert list(arl0s) == list(DETECTORS)
    assert {i for i, a in arl0s.items() if a is None} == unbudgeted
    # 13 of the 15 detectors spend budget: each gets 13 times the bank's.
    assert {a for a in arl0s.values() if a is not None} == {13_000_000}
    only = DetectorBank(BankConfig(arl0=1e5, enabled=("reward_shift", "masked_failure")))
    assert list(only.detectors) == ["reward_shift", "masked_failure"]
    # the batched chart of reward_shift spends 80% of it, the two per-episode charts the rest
    expected = cusum_threshold(0.5, 1e5 / 0.8 / 8)
    assert only.detectors["reward_shift"].threshold == pytest.approx(expected)


def test_bank_overrides() -> None:
    config = BankConfig(overrides={"error_rate": {"window": 1000, "arl0": 1e3}})
    detector = DetectorBank(config).detectors["error_rate"]
    assert isinstance(detector, ErrorRate)
    assert (detector.window, detector.arl0) == (1000, 1e3)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"arl0": 1}, "arl0"),
        ({"enabled": ("error_rate", "error_rate")}, "enabled"),
        ({"enabled": ("silence",)}, "enabled"),
        ({"overrides": {"reward_shift": {"window": 3}}}, "overrides"),
        ({"enabled": ("error_rate",), "overrides": {"reward_shift": {}}}, "overrides"),
        ({"overrides": {"error_rate": {"window": -3}}}, "window"),
    ],
)
def test_bank_config_rejects_bad_settings(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        BankConfig(**kwargs)


def test_bank_update_returns_the_shared_empty_tuple_when_nothing_happens() -> None:
    bank = DetectorBank()
    first = bank.update(event())
    assert first == ()
    assert bank.update(event()) is first


def test_bank_detectors_view_is_read_only() -> None:
    bank = DetectorBank()
    with pytest.raises(TypeError):
        bank.detectors["error_rate"] = ErrorRate()  # type: ignore[index]
    for detector in bank.detectors.values():
        assert math.isfinite(detector.statistic)
        assert math.isfinite(detector.threshold)
        assert detector.active is False


def test_mean_shift_cusum_survives_a_vanishing_third_moment() -> None:
    # A constant stream after one outlier: the third moment decays towards 0 through the
    # subnormal range, where a threshold factor computed as 1 / (g / 3) divided by zero.
    detector = MeanShiftCUSUM(warmup=64, batch_size=8, lags=6, lrv_halflife=64, fast_k=(0.5, 1.0))
    detector.update(0.0)
    for _ in range(120_000):
        detector.update(1.0)
        assert not detector.drift_detected
    assert detector.threshold > 0.0
