"""``tool_failure_rate``: tool calls fail to parse or execute too often, or more often."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import ClassVar

from detectors._base import _FailureModeDetector, check_param, percent
from detectors.alarm import Alarm, Severity
from detectors.bernoulli_cusum import BernoulliCUSUM
from detectors.protocol import EventLike

__all__ = ["ToolFailureRate"]


class ToolFailureRate(_FailureModeDetector):
    """Warns when the share of failed tool calls is high, or jumps against its baseline.

    Episodes with ``num_tool_calls > 0`` count (``num_tool_errors`` is capped at the calls).

    - **Level**: the failure ratio ``sum(errors) / sum(calls)`` over the last ``window``
      such episodes, with a lower confidence bound against ``threshold``. The calls of one
      episode fail together more often than independent trials would (a broken tool fails
      every call), so the bound uses the episode as the unit: the ratio estimator's
      linearised variance ``sum((e_i - p c_i)**2) / sum(c_i)**2 * n / (n - 1)`` and
      ``z = Φ⁻¹(1 - 1/arl0)``. All sums are running integer sums over a ring, O(1) per
      episode. Edge-triggered like :class:`~detectors.rate_bound.RateBound`: one alarm per
      crossing, re-armed once the ratio is back at the threshold.
    - **Change**: the share of episodes with at least one failed call, against its own
      baseline (:class:`~detectors.bernoulli_cusum.BernoulliCUSUM`); a tool server that
      starts failing shows up here before the ratio reaches ``threshold``.

    The two tests share the budget; one change gives one warning, from whichever test sees it
    first. ``statistic`` and ``threshold`` are the lower bound of the ratio and
    ``threshold``; ``active`` holds while the bound is above it or a detected jump persists.

    Parameters
    ----------
    threshold
        Failure ratio of tool calls that must be exceeded with confidence.
    window
        Episodes with tool calls the ratio is computed over.
    min_samples
        Such episodes needed before the first test of the ratio.
    odds_ratio
        Odds ratio of the jump the change test is tuned to.
    warmup
        Episodes that estimate the baseline of the change test.
    baseline_halflife
        Half-life, in episodes, of that baseline.
    batch_size
        Episodes per batch of the change test (allows for correlated episodes of a group).
    arl0
        False-alarm budget: expected episodes with tool calls between false alarms.

    Examples
    --------
    Episodes with 1-6 tool calls, each failing with probability 3%; from episode 3000 on a
    tool server refuses every call of 30% of the episodes:

    >>> import random
    >>> from types import SimpleNamespace
    >>> from detectors.tool_failure_rate import ToolFailureRate
    >>> rng = random.Random(16)
    >>> def episode(i):
    ...     calls = rng.randint(1, 6)
    ...     if i >= 3000 and rng.random() < 0.3:
    ...         return SimpleNamespace(num_tool_calls=calls, num_tool_errors=calls)
    ...     errors = sum(rng.random() < 0.03 for _ in range(calls))
    ...     return SimpleNamespace(num_tool_calls=calls, num_tool_errors=errors)
    >>> detector = ToolFailureRate()
    >>> for i in range(5000):
    ...     detector.update(episode(i))
    ...     if detector.alarm:
    ...         print(i, detector.alarm.summary)
    ... # doctest: +NORMALIZE_WHITESPACE
    3087 share of episodes with a failed tool call rose from 10% to about 37%
    >>> round(detector.ratio, 2), round(detector.statistic, 2), detector.active
    (0.36, 0.24, True)
    """

    __slots__ = (
        "_armed",
        "_calls",
        "_errors",
        "_jump",
        "_n",
        "_pos",
        "_sum_c",
        "_sum_cc",
        "_sum_e",
        "_sum_ec",
        "_sum_ee",
        "_threshold",
        "_z",
        "arl0",
        "baseline_halflife",
        "batch_size",
        "min_samples",
        "odds_ratio",
        "warmup",
        "window",
    )

    detector_id: ClassVar[str] = "tool_failure_rate"
    requires: ClassVar[str | None] = "num_tool_calls"  # update returns at once without it
    severity: ClassVar[Severity] = "warning"
    fixed_threshold: ClassVar[bool] = True  # the constructor argument

    def __init__(
        self,
        threshold: float = 0.2,
        window: int = 500,
        min_samples: int = 100,
        odds_ratio: float = 3.0,
        warmup: int = 500,
        baseline_halflife: float = 5000.0,
        batch_size: int = 16,
        arl0: float = 1_000_000,
    ) -> None:
        check_param(0.0 < threshold < 1.0, "threshold", "a number in (0, 1)", threshold)
        check_param(isinstance(window, int) and window >= 2, "window", "an int >= 2", window)
        check_param(
            isinstance(min_samples, int) and 2 <= min_samples <= window,
            "min_samples",
            f"an int in [2, window] ([2, {window}])",
            min_samples,
        )
        check_param(arl0 > 2 and math.isfinite(arl0), "arl0", "a finite number > 2", arl0)
        self._threshold = threshold
        self.window = window
        self.min_samples = min_samples
        self.odds_ratio = odds_ratio
        self.warmup = warmup
        self.baseline_halflife = baseline_halflife
        self.batch_size = batch_size
        self.arl0 = arl0
        self._z = NormalDist().inv_cdf(1.0 - 1.0 / (2.0 * arl0))
        self._reset()

    def _reset(self) -> None:
        self._jump = BernoulliCUSUM(
            odds_ratio=self.odds_ratio,
            arl0=2.0 * self.arl0,
            warmup=self.warmup,
            baseline_halflife=self.baseline_halflife,
            batch_size=self.batch_size,
        )
        self._calls: list[int] = []  # rings of the last `window` episodes, grown as they come
        self._errors: list[int] = []
        self._pos = 0
        self._n = 0
        self._sum_c = self._sum_e = self._sum_cc = self._sum_ee = self._sum_ec = 0
        self._armed = True
        self._alarm = None

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        calls = event.num_tool_calls
        if not calls:
            return
        errors = event.num_tool_errors or 0
        if errors > calls:
            errors = calls
        jump = self._jump
        changing = not self._armed or jump.active  # one warning per change, from either test
        jump.update(errors)
        self._add(calls, errors, changing)
        if jump._drift and self._alarm is None and not changing:  # the slot: per-event path
            self._alarm = Alarm(
                detector=self.detector_id,
                severity=self.severity,
                value=jump.statistic,
                threshold=jump.threshold,
                summary=(
                    f"share of episodes with a failed tool call rose from "
                    f"{percent(jump.baseline_rate)} to about {percent(jump.post_change_rate)}"
                ),
                direction="up",
            )

    def _add(self, calls: int, errors: int, changing: bool) -> None:
        pos = self._pos
        n = self._n
        if n < self.window:
            self._calls.append(calls)
            self._errors.append(errors)
            old_c = old_e = 0
            self._n = n = n + 1
        else:
            old_c = self._calls[pos]
            old_e = self._errors[pos]
            self._calls[pos] = calls
            self._errors[pos] = errors
        pos += 1
        self._pos = 0 if pos == self.window else pos
        c = self._sum_c = self._sum_c + calls - old_c
        e = self._sum_e = self._sum_e + errors - old_e
        self._sum_cc += calls * calls - old_c * old_c
        self._sum_ee += errors * errors - old_e * old_e
        self._sum_ec += errors * calls - old_e * old_c
        if n < self.min_samples:
            return
        threshold = self._threshold
        if e <= threshold * c:  # the ratio itself is at or below: so is its lower bound
            if not self._armed:
                self._armed = True
            return
        lower = self._bound()
        if lower > threshold and self._armed:
            self._armed = False
            if changing:
                return
            self._alarm = Alarm(
                detector=self.detector_id,
                severity=self.severity,
                value=lower,
                threshold=threshold,
                summary=(
                    f"tool-call failure ratio {percent(e / c)} (lower bound {percent(lower)}) "
                    f"over {c} calls of the last {n} episodes"
                ),
                direction="up",
            )

    def _bound(self) -> float:
        """Lower confidence bound of the ratio over the window (0 before ``min_samples``)."""
        n, c = self._n, self._sum_c
        if n < self.min_samples or not c:
            return 0.0
        p = self._sum_e / c
        residual = self._sum_ee - 2.0 * p * self._sum_ec + p * p * self._sum_cc
        spread = math.sqrt(max(residual, 0.0) * n / (n - 1)) / c
        return max(p - self._z * spread, 0.0)

    @property
    def ratio(self) -> float:
        """Failed over all tool calls in the window."""
        return self._sum_e / self._sum_c if self._sum_c else 0.0

    @property
    def jump(self) -> BernoulliCUSUM:
        """The change test of the share of episodes with a failed call."""
        return self._jump

    @property
    def threshold(self) -> float:
        """Ratio above which the lower bound alarms (the constructor argument)."""
        return self._threshold

    @property
    def active(self) -> bool:
        return self._bound() > self._threshold or self._jump.active

    @property
    def statistic(self) -> float:
        """The lower confidence bound of the failure ratio."""
        return self._bound()
