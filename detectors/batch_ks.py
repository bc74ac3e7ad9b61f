"""Two-sample Kolmogorov-Smirnov test of a recent window against the window before it, per batch."""

from __future__ import annotations

import math
from array import array
from typing import Final

import numpy as np

from detectors._base import _Base, check_param

__all__ = [
    "BatchKS",
    "compare_windows",
    "design_effect",
    "indicator_design_effect",
    "ks_critical_value",
    "ks_statistic",
]

#: Weight of the newest estimate in the running design effect.
_DEFF_WEIGHT: Final = 0.125


def ks_critical_value(alpha: float) -> float:
    """Scaled critical value ``x`` with ``P(sqrt(n*m/(n+m)) * D > x) <= alpha`` asymptotically.

    The first term of Kolmogorov's series, ``2 * exp(-2 x**2)``, is an upper bound of the
    tail for the values of ``alpha`` used here.

    >>> round(ks_critical_value(0.05), 3)
    1.358
    """
    return math.sqrt(-math.log(alpha / 2.0) / 2.0)


def ks_statistic(a_sorted: np.ndarray, b_sorted: np.ndarray) -> float:
    """Largest distance between the empirical distribution functions of two sorted samples.

    The two sorted samples are merged (a stable merge of two sorted runs is linear), each value
    steps one distribution function up, and the distance is read after the last of equal values.

    >>> ks_statistic(np.array([0.0, 0.0, 1.0, 1.0]), np.array([0.0, 1.0, 1.0, 1.0]))
    0.25
    """
    n, m = len(a_sorted), len(b_sorted)
    merged = np.concatenate((a_sorted, b_sorted))
    order = np.argsort(merged, kind="stable")
    steps = np.where(order < n, 1.0 / n, -1.0 / m)
    gaps = np.cumsum(steps)
    values = merged[order]
    last = np.empty(n + m, dtype=bool)
    np.not_equal(values[:-1], values[1:], out=last[:-1])
    last[-1] = True
    return float(np.max(np.abs(gaps[last])))


def indicator_design_effect(indicator: np.ndarray, block: int) -> float:
    """Variance inflation of means of ``block`` consecutive values of a 0/1 indicator.

    ``block`` times the variance of the block means over the variance of single values: 1
    for independent values, up to ``block`` when neighbours are equal (episodes of one
    group). The variance of the block means is estimated from successive differences (von
    Neumann), so a level shift or a slow drift hardly inflates it. Clipped to
    ``[1, block]``; 1 with fewer than three blocks or a constant indicator.

    >>> rng = np.random.default_rng(0)
    >>> round(indicator_design_effect(np.repeat(rng.random(128) < 0.5, 8), 16), 1)
    8.2
    >>> round(indicator_design_effect(rng.random(1024) < 0.5, 16), 1)
    1.0
    """
    n = len(indicator)
    k = n // block
    share = float(np.count_nonzero(indicator)) / n if n else 0.0
    total = share * (1.0 - share)
    if k < 3 or total <= 0.0:
        return 1.0
    sums = indicator[: k * block].reshape(k, block).sum(axis=1)
    steps = (sums[1:] - sums[:-1]) / block  # np.diff's values, without its overhead
    variance = float(steps @ steps) / (2.0 * (k - 1))
    return min(max(variance * block / total, 1.0), float(block))


