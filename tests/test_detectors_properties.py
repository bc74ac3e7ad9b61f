"""Property-based checks of the statistical building blocks against naive recomputation."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import InvariantCounter, MeanShiftCUSUM, RateBound, wilson_lower_bound

labels = st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=400)


@settings(max_examples=200, deadline=None)
@given(stream=labels, window=st.integers(1, 60), threshold=st.floats(0.01, 0.9))
def test_rate_bound_matches_the_naive_window(
    stream: list[int], window: int, threshold: float
) -> None:
    detector = RateBound(threshold=threshold, window=window, min_samples=1, arl0=100.0)
    armed = True
    for i, x in enumerate(stream):
        detector.update(x)
        last = stream[max(0, i + 1 - window) : i + 1]
        positives = sum(1 for v in last if v)
        assert detector.n == len(last)
        assert detector.count == positives
        assert detector.rate == positives / len(last)
        assert detector.statistic == wilson_lower_bound(positives, len(last), detector.z)
        assert 0.0 <= detector.statistic <= detector.rate
        assert detector.active == (detector.statistic > threshold)
        expected = {v: last.count(v) for v in set(last) if v}
        assert detector.label_counts() == expected
        # Edge triggered, re-armed once the share is back at the threshold.
        assert detector.drift_detected == (armed and detector.active)
        if detector.drift_detected:
            armed = False
        elif not armed and not detector.active and positives <= threshold * len(last):
            armed = True


@settings(max_examples=200, deadline=None)
@given(
    stream=st.lists(st.booleans(), max_size=300),
    quiet=st.integers(1, 40),
)
def test_invariant_counter_detects_the_start_of_each_span(stream: list[bool], quiet: int) -> None:
    detector = InvariantCounter(quiet=quiet)
    last_violation: int | None = None
    for i, violated in enumerate(stream):
        detector.update(violated)
        starts_span = violated and (last_violation is None or i - last_violation > quiet)
        assert detector.drift_detected == starts_span
        if violated:
            last_violation = i
        assert detector.active == (last_violation is not None and i - last_violation < quiet)
    assert detector.violations == sum(stream)


@settings(max_examples=100, deadline=None)
@given(
    warmup=st.lists(
        st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False), min_size=2, max_size=50
    ),
)
def test_cusum_baseline_during_warmup_is_the_exact_mean_and_variance(warmup: list[float]) -> None:
    detector = MeanShiftCUSUM(warmup=len(warmup), min_std=1e-9)
    for x in warmup:
        detector.update(x)
    assert detector.baseline_mean == pytest.approx(statistics.fmean(warmup), rel=1e-9, abs=1e-9)
    expected_std = max(statistics.pstdev(warmup), 1e-9)
    assert math.isclose(detector.baseline_std, expected_std, rel_tol=1e-6, abs_tol=1e-6)


@settings(max_examples=50, deadline=None)
@given(value=st.floats(-1e6, 1e6, allow_nan=False), n=st.integers(300, 2000))
def test_cusum_never_detects_on_a_constant_stream(value: float, n: int) -> None:
    detector = MeanShiftCUSUM()
    for _ in range(n):
        detector.update(value)
        assert not detector.drift_detected
        assert detector.statistic == 0.0


@given(successes=st.integers(0, 1000), extra=st.integers(0, 1000), z=st.floats(0.0, 6.0))
def test_wilson_lower_bound_is_below_the_share(successes: int, extra: int, z: float) -> None:
    n = successes + extra
    bound = wilson_lower_bound(successes, n, z)
    assert 0.0 <= bound <= (successes / n if n else 0.0) + 1e-12
