"""Bernoulli rate over a sliding window with a Wilson score lower bound."""

from __future__ import annotations

import functools
import math
from collections import Counter
from statistics import NormalDist
from typing import Final

from detectors._base import _Base, check_param

__all__ = ["RateBound", "wilson_lower_bound"]

#: ``RateBound._lower`` when the bound is known to be at most the threshold and has not been
#: computed since the last update (a bound is never negative).
_STALE: Final = -1.0


def wilson_lower_bound(successes: int, n: int, z: float) -> float:
    """Lower end of the Wilson score interval for ``successes`` out of ``n`` trials.

    >>> round(wilson_lower_bound(30, 100, 1.96), 4)
    0.2189
    >>> wilson_lower_bound(0, 100, 1.96)
    0.0
    """
    if n <= 0:
        return 0.0
    p = successes / n
    z2n = z * z / n
    centre = p + z2n / 2.0
    spread = z * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    return max((centre - spread) / (1.0 + z2n), 0.0)


@functools.lru_cache(maxsize=4096)
def _stale_bound(successes: int, n: int, z: float) -> float:
    """:func:`wilson_lower_bound`, remembered for :attr:`RateBound.statistic` while
    ``_lower`` is ``_STALE``: a healthy window repeats a few counts (full, with a low count),
    and the exporter reads the statistic of every segment on each scrape.

    >>> _stale_bound(3, 500, 4.0) == wilson_lower_bound(3, 500, 4.0)
    True
    """
    return wilson_lower_bound(successes, n, z)


class RateBound(_Base):
    """Share of positive observations over the last ``window``, tested against a threshold.

    A ring buffer of the last ``window`` observations and a running count give the share in
    O(1) per update and bounded memory. An observation is a bool, or an int label in
    ``[0, 255]`` (0 is negative): labels stay in the ring, so the positives of the window can
    be broken down by label on demand (:meth:`label_counts`).

    Once ``min_samples`` observations are in the window, the lower end of the Wilson score
    interval with ``z = Φ⁻¹(1 - 1/arl0)`` is compared with ``threshold``: a detection is the
    update on which it rises above ``threshold`` (edge triggered, so one detection per
    crossing), and ``active`` holds while it stays above. After a detection the test re-arms
    only once the window share itself is back at or below ``threshold``, so a bound that
    hovers around the threshold during one change does not detect it again.

    Calibration: when the true rate equals ``threshold``, each test is a false positive with
    probability about ``1/arl0``. Consecutive tests share all but one observation of their
    window, so false crossings are much rarer than one per ``arl0`` observations, and rarer
    still when the true rate is below the threshold: the budget is conservative.

    Parameters
    ----------
    threshold
        Rate above which the lower bound signals a problem, in ``(0, 1)``.
    window
        Number of most recent observations the rate is computed over.
    min_samples
        Observations needed in the window before any test.
    arl0
        False-alarm budget that sets the confidence of the bound.

    Examples
    --------
    Failures at 1% for 2000 observations, then at 30%:

    >>> import random
    >>> from detectors.rate_bound import RateBound
    >>> rng = random.Random(7)
    >>> stream = [rng.random() < 0.01 for _ in range(2000)] + [
    ...     rng.random() < 0.30 for _ in range(2000)]
    >>> detector = RateBound(threshold=0.05, window=500, min_samples=50)
    >>> for i, failed in enumerate(stream):
    ...     detector.update(failed)
    ...     if detector.drift_detected:
    ...         print(f"rate above 5% detected at {i}")
    rate above 5% detected at 2196
    >>> detector.active, round(detector.rate, 2)
    (True, 0.29)

    References
    ----------
    E. B. Wilson, "Probable inference, the law of succession, and statistical inference",
    JASA 22 (1927).
    """

    __slots__ = (
        "_armed",
        "_count",
        "_drift",
        "_lower",
        "_n",
        "_pos",
        "_ring",
        "_z",
        "arl0",
        "min_samples",
        "threshold",
        "window",
    )

    def __init__(
        self,
        threshold: float = 0.05,
        window: int = 500,
        min_samples: int = 50,
        arl0: float = 1_000_000,
    ) -> None:
        check_param(0.0 < threshold < 1.0, "threshold", "a number in (0, 1)", threshold)
        check_param(isinstance(window, int) and window >= 1, "window", "an int >= 1", window)
        check_param(
            isinstance(min_samples, int) and 1 <= min_samples <= window,
            "min_samples",
            f"an int in [1, window] ([1, {window}])",
            min_samples,
        )
        check_param(arl0 > 1 and math.isfinite(arl0), "arl0", "a finite number > 1", arl0)
        self.threshold = threshold
        self.window = window
        self.min_samples = min_samples
        self.arl0 = arl0
        self._z = NormalDist().inv_cdf(1.0 - 1.0 / arl0)
        self._reset()

    def _reset(self) -> None:
        self._ring = bytearray(self.window)
        self._pos = 0
        self._n = 0
        self._count = 0
        self._lower = 0.0
        self._armed = True
        self._drift = False

    def update(self, x: bool | int) -> None:
        """Feed one observation: a bool, or an int label in ``[0, 255]`` (non-zero is positive)."""
        self._drift = False
        ring = self._ring
        pos = self._pos
        old = ring[pos]
        ring[pos] = x
        window = self.window
        pos += 1
        self._pos = 0 if pos == window else pos
        n = self._n
        if n < window:
            n += 1
            self._n = n
            count = self._count + (1 if x else 0) - (1 if old else 0)
        # A full window (the common case) that swapped an observation for an equal one (as
        # positives) changes nothing else: tested first, without computing the bits.
        elif x:
            if old:
                return
            count = self._count + 1
        elif old:
            count = self._count - 1
        else:
            return
        self._count = count
        if n < self.min_samples:
            return
        threshold = self.threshold
        if count <= threshold * n:
            # The Wilson interval contains the share, so the bound is at most the threshold:
            # no detection, and the bound is computed only when it is read (_STALE).
            self._lower = _STALE
            if not self._armed:
                self._armed = True
            return
        lower = wilson_lower_bound(count, n, self._z)
        self._lower = lower
        if lower > threshold and self._armed:
            self._armed = False
            self._drift = True

    def label_counts(self) -> dict[int, int]:
        """Positive observations in the window by label (``True`` is label 1); O(window)."""
        return {label: n for label, n in Counter(self._ring).items() if label}

    @property
    def drift_detected(self) -> bool:
        """True on the update on which the lower bound rose above ``threshold``."""
        return self._drift

    @property
    def active(self) -> bool:
        """Whether the lower bound is above ``threshold``."""
        return self.statistic > self.threshold

    @property
    def statistic(self) -> float:
        """The Wilson lower bound of the rate (0 before ``min_samples`` observations)."""
        lower = self._lower
        if lower == _STALE:  # computed, not stored: the exporter reads from another thread
            return _stale_bound(self._count, self._n, self._z)
        return lower

    @property
    def rate(self) -> float:
        """Share of positive observations in the window."""
        return self._count / self._n if self._n else 0.0

    @property
    def count(self) -> int:
        """Positive observations in the window."""
        return self._count

    @property
    def n(self) -> int:
        """Observations in the window (at most ``window``)."""
        return self._n

    @property
    def z(self) -> float:
        """The normal quantile derived from ``arl0``."""
        return self._z