def design_effect(values: np.ndarray, block: int, ordered: np.ndarray | None = None) -> float:
    """The largest design effect of the indicators "above the quartiles" of ``values``.

    The Kolmogorov-Smirnov process is a set of such indicators; the three quartiles cover
    where it varies most, and mid-distribution cuts are insensitive to heavy tails. A cut at
    a value that holds the top of the distribution uses "at or above" instead. The quartiles
    are taken from ``ordered`` (sorted values; by default ``values`` sorted, but a sorted
    part of them, such as the reference window, will do). See
    :func:`indicator_design_effect`.

    >>> rng = np.random.default_rng(0)
    >>> round(design_effect(np.repeat(rng.standard_normal(128), 8), 16), 1)  # groups of 8
    10.5
    >>> round(design_effect(rng.standard_normal(1024), 16), 1)  # independent
    1.2
    """
    if ordered is None:
        ordered = np.sort(values)
    n = len(ordered)
    largest = 1.0
    for cut in (ordered[n // 4], ordered[n // 2], ordered[(3 * n) // 4]):
        indicator = values > cut
        if not indicator.any():
            indicator = values >= cut
        largest = max(largest, indicator_design_effect(indicator, block))
    return largest


def compare_windows(
    reference: np.ndarray,
    current: np.ndarray,
    block: int,
    running: float,
    ordered: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[float, float, float]:
    """KS distance of two windows, the design effect to use, and the updated running one.

    The design effect is estimated on both windows together (:func:`design_effect`; the
    successive-difference estimate shrugs off a change between them) and averaged into
    ``running`` (0: none yet). The one to use is the larger of the two, inflated by the
    sampling error of the estimate, ``1 + sqrt(2 / (blocks - 1))``, so that a low draw does
    not make the test anticonservative. ``ordered`` holds the two windows sorted when the
    caller has them (by default they are sorted here).
    """
    if ordered is None:
        ref_sorted, cur_sorted = np.sort(reference), np.sort(current)
    else:
        ref_sorted, cur_sorted = ordered
    d = ks_statistic(ref_sorted, cur_sorted)
    both = np.concatenate((reference, current))
    deff = design_effect(both, block, ref_sorted)
    running = deff if running == 0.0 else running + _DEFF_WEIGHT * (deff - running)
    blocks = max(len(both) // block, 3)
    return d, max(deff, running) * (1.0 + math.sqrt(2.0 / (blocks - 1))), running


class BatchKS(_Base):
    """Compares the last ``window`` values with the ``reference`` values before them.

    Values go into a ring buffer of ``reference + window`` floats (allocated as it fills);
    every ``every`` values (once the ring is full) the two-sample Kolmogorov-Smirnov
    distance ``D`` between the older ``reference`` values and the newer ``window`` values is
    computed. The reference slides
    with the stream, so a slow drift (healthy learning) moves both windows together and only
    a change faster than the window span shows up.

    The critical value comes from the budget: a test runs once per ``every`` values, so each
    test may be a false positive with probability ``alpha = every / arl0`` (tests on
    overlapping windows are positively correlated, which makes this conservative), and
    ``D`` must exceed ``ks_critical_value(alpha) * sqrt(deff * (n + m) / (n * m))``.
    ``deff`` is the design effect of the reference window (:func:`design_effect` on blocks of
    ``block`` values): episodes of one group arrive together and are alike, which inflates
    ``D`` on clean data by about ``sqrt(deff)``. The largest of the current estimate and a
    running average of past ones is used. Ties (discrete values) make the asymptotic bound
    conservative.

    After a detection the ring is emptied: both windows refill with post-change values
    before the next test, so one change is detected once. ``active`` holds from a detection
    until a later test does not reject.

    Parameters
    ----------
    window
        Newest values compared with the reference.
    reference
        Values before the window that serve as reference.
    every
        Values between two tests.
    block
        Consecutive values per block in the design effect (at least twice the group size).
    arl0
        False-alarm budget: expected values between false alarms.

    Examples
    --------
    A standard normal stream whose spread doubles at value 5000 (its mean stays 0):

    >>> import random
    >>> from detectors.batch_ks import BatchKS
    >>> rng = random.Random(8)
    >>> stream = [rng.gauss(0.0, 1.0) for _ in range(5000)] + [
    ...     rng.gauss(0.0, 2.0) for _ in range(2000)]
    >>> detector = BatchKS(arl0=100_000)
    >>> for i, x in enumerate(stream):
    ...     detector.update(x)
    ...     if detector.drift_detected:
    ...         print(f"distribution changed at {i}, D = {detector.statistic:.3f}")
    distribution changed at 5375, D = 0.153
    >>> round(detector.threshold, 3)
    0.118

    References
    ----------
    A. N. Kolmogorov, "Sulla determinazione empirica di una legge di distribuzione", Giorn.
    Ist. Ital. Attuari 4 (1933); N. Smirnov, "Table for estimating the goodness of fit of
    empirical distributions", Ann. Math. Statist. 19 (1948).
    L. Kish, *Survey Sampling*, Wiley (1965) (design effect of clustered samples).
    """

    __slots__ = (
        "_active",
        "_crit",
        "_d",
        "_deff",
        "_drift",
        "_left",
        "_pos",
        "_ring",
        "_scale",
        "_size",
        "_tested",
        "_x",
        "arl0",
        "block",
        "every",
        "reference",
        "window",
    )

    def __init__(
        self,
        window: int = 512,
        reference: int = 1024,
        every: int = 256,
        block: int = 32,
        arl0: float = 1_000_000,
    ) -> None:
        check_param(isinstance(window, int) and window >= 16, "window", "an int >= 16", window)
        check_param(
            isinstance(reference, int) and reference >= window,
            "reference",
            f"an int >= window ({window})",
            reference,
        )
        check_param(
            isinstance(every, int) and 1 <= every <= window,
            "every",
            f"an int in [1, window] ([1, {window}])",
            every,
        )
        check_param(
            isinstance(block, int) and 1 <= block <= reference // 4,
            "block",
            f"an int in [1, reference // 4] ([1, {reference // 4}])",
            block,
        )
        check_param(
            arl0 > every and math.isfinite(arl0), "arl0", f"a finite number > every ({every})", arl0
        )
        self.window = window
        self.reference = reference
        self.every = every
        self.block = block
        self.arl0 = arl0
        self._size = window + reference
        self._x = ks_critical_value(every / arl0)
        self._scale = math.sqrt((window + reference) / (window * reference))
        self._reset()

    def _reset(self) -> None:
        self._active = False
        self._restart()

    def _restart(self) -> None:
        """Empty the windows (after a detection); the change stays active."""
        self._ring = array("d")  # grows to ``reference + window`` values, then wraps
        self._pos = 0
        self._left = self._size  # values until the next test: the ring fills first
        self._d = 0.0
        self._deff = 0.0
        self._crit = self._x * self._scale
        self._drift = False
        self._tested = False

    def update(self, x: float) -> None:
        """Feed one value."""
        if self._tested:
            if self._drift:
                self._restart()
            else:
                self._tested = False
        pos = self._pos
        ring = self._ring
        if pos < len(ring):
            ring[pos] = x
        else:
            ring.append(x)
        pos += 1
        self._pos = pos if pos < self._size else 0
        left = self._left - 1
        if left:
            self._left = left
            return
        self._left = self.every
        self._test()

    def _test(self) -> None:
        reference, current = self.windows()
        d, deff, self._deff = compare_windows(reference, current, self.block, self._deff)
        crit = self._x * self._scale * math.sqrt(deff)
        self._d = d
        self._crit = crit
        self._tested = True
        self._drift = self._active = d > crit

    def windows(self) -> tuple[np.ndarray, np.ndarray]:
        """The reference and current windows of the ring, oldest value first (copies).

        Before the ring is full the reference holds what there is.
        """
        ring = np.frombuffer(self._ring, dtype=np.float64)
        pos = self._pos
        values = np.concatenate((ring[pos:], ring[:pos]))
        return values[: self.reference], values[self.reference :]

    @property
    def drift_detected(self) -> bool:
        """True on the update whose test rejected (the next update empties the ring)."""
        return self._drift

    @property
    def active(self) -> bool:
        """From a detection until a later test does not reject."""
        return self._active

    @property
    def tested(self) -> bool:
        """True on an update that ran a test."""
        return self._tested

    @property
    def statistic(self) -> float:
        """``D`` of the latest test (0 before the first)."""
        return self._d

    @property
    def threshold(self) -> float:
        """Critical value of ``D`` of the latest test (with ``deff = 1`` before the first)."""
        return self._crit

    @property
    def design_effect(self) -> float:
        """Running design effect of the reference windows (0 before the first test)."""
        return self._deff
