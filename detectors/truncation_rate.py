"""``truncation_rate``: episodes cut at the token or turn limit."""

from __future__ import annotations

from typing import ClassVar

from detectors._base import _RateDetector, check_param, percent
from detectors.alarm import Alarm, Severity
from detectors.protocol import EventLike
from detectors.rate_bound import RateBound

__all__ = ["TruncationRate"]

_TRUNCATING_STOPS = frozenset(("length", "max_turns"))


class TruncationRate(_RateDetector):
    """Warns when the truncated share is confidently above ``threshold``; pages above half.

    An episode is truncated when ``status == "truncated"``, ``stop_reason`` is ``length`` or
    ``max_turns``, ``completion_tokens >= max_completion_tokens`` or
    ``num_turns >= max_turns`` (limits taken from the event when present): derived from each
    episode, never from a trainer aggregate. The share over the last ``window`` episodes is
    tested by :class:`~detectors.rate_bound.RateBound`. A ``warning`` alarm is raised when its
    Wilson lower bound rises above ``threshold``; while that holds, a second alarm with
    severity ``page`` is raised when the lower bound reaches ``page_threshold`` (or the first
    alarm is already a page when both happen at once). ``active`` holds while the lower bound
    stays above ``threshold``; a new span may page again.

    Parameters
    ----------
    threshold
        Truncated share that must be exceeded with confidence for a warning.
    page_threshold
        Lower bound of the truncated share from which the alarm is a page.
    window
        Episodes the share is computed over.
    min_samples
        Episodes needed before the first test.
    arl0
        False-alarm budget (confidence of the bound), see :class:`RateBound`.

    Examples
    --------
    5% of episodes hit the token limit, then 70% from episode 1000 on:

    >>> import random
    >>> from types import SimpleNamespace
    >>> from detectors.truncation_rate import TruncationRate
    >>> rng = random.Random(2)
    >>> def episode(p):
    ...     cut = rng.random() < p
    ...     return SimpleNamespace(status="truncated" if cut else "completed",
    ...                            stop_reason="length" if cut else "stop",
    ...                            completion_tokens=4096 if cut else 900,
    ...                            max_completion_tokens=4096, num_turns=1, max_turns=None)
    >>> stream = [episode(0.05) for _ in range(1000)] + [episode(0.70) for _ in range(1000)]
    >>> detector = TruncationRate()
    >>> for i, event in enumerate(stream):
    ...     detector.update(event)
    ...     if detector.alarm:
    ...         print(i, detector.alarm.severity, detector.alarm.summary)
    ... # doctest: +NORMALIZE_WHITESPACE
    1184 warning truncated share 29% (lower bound 20%) over 500 episodes
    1435 page truncated share 61% (lower bound 50%) over 500 episodes;
    lower bound at or above 50%
    """

    __slots__ = ("_paged", "_rate", "_threshold", "arl0", "min_samples", "page_threshold", "window")

    detector_id: ClassVar[str] = "truncation_rate"
    severity: ClassVar[Severity] = "warning"
    fixed_threshold: ClassVar[bool] = True  # the constructor argument

    def __init__(
        self,
        threshold: float = 0.2,
        page_threshold: float = 0.5,
        window: int = 500,
        min_samples: int = 50,
        arl0: float = 1_000_000,
    ) -> None:
        check_param(0.0 < threshold < 1.0, "threshold", "a number in (0, 1)", threshold)
        check_param(
            threshold < page_threshold < 1.0,
            "page_threshold",
            f"a number in (threshold, 1) (({threshold}, 1))",
            page_threshold,
        )
        self._threshold = threshold
        self.page_threshold = page_threshold
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
        self._paged = False
        self._alarm = None

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        truncated = event.status == "truncated" or event.stop_reason in _TRUNCATING_STOPS
        if not truncated:
            tokens = event.completion_tokens
            limit = event.max_completion_tokens
            if tokens is not None and limit and tokens >= limit:
                truncated = True
            else:
                turns = event.num_turns
                max_turns = event.max_turns
                truncated = bool(turns and max_turns and turns >= max_turns)
        rate = self._rate
        rate.update(truncated)
        # The slots, not the properties: this is the per-event path.
        if rate._drift:
            self._paged = False
            self._alarm = self._raise(self.severity)
        if not self._paged and rate._lower >= self.page_threshold:  # _STALE (< 0) when low
            self._paged = True
            self._alarm = self._raise("page")

    def _raise(self, severity: Severity) -> Alarm:
        rate = self._rate
        summary = (
            f"truncated share {percent(rate.rate)} (lower bound {percent(rate.statistic)}) "
            f"over {rate.n} episodes"
        )
        if severity == "page":
            summary += f"; lower bound at or above {percent(self.page_threshold)}"
        return Alarm(
            detector=self.detector_id,
            severity=severity,
            value=rate.statistic,
            threshold=self.threshold if severity != "page" else self.page_threshold,
            summary=summary,
            direction="up",
        )
