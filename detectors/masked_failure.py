"""``masked_failure``: infrastructure failures reported as a score (silent timeout defaults)."""

from __future__ import annotations

from typing import ClassVar

from detectors._base import _FailureModeDetector
from detectors.alarm import Alarm, Severity
from detectors.invariant import InvariantCounter
from detectors.protocol import EventLike

__all__ = ["MaskedFailure"]


class MaskedFailure(_FailureModeDetector):
    """Pages on the first episode whose reward hides a failure, once per broken span.

    The event contract says a failure is reported as ``reward: null`` with an ``error``; a
    plain score would train the policy on an infrastructure fault. An episode violates the
    contract when

    - ``reward`` is not null while ``error`` is set, or
    - ``reward == 0`` and the scoring ran into its timeout
      (``timings.score_s >= timings.score_timeout_s``, both present).

    Violations are counted by :class:`~detectors.invariant.InvariantCounter`: the first one
    after ``quiet`` clean episodes raises the alarm, and ``active`` holds until ``quiet`` clean
    episodes have passed since the last one. There is no false-alarm budget: a clean harness
    never violates the contract.

    Parameters
    ----------
    quiet
        Consecutive clean episodes that end a span of violations.

    Examples
    --------
    From episode 300 on, every fifth episode has its scoring time out and reported as 0:

    >>> from types import SimpleNamespace
    >>> from detectors.masked_failure import MaskedFailure
    >>> def episode(i):
    ...     if i >= 300 and i % 5 == 0:
    ...         timings = SimpleNamespace(score_s=30.0, score_timeout_s=30.0)
    ...         return SimpleNamespace(reward=0.0, error=None, timings=timings)
    ...     timings = SimpleNamespace(score_s=0.4, score_timeout_s=30.0)
    ...     return SimpleNamespace(reward=1.0, error=None, timings=timings)
    >>> detector = MaskedFailure()
    >>> for i in range(1000):
    ...     detector.update(episode(i))
    ...     if detector.alarm:
    ...         print(i, detector.alarm.summary)
    300 reward 0 at the scoring timeout (score_s 30 >= score_timeout_s 30)
    >>> detector.statistic, detector.active
    (140.0, True)
    """

    __slots__ = ("_counter", "quiet")

    detector_id: ClassVar[str] = "masked_failure"
    severity: ClassVar[Severity] = "page"
    fixed_threshold: ClassVar[bool] = True  # always 0
    budgeted: ClassVar[bool] = False

    def __init__(self, quiet: int = 1000) -> None:
        self.quiet = quiet
        self._reset()

    def _reset(self) -> None:
        self._counter = InvariantCounter(quiet=self.quiet)
        self._alarm = None

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        reward = event.reward
        violated = False
        if reward is not None:
            if event.error is not None:
                violated = True
            elif reward == 0:
                timings = event.timings
                if timings is not None:
                    score_s = timings.score_s
                    timeout = timings.score_timeout_s
                    violated = score_s is not None and timeout is not None and score_s >= timeout
        counter = self._counter
        counter.update(violated)
        if counter._drift:  # the slot, not the property: this is the per-event path
            self._alarm = Alarm(
                detector=self.detector_id,
                severity=self.severity,
                value=1.0,
                threshold=0.0,
                summary=_describe(event),
            )

    @property
    def counter(self) -> InvariantCounter:
        """The underlying violation counter (``violations`` is the total)."""
        return self._counter

    @property
    def active(self) -> bool:
        return self._counter.active

    @property
    def statistic(self) -> float:
        """Violations in the current span (0 once ``quiet`` clean episodes have passed)."""
        return float(self._counter.span_violations)

    @property
    def threshold(self) -> float:
        """0: any violation breaks the contract."""
        return 0.0


def _describe(event: EventLike) -> str:
    error = event.error
    if error is not None:
        return (
            f"reward {event.reward:g} reported with an error "
            f"(type={error.type}, where={error.where})"
        )
    timings = event.timings
    if timings is None:
        return "reward 0 at the scoring timeout"
    return (
        f"reward 0 at the scoring timeout "
        f"(score_s {timings.score_s:g} >= score_timeout_s {timings.score_timeout_s:g})"
    )
