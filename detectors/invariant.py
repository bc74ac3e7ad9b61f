"""Counter of violations of an invariant that must hold on every clean observation."""

from __future__ import annotations

from detectors._base import _Base, check_param

__all__ = ["InvariantCounter"]


class InvariantCounter(_Base):
    """Counts violations of an exact invariant; one detection per broken span.

    The expected number of violations is zero, so there is no false-alarm budget: the first
    violation is a detection. Later violations are counted, and detected again only after
    ``quiet`` consecutive clean observations, so a span of breakage gives one detection.

    Parameters
    ----------
    quiet
        Consecutive clean observations that end a span of violations.

    Examples
    --------
    Clean observations, then every tenth one violates the invariant from index 500 on:

    >>> from detectors.invariant import InvariantCounter
    >>> stream = [i >= 500 and i % 10 == 0 for i in range(2000)]
    >>> detector = InvariantCounter(quiet=1000)
    >>> for i, violated in enumerate(stream):
    ...     detector.update(violated)
    ...     if detector.drift_detected:
    ...         print(f"invariant broken at {i}")
    invariant broken at 500
    >>> detector.violations, detector.active
    (150, True)
    """

    __slots__ = ("_clean", "_drift", "_span", "_violations", "quiet")

    def __init__(self, quiet: int = 1000) -> None:
        check_param(isinstance(quiet, int) and quiet >= 1, "quiet", "an int >= 1", quiet)
        self.quiet = quiet
        self._reset()

    def _reset(self) -> None:
        self._violations = 0
        self._span = 0
        # The start of the stream counts as a quiet period, so the first violation detects.
        self._clean = self.quiet
        self._drift = False

    def update(self, x: bool | int) -> None:
        """Feed one observation (truthy means the invariant was violated)."""
        if not x:
            self._drift = False
            if self._clean < self.quiet:
                self._clean += 1
            return
        self._violations += 1
        if self._clean >= self.quiet:
            self._drift = True
            self._span = 1
        else:
            self._drift = False
            self._span += 1
        self._clean = 0

    @property
    def drift_detected(self) -> bool:
        """True on the first violation after a quiet period."""
        return self._drift

    @property
    def active(self) -> bool:
        """Whether a violation occurred within the last ``quiet`` observations."""
        return self._clean < self.quiet

    @property
    def violations(self) -> int:
        """Total violations seen."""
        return self._violations

    @property
    def span_violations(self) -> int:
        """Violations in the current span while ``active``, else 0."""
        return self._span if self._clean < self.quiet else 0
