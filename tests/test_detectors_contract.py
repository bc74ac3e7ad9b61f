"""The contract every detector meets: checkpointing, cloning, parameter checks, bounded state.

One parametrized suite over every class of the detector library. Each case names the class,
its default constructor arguments, a clean stream (no detection expected at the default
budget) and a stream with a change (detections expected), both seeded.
"""

from __future__ import annotations

import copy
import inspect
import math
import pickle
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from detectors import (
    DETECTORS,
    BankConfig,
    BatchKS,
    BernoulliCUSUM,
    ComponentImbalance,
    DetectorBank,
    ErrorRate,
    FeatureDrift,
    GroupInvariant,
    InvalidReward,
    InvariantCounter,
    LengthAnomaly,
    MaskedFailure,
    MeanShiftCUSUM,
    PolicyStaleness,
    RateBound,
    RewardDistribution,
    RewardHacking,
    RewardShift,
    ToolFailureRate,
    TruncationRate,
    VerifierFlakiness,
    ZeroVarianceGroups,
)
from detectors._base import state_names
from detectors.alarm import Alarm
from monitor.events import ErrorInfo, RolloutEvent, Timings

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
        "num_turns": 1,
        "max_turns": 8,
        "timings": _TIMINGS,
    }
    base.update(fields)
    return RolloutEvent(**base)


# -- streams ---------------------------------------------------------------------------------


def normal_stream(n: int, seed: int, shift_at: int | None = None) -> Iterator[float]:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(n)
    if shift_at is not None:
        values[shift_at:] += 1.0
    yield from values.tolist()


