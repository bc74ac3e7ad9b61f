"""``error_rate``: the share of failed episodes (a janky harness) above a bound."""

from __future__ import annotations

from typing import ClassVar

from detectors._base import _RateDetector, percent
from detectors.alarm import Alarm, Severity
from detectors.protocol import EventLike
from detectors.rate_bound import RateBound

__all__ = ["ERROR_WHERE", "ErrorRate"]

#: The values of ``error.where`` in the event schema; anything else counts as ``unknown``.
ERROR_WHERE = ("env", "harness", "sandbox", "verifier", "judge", "tool", "provider", "unknown")
_UNKNOWN = ERROR_WHERE.index("unknown") + 1
# The rate window keeps a label per episode: 0 is clean, a failure is 1 + its ERROR_WHERE index.
_WHERE_CODE = {where: i + 1 for i, where in enumerate(ERROR_WHERE)}


class ErrorRate(_RateDetector):
    """Pages when the failure share of a segment is confidently above ``threshold``.

    An episode is a failure when ``status == "failed"`` or an ``error`` is attached. The share
    over the last ``window`` episodes is tested by :class:`~detectors.rate_bound.RateBound`:
    the alarm is raised when the Wilson lower bound of the share rises above ``threshold``
    (5%: above that, a failure rate is a harness problem, not a model problem) and stays
    ``active`` while it remains above. The failures in the window are also counted per
    ``error.where`` (a failed episode without an error object counts as ``unknown``), and the
    alarm summary names the dominant one.

    Parameters
    ----------
    threshold
        Failure share that must be exceeded with confidence.
    window
        Episodes the share is computed over.
    min_samples
        Episodes needed before the first test.
    arl0
        False-alarm budget (confidence of the bound), see :class:`RateBound`.

    Examples
    --------
    1% of episodes fail in the verifier, then 30% from episode 2000 on:

    >>> import random
    >>> from types import SimpleNamespace
    >>> from detectors.error_rate import ErrorRate
    >>> rng = random.Random(3)
    >>> def episode(p_fail):
    ...     if rng.random() < p_fail:
    ...         error = SimpleNamespace(type="Timeout", where="verifier")
    ...         return SimpleNamespace(status="failed", error=error)
    ...     return SimpleNamespace(status="completed", error=None)
    >>> stream = [episode(0.01) for _ in range(2000)] + [episode(0.30) for _ in range(1000)]
    >>> detector = ErrorRate()
    >>> for i, event in enumerate(stream):
    ...     detector.update(event)
    ...     if detector.alarm:
    ...         print(i, detector.alarm.severity, detector.alarm.summary)
    ... # doctest: +NORMALIZE_WHITESPACE
    2157 page failure share 9.8% (lower bound 5.1%) over 500 episodes;
    mostly where=verifier (100%)
    """

    __slots__ = (
        "_rate",
        "_threshold",
        "arl0",
        "min_samples",
        "window",
    )

    detector_id: ClassVar[str] = "error_rate"
    severity: ClassVar[Severity] = "page"
    fixed_threshold: ClassVar[bool] = True  # the constructor argument

    def __init__(
        self,
        threshold: float = 0.05,
        window: int = 500,
        min_samples: int = 50,
        arl0: float = 1_000_000,
    ) -> None:
        self._threshold = threshold
        self.window = window
        self.min_samples = min_samples
        self.arl0 = arl0
        self._reset()

    def _reset(self) -> None:
        self._rate = RateBound(
            threshold=self.threshold,
            window=self.window,
            min_samples=self.min_samples,
            arl0=self.arl0,
        )
        self._alarm = None

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        error = event.error
        code = 0
        if error is not None:
            code = _WHERE_CODE.get(error.where, _UNKNOWN)
        elif event.status == "failed":
            code = _UNKNOWN
        rate = self._rate
        rate.update(code)
        if rate._drift:  # the slot, not the property: this is the per-event path
            self._alarm = Alarm(
                detector=self.detector_id,
                severity=self.severity,
                value=rate.statistic,
                threshold=self.threshold,
                summary=self._summary(),
                direction="up",
            )

    def _summary(self) -> str:
        rate = self._rate
        text = (
            f"failure share {percent(rate.rate)} (lower bound {percent(rate.statistic)}) "
            f"over {rate.n} episodes"
        )
        counts = self.where_counts
        failures = sum(counts.values())
        if failures:
            top = max(counts, key=counts.__getitem__)
            text += f"; mostly where={top} ({counts[top] / failures:.0%})"
        return text

    @property
    def where_counts(self) -> dict[str, int]:
        """Failures in the window per ``error.where``."""
        labels = self._rate.label_counts()
        return {where: labels.get(i + 1, 0) for i, where in enumerate(ERROR_WHERE)}