def bits(n: int, seed: int, p: float, p_after: float | None = None) -> Iterator[bool]:
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    threshold = np.full(n, p)
    if p_after is not None:
        threshold[n // 2 :] = p_after
    yield from (u < threshold).tolist()


def spread_stream(n: int, seed: int) -> Iterator[float]:
    """Standard normal values whose spread doubles halfway (the mean stays)."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(n)
    values[n // 2 :] *= 2.0
    yield from values.tolist()


def invariant_stream(n: int, seed: int, broken: bool) -> Iterator[bool]:
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    for i in range(n):
        yield bool(broken and i >= n // 2 and u[i] < 0.05)


def episodes(n: int, seed: int, broken: bool = False) -> Iterator[RolloutEvent]:
    """Clean episodes; with ``broken``, the second half has every failure mode at once."""
    rng = np.random.default_rng(seed)
    u = rng.random((n, 4))
    tokens = np.exp(rng.normal(math.log(800.0), 0.4, n)).astype(int)
    for i in range(n):
        bad = broken and i >= n // 2
        p_fail, p_win, p_cut = (0.3, 0.1, 0.6) if bad else (0.01, 0.5, 0.05)
        if u[i, 0] < p_fail:
            error = ErrorInfo(type="Timeout", where="verifier")
            # A broken harness also scores some failures instead of sending null.
            reward = 0.0 if bad and u[i, 3] < 0.5 else None
            yield event(status="failed", error=error, reward=reward)
            continue
        cut = u[i, 2] < p_cut
        yield event(
            reward=float(u[i, 1] < p_win),
            phase="eval" if i % 50 == 0 else "train",
            status="truncated" if cut else "completed",
            stop_reason="length" if cut else "stop",
            completion_tokens=4096 if cut else int(tokens[i] // (4 if bad else 1)),
        )


#: Faults of :func:`rich_episodes`, one per detector id it breaks.
FAULTS = (
    "out_of_range",
    "mass_at_value",
    "zero_variance",
    "mixed_tasks",
    "reward_hack",
    "format_saturates",
    "stale_policy",
    "flaky_verifier",
    "tool_errors",
    "prompt_drift",
)


def rich_episodes(
    n: int, seed: int, fault: str | None = None, start: int | None = None
) -> Iterator[RolloutEvent]:
    """GRPO-like episodes in groups of 8 with every field the detectors read.

    Healthy: per task a difficulty; four possible answers per task (``completion_hash``),
    each deterministically right or wrong, so a re-scored answer gets the same reward;
    rewards ``0.8 * correct + 0.2 * format`` in ``[0, 1]``; log-normal lengths; staleness
    0-2; tool calls failing at 3%; timings and a ``tests_total`` metric. ``fault`` (one of
    :data:`FAULTS`) switches on at episode ``start`` (default ``n // 2``).
    """
    rng = np.random.default_rng(seed)
    start = n // 2 if start is None else start
    groups = -(-n // 8)
    difficulty = rng.normal(0.0, 1.2, groups)
    right = rng.random((groups, 4)) < 1.0 / (1.0 + np.exp(-difficulty))[:, None]
    formatted = rng.random((groups, 4)) < 0.9
    prompt = np.exp(rng.normal(math.log(300.0), 0.3, groups)).astype(int)
    answer = rng.integers(0, 4, n)
    u = rng.random((n, 4))
    z = rng.standard_normal((n, 4))
    calls = rng.poisson(2.0, n)
    tool_errors = rng.binomial(calls, 0.03)
    for i in range(n):
        g, a = divmod(i, 8)[0], int(answer[i])
        bad = fault is not None and i >= start
        correct = float(right[g, a])
        fmt = float(formatted[g, a])
        tokens = math.exp(6.5 + 0.4 * z[i, 0])
        repetition = 0.1 * math.exp(0.3 * z[i, 1])
        staleness = int(u[i, 0] * 3)
        task = f"t{g}"
        n_calls, n_errors = int(calls[i]), int(tool_errors[i])
        prompt_tokens = int(prompt[g])
        if bad and fault == "zero_variance":
            correct = fmt = 0.0
        elif bad and fault == "reward_hack":
            correct = float(u[i, 1] < 0.9)
            tokens *= 2.5
            repetition += 0.3
        elif bad and fault == "format_saturates":
            fmt = 1.0
        elif bad and fault == "stale_policy":
            staleness += 5
        elif bad and fault == "tool_errors" and u[i, 2] < 0.4:
            n_errors = n_calls
        elif bad and fault == "prompt_drift":
            prompt_tokens *= 3
        elif bad and fault == "mixed_tasks" and i % 8 == 7 and g % 4 == 0:
            task = f"t{g}b"
        reward = 0.8 * correct + 0.2 * fmt
        if bad and fault == "out_of_range" and u[i, 3] < 0.02:
            reward = 1.25
        elif bad and fault == "mass_at_value" and u[i, 3] < 0.4:
            reward = 0.5
        elif bad and fault == "flaky_verifier" and u[i, 3] < 0.3:
            reward = float(u[i, 2] < 0.5)
        policy = i // 2000
        yield event(
            ts=1_000.0 + 0.05 * i,
            task_id=task,
            group_id=f"g{g}",
            group_size=8,
            policy_version=policy,
            trainer_version=policy + staleness,
            reward=reward,
            reward_min=0.0,
            reward_max=1.0,
            reward_components={"correct": correct, "format": fmt},
            prompt_tokens=prompt_tokens,
            completion_tokens=int(tokens),
            num_tool_calls=n_calls,
            num_tool_errors=n_errors,
            completion_hash=f"h{a}",
            repetition=repetition,
            timings=Timings(
                generate_s=tokens / 80.0 * math.exp(0.2 * z[i, 2]),
                score_s=0.5 * math.exp(0.3 * z[i, 3]),
                score_timeout_s=30.0,
            ),
            metrics={"tests_total": float(4 + i % 7)},
        )


@dataclass(frozen=True)
class Case:
    cls: type
    clean: Callable[[int, int], Iterator[Any]]
    changing: Callable[[int, int], Iterator[Any]]
    bad_params: tuple[tuple[dict[str, Any], str], ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        suffix = "-".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.cls.__name__}[{suffix}]" if suffix else self.cls.__name__


#: (class, fault of :func:`rich_episodes` that it detects, bad parameters, parameters).
FAILURE_MODE_CASES: list[
    tuple[type, str, tuple[tuple[dict[str, Any], str], ...], dict[str, Any]]
] = [
    (
        InvalidReward,
        "out_of_range",
        (({"quiet": 0}, "quiet"), ({"memory": 0}, "memory"), ({"odds_ratio": 0.5}, "odds")),
        {},
    ),
    (
        RewardDistribution,
        "mass_at_value",
        (({"window": 4}, "window"), ({"every": 0}, "every"), ({"block": 0}, "block")),
        {},
    ),
    (
        ZeroVarianceGroups,
        "zero_variance",
        (
            ({"threshold": 0.0}, "threshold"),
            ({"page_threshold": 0.3}, "page_threshold"),
            ({"timeout_s": 0.0}, "timeout_s"),
            ({"max_open": 0}, "max_open"),
            ({"window": 0}, "window"),
        ),
        {},
    ),
    (
        GroupInvariant,
        "mixed_tasks",
        (({"quiet": 0}, "quiet"), ({"timeout_s": -1.0}, "timeout_s")),
        {},
    ),
    (
        RewardHacking,
        "reward_hack",
        (
            ({"within": 0}, "within"),
            ({"correctness": ("",)}, "correctness"),
            ({"correctness": "correct"}, "correctness"),
            ({"max_components": 0}, "max_components"),
            ({"k": 0.0}, "k"),
        ),
        {},
    ),
    (
        ComponentImbalance,
        "format_saturates",
        (
            ({"batch": 4}, "batch"),
            ({"dominance": 0.4}, "dominance"),
            ({"collapse": 1.0}, "collapse"),
            ({"min_std": 0.0}, "min_std"),
            ({"max_components": 1}, "max_components"),
            ({"warmup": 1}, "warmup"),
        ),
        {},
    ),
    (
        PolicyStaleness,
        "stale_policy",
        (
            ({"max_staleness": -1}, "max_staleness"),
            ({"quantile": 1.0}, "quantile"),
            ({"heartbeat_events": 0}, "heartbeat_events"),
            ({"window": 0}, "window"),
        ),
        {},
    ),
    (
        VerifierFlakiness,
        "flaky_verifier",
        (
            ({"capacity": 0}, "capacity"),
            ({"tolerance": -1.0}, "tolerance"),
            ({"threshold": 1.0}, "threshold"),
        ),
        {"capacity": 1000},
    ),
    (
        ToolFailureRate,
        "tool_errors",
        (
            ({"threshold": 0.0}, "threshold"),
            ({"window": 1}, "window"),
            ({"min_samples": 1}, "min_samples"),
            ({"batch_size": 0}, "batch_size"),
        ),
        {},
    ),
    (
        FeatureDrift,
        "prompt_drift",
        (
            ({"fields": ("reward",)}, "fields"),
            ({"fields": ("timings.nope",)}, "fields"),
            ({"fields": ["prompt_tokens"]}, "fields"),
            ({"max_fields": 0}, "max_fields"),
            ({"every": 0}, "every"),
        ),
        {},
    ),
]


CASES = [
    Case(
        MeanShiftCUSUM,
        clean=lambda n, s: normal_stream(n, s),
        changing=lambda n, s: normal_stream(n, s, shift_at=n // 2),
        bad_params=(
            ({"k": 0.0}, "k"),
            ({"arl0": 1.0}, "arl0"),
            ({"warmup": 1}, "warmup"),
            ({"batch_size": 0}, "batch_size"),
            ({"baseline_halflife": 0.5}, "baseline_halflife"),
            ({"min_std": 0.0}, "min_std"),
            ({"clip": 0.4}, "clip"),
        ),
    ),
    Case(
        RateBound,
        clean=lambda n, s: bits(n, s, 0.01),
        changing=lambda n, s: bits(n, s, 0.01, 0.3),
        bad_params=(
            ({"threshold": 0.0}, "threshold"),
            ({"threshold": 1.0}, "threshold"),
            ({"window": 0}, "window"),
            ({"min_samples": 501}, "min_samples"),
            ({"arl0": 0.5}, "arl0"),
        ),
    ),
    Case(
        InvariantCounter,
        clean=lambda n, s: invariant_stream(n, s, broken=False),
        changing=lambda n, s: invariant_stream(n, s, broken=True),
        bad_params=(({"quiet": 0}, "quiet"),),
    ),
    Case(
        BernoulliCUSUM,
        clean=lambda n, s: bits(n, s, 0.2),
        changing=lambda n, s: bits(n, s, 0.2, 0.5),
        bad_params=(
            ({"odds_ratio": 1.0}, "odds_ratio"),
            ({"arl0": 1.0}, "arl0"),
            ({"warmup": 0}, "warmup"),
            ({"baseline_halflife": 0.5}, "baseline_halflife"),
            ({"min_rate": 0.5}, "min_rate"),
            ({"batch_size": 0}, "batch_size"),
            ({"batch_size": 16, "warmup": 20}, "warmup"),
        ),
    ),
    Case(
        BernoulliCUSUM,
        clean=lambda n, s: bits(n, s, 0.05),
        changing=lambda n, s: bits(n, s, 0.05, 0.3),
        bad_params=(({"batch_size": 16, "arl0": 10.0}, "arl0"),),
        params={"batch_size": 16},
    ),
    Case(
        BatchKS,
        clean=lambda n, s: normal_stream(n, s),
        changing=lambda n, s: spread_stream(n, s),
        bad_params=(
            ({"window": 8}, "window"),
            ({"reference": 100}, "reference"),
            ({"every": 0}, "every"),
            ({"every": 1000}, "every"),
            ({"block": 0}, "block"),
            ({"arl0": 100.0}, "arl0"),
        ),
    ),
    *(
        Case(
            cls,
            clean=lambda n, s: episodes(n, s),
            changing=lambda n, s: episodes(n, s, broken=True),
            bad_params=bad,
        )
        for cls, bad in [
            (ErrorRate, (({"threshold": 1.5}, "threshold"), ({"window": 0}, "window"))),
            (MaskedFailure, (({"quiet": -1}, "quiet"),)),
            (RewardShift, (({"k": -1.0}, "k"), ({"arl0": 0}, "arl0"))),
            (LengthAnomaly, (({"min_std": -1.0}, "min_std"), ({"batch_size": 0}, "batch_size"))),
            (
                TruncationRate,
                (({"page_threshold": 0.1}, "page_threshold"), ({"min_samples": 0}, "min_samples")),
            ),
        ]
    ),
    *(
        Case(
            cls,
            clean=lambda n, s: rich_episodes(n, s),
            changing=lambda n, s, fault=fault: rich_episodes(n, s, fault),  # type: ignore[misc]
            bad_params=bad,
            params=params,
        )
        for cls, fault, bad, params in FAILURE_MODE_CASES
    ),
]


def observe(detector: Any) -> tuple[Any, ...]:
    """What a detector shows after an update, for comparing two instances."""
    if hasattr(detector, "alarm"):
        return (detector.alarm, detector.active, detector.statistic, detector.threshold)
    return (detector.drift_detected, getattr(detector, "statistic", None))


def detected(detector: Any) -> bool:
    return detector.alarm is not None if hasattr(detector, "alarm") else detector.drift_detected


def run(detector: Any, stream: Iterator[Any]) -> list[tuple[Any, ...]]:
    out = []
    for x in stream:
        detector.update(x)
        out.append(observe(detector))
    return out


def state_size(obj: Any, seen: set[int] | None = None) -> int:
    """Number of stored scalars and container elements reachable through slots."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return 1
    if isinstance(obj, (bytes, bytearray, array)):
        return len(obj)
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, (list, tuple, set, frozenset)):
        return len(obj) + sum(state_size(v, seen) for v in obj)
    if isinstance(obj, dict):
        return len(obj) + sum(state_size(v, seen) for v in obj.values())
    slots = state_names(type(obj))  # compiled classes list theirs in __mypyc_attrs__
    if slots:
        return sum(state_size(getattr(obj, s), seen) for s in slots if hasattr(obj, s))
    return state_size(vars(obj), seen)


@pytest.fixture(params=CASES, ids=lambda c: c.id)
def case(request: pytest.FixtureRequest) -> Case:
    case: Case = request.param
    return case


def test_every_failure_mode_detector_has_a_case() -> None:
    assert set(DETECTORS.values()) <= {c.cls for c in CASES}


def test_pickle_round_trip_mid_stream(case: Case) -> None:
    stream = list(case.changing(4000, 1))
    original = case.cls(**case.params)
    run(original, iter(stream[:2000]))
    restored = pickle.loads(pickle.dumps(original))
    assert run(restored, iter(stream[2000:])) == run(original, iter(stream[2000:]))


def test_the_changing_stream_is_detected(case: Case) -> None:
    detector = case.cls(**case.params)
    assert any(detected(detector) for _ in run_each(detector, case.changing(4000, 1)))


def run_each(detector: Any, stream: Iterator[Any]) -> Iterator[None]:
    for x in stream:
        detector.update(x)
        yield None


def test_deepcopy_mid_stream_behaves_identically(case: Case) -> None:
    stream = list(case.changing(4000, 2))
    original = case.cls(**case.params)
    run(original, iter(stream[:2000]))
    twin = copy.deepcopy(original)
    assert run(twin, iter(stream[2000:])) == run(original, iter(stream[2000:]))


def test_clone_has_the_parameters_and_fresh_state(case: Case) -> None:
    stream = list(case.changing(3000, 3))
    used = case.cls(**case.params)
    run(used, iter(stream))
    clone = used.clone()
    assert repr(clone) == repr(used)
    assert run(clone, iter(stream)) == run(case.cls(**case.params), iter(stream))


def test_repr_names_every_parameter(case: Case) -> None:
    detector = case.cls(**case.params)
    text = repr(detector)
    assert text.startswith(f"{case.cls.__name__}(")
    for name in inspect.signature(case.cls).parameters:
        assert f"{name}=" in text


def test_defaults_are_immutable(case: Case) -> None:
    for param in inspect.signature(case.cls).parameters.values():
        assert isinstance(param.default, (int, float, str, bool, tuple, frozenset, type(None)))


def test_bad_parameters_raise_value_error_naming_them(case: Case) -> None:
    for kwargs, name in case.bad_params:
        with pytest.raises(ValueError, match=name):
            case.cls(**{**case.params, **kwargs})


def test_read_only_properties(case: Case) -> None:
    detector = case.cls(**case.params)
    names = ["alarm", "active", "statistic"] if hasattr(detector, "alarm") else ["drift_detected"]
    for name in names:
        with pytest.raises(AttributeError):
            setattr(detector, name, None)


def test_state_is_bounded(case: Case) -> None:
    detector = case.cls(**case.params)
    stream = case.clean(100_000, 4)
    for i, x in enumerate(stream, 1):
        detector.update(x)
        if i == 10_000:
            size_10k = state_size(detector)
            pickled_10k = len(pickle.dumps(detector))
    assert state_size(detector) == size_10k
    # Integers pickle in 1, 2 or 4 bytes: allow a few bytes, never growth with the stream.
    assert abs(len(pickle.dumps(detector)) - pickled_10k) <= 16


def test_no_detection_on_a_clean_stream_at_the_default_budget(case: Case) -> None:
    detector = case.cls(**case.params)
    hits = [
        i for i, _ in enumerate(run_each(detector, case.clean(20_000, 5))) if detected(detector)
    ]
    assert hits == []


# -- the bank --------------------------------------------------------------------------------


def test_bank_pickle_round_trip_mid_stream() -> None:
    stream = list(episodes(4000, 6, broken=True))
    bank = DetectorBank(BankConfig())
    for e in stream[:2000]:
        bank.update(e)
    restored = pickle.loads(pickle.dumps(bank))
    rest = stream[2000:]
    assert [restored.update(e) for e in rest] == [bank.update(e) for e in rest]


def test_bank_state_is_bounded_and_quiet_on_a_clean_stream() -> None:
    bank = DetectorBank()
    alarms: list[Alarm] = []
    for i, e in enumerate(episodes(100_000, 7), 1):
        alarms.extend(bank.update(e))
        if i == 10_000:
            size_10k = state_size(bank)
    assert state_size(bank) == size_10k
    assert alarms == []
