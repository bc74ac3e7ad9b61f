"""One-sided CUSUM for a rise of a Bernoulli rate, against a self-estimated, tracking baseline."""

from __future__ import annotations

import math
from typing import Final

from detectors._base import _Base, check_param

__all__ = ["BernoulliCUSUM"]

#: The baseline stops learning while the statistic is above this share of the threshold, so
#: the onset of a change does not pull the reference towards itself.
_FREEZE_FRACTION: Final = 0.5
#: Learning steps between refreshes of the log-likelihood-ratio increments.
_REFRESH: Final = 16
#: Standard errors added to the estimated baseline rate before it is tested against.
_BASELINE_Z: Final = 2.0


class BernoulliCUSUM(_Base):
    """Detects a rise of the share of positive observations above its own baseline.

    The baseline rate ``p0`` is the share of positives among the first ``warmup``
    observations; afterwards it keeps tracking the stream with exponential weights (half-life
    ``baseline_halflife`` observations), so a slow drift is absorbed. The test uses ``p0`` =
    the estimate plus two of its standard errors (effective memory of the weights, with the
    dispersion below), so that neither the noise of the estimate nor its lag behind a
    healthy drift reads as a rise. A ``p0`` below ``min_rate`` counts as ``min_rate``
    (changes below that resolution are not chased), and an estimate of ``1 - min_rate`` or
    more leaves nothing to detect: the test pauses until the baseline comes down. The
    alternative ``p1`` has ``odds_ratio`` times the odds of ``p0``. Observations are counted
    in batches of ``batch_size``; a batch with ``k`` positives adds its log-likelihood ratio
    ``(k * log(p1 / p0) + (b - k) * log((1 - p1) / (1 - p0))) / phi`` to
    ``S = max(0, S + llr)``, and a rise is detected when ``S`` exceeds
    ``h = log(arl0 / batch_size)``.

    Calibration by analysis: for a CUSUM of log-likelihood ratios of independent
    observations, the in-control average run length is at least ``exp(h)`` tests (Lorden
    1971), here ``arl0`` observations; the bound is conservative (measured in
    ``docs/detectors.md``). Correlated observations (the episodes of one group) make the
    counts of a batch overdispersed: their variance is ``phi`` times the binomial one, which
    would shrink the false-alarm run length from ``exp(h)`` to about ``exp(h / phi)``.
    Dividing the log-likelihood ratio by ``phi`` (quasi-likelihood) restores it. ``phi`` is
    estimated with the baseline, as the weighted mean of ``(k - b q)**2 / (b q (1 - q))``
    over batches (``q`` is the baseline clipped to ``[min_rate, 1 - min_rate]``), floored
    at 1, and inflated by its sampling error
    (``1 + 2 * sqrt(2 / batches)``, batches capped at the baseline's effective memory); with
    ``batch_size=1`` it is 1. Batches should span a few groups (16 for groups of 8).

    The baseline learns from a batch after it has been tested, and not at all while ``S`` is
    above half the threshold. After a detection the statistic and the baseline restart with
    a new warm-up; ``active`` holds from the detection until the re-learned baseline is back
    at or below the pre-change ``boundary_rate`` (the rate at which ``S`` stops drifting
    upwards).

    Parameters
    ----------
    odds_ratio
        Odds ratio of the rise worth detecting quickly (> 1).
    arl0
        False-alarm budget: expected observations between false alarms.
    warmup
        Observations that estimate the baseline before the first test (and after a detection).
    baseline_halflife
        Half-life, in observations, of the exponentially weighted baseline rate.
    min_rate
        Resolution of the baseline rate, in ``(0, 0.5)``.
    batch_size
        Observations per batch (one test per batch).

    Examples
    --------
    A rate of 20% that rises to 45% at observation 3000:

    >>> import random
    >>> from detectors.bernoulli_cusum import BernoulliCUSUM
    >>> rng = random.Random(4)
    >>> stream = [rng.random() < 0.2 for _ in range(3000)] + [
    ...     rng.random() < 0.45 for _ in range(1000)]
    >>> detector = BernoulliCUSUM(arl0=100_000)
    >>> for i, x in enumerate(stream):
    ...     detector.update(x)
    ...     if detector.drift_detected:
    ...         print(f"rise detected at {i}: {detector.baseline_rate:.2f} -> "
    ...               f"{detector.post_change_rate:.2f}")
    rise detected at 3077: 0.21 -> 0.42
    >>> round(detector.threshold, 2)
    11.51

    References
    ----------
    G. Lorden, "Procedures for reacting to a change in distribution", Ann. Math. Statist. 42
    (1971).
    M. Basseville, I. Nikiforov, *Detection of Abrupt Changes*, Prentice Hall (1993), ch. 2.
    P. McCullagh, J. A. Nelder, *Generalized Linear Models*, 2nd ed. (1989), ch. 4
    (overdispersed binomial data, quasi-likelihood).
    """

    __slots__ = (
        "_alpha",
        "_dispersion",
        "_drift",
        "_every",
        "_filled",
        "_h",
        "_hits",
        "_llr0",
        "_llr1",
        "_n",
        "_n_cap",
        "_p",
        "_ref_boundary",
        "_ref_rate",
        "_run",
        "_s",
        "_since",
        "_warm",
        "arl0",
        "baseline_halflife",
        "batch_size",
        "min_rate",
        "odds_ratio",
        "warmup",
    )

    def __init__(
        self,
        odds_ratio: float = 3.0,
        arl0: float = 1_000_000,
        warmup: int = 500,
        baseline_halflife: float = 5000.0,
        min_rate: float = 0.01,
        batch_size: int = 1,
    ) -> None:
        check_param(
            odds_ratio > 1 and math.isfinite(odds_ratio), "odds_ratio", "a number > 1", odds_ratio
        )
        check_param(
            isinstance(batch_size, int) and batch_size >= 1, "batch_size", "an int >= 1", batch_size
        )
        check_param(
            arl0 > batch_size and math.isfinite(arl0),
            "arl0",
            f"a finite number > batch_size ({batch_size})",
            arl0,
        )
        check_param(
            isinstance(warmup, int) and warmup >= 2 * batch_size,
            "warmup",
            f"an int >= 2 * batch_size ({2 * batch_size})",
            warmup,
        )
        check_param(
            baseline_halflife >= batch_size and math.isfinite(baseline_halflife),
            "baseline_halflife",
            f"a finite number >= batch_size ({batch_size})",
            baseline_halflife,
        )
        check_param(0.0 < min_rate < 0.5, "min_rate", "a number in (0, 0.5)", min_rate)
        self.odds_ratio = odds_ratio
        self.arl0 = arl0
        self.warmup = warmup
        self.baseline_halflife = baseline_halflife
        self.min_rate = min_rate
        self.batch_size = batch_size
        # Everything below is in units of batches (one batch is one observation by default).
        self._h = math.log(arl0 / batch_size)
        self._alpha = -math.expm1(-math.log(2.0) * batch_size / baseline_halflife)
        self._warm = -(-warmup // batch_size)
        self._n_cap = max(self._warm, math.ceil(1.0 / self._alpha)) + 1
        self._every = max(1, _REFRESH // batch_size)
        self._reset()

    def _reset(self) -> None:
        self._ref_rate = 0.0
        self._ref_boundary = -1.0  # negative: no change in progress
        self._restart()

    def _restart(self) -> None:
        """Forget the baseline and the statistic (after a detection), keep the change."""
        self._n = 0
        self._p = 0.0
        self._dispersion = 1.0
        self._s = 0.0
        self._llr1 = 0.0
        self._llr0 = 0.0
        self._run = 0
        self._since = 0
        self._hits = 0
        self._filled = 0
        self._drift = False

    def update(self, x: bool | int) -> None:
        """Feed one observation (truthy is positive)."""
        if self._drift:
            self._restart()
        if x:
            self._hits += 1
        filled = self._filled + 1
        if filled < self.batch_size:
            self._filled = filled
            return
        self._filled = 0
        hits = self._hits
        self._hits = 0
        n = self._n
        if n >= self._warm:
            s = self._s + hits * self._llr1 + (filled - hits) * self._llr0
            if s > 0.0:
                self._run += 1
            else:
                s = 0.0
                self._run = 0
            self._s = s
            if s > self._h:
                self._drift = True
                if self._ref_boundary < 0.0:
                    self._ref_rate = self._p
                    self._ref_boundary = self.boundary_rate
                return
            if s > _FREEZE_FRACTION * self._h:
                return
        self._learn(n, hits)

    def _learn(self, n: int, hits: int) -> None:
        """Exact averages first (weight 1/n), exponential weights later."""
        b = self.batch_size
        p = self._p
        n += 1
        a = 1.0 / n
        if a < self._alpha:
            a = self._alpha
        if b > 1 and n > 1:
            # against the rate the test uses: rarer than min_rate is not overdispersed
            q = min(max(p, self.min_rate), 1.0 - self.min_rate)
            d = hits - b * q
            self._dispersion += a * (d * d / (b * q * (1.0 - q)) - self._dispersion)
        self._p = p + a * (hits / b - p)
        if n <= self._n_cap:
            self._n = n
        if self._ref_boundary >= 0.0 and n >= self._warm and self._p <= self._ref_boundary:
            self._ref_boundary = -1.0
        since = self._since + 1
        if since >= self._every or n == self._warm:
            self._refresh()
        else:
            self._since = since

    def _refresh(self) -> None:
        self._since = 0
        p = self._p
        phi = self.dispersion
        if p >= 1.0 - self.min_rate:  # saturated: no rise left to detect
            self._llr1 = 0.0
            self._llr0 = -1.0
            return
        # The test's baseline is an upper confidence bound of the estimate, so that neither
        # its noise nor its lag behind a healthy drift reads as a rise.
        memory = min(self._n, self._n_cap - 1)
        spread = math.sqrt(max(p, self.min_rate) * (1.0 - p) * phi / (self.batch_size * memory))
        p0 = min(max(p + _BASELINE_Z * spread, self.min_rate), 1.0 - self.min_rate)
        odds = self.odds_ratio * p0 / (1.0 - p0)
        p1 = odds / (1.0 + odds)
        self._llr1 = math.log(p1 / p0) / phi
        self._llr0 = math.log((1.0 - p1) / (1.0 - p0)) / phi

    @property
    def drift_detected(self) -> bool:
        """True on the update that detected a rise (the next update starts over)."""
        return self._drift

    @property
    def statistic(self) -> float:
        """The CUSUM ``S`` of (scaled) log-likelihood ratios."""
        return self._s

    @property
    def threshold(self) -> float:
        """The decision threshold ``h = log(arl0 / batch_size)``."""
        return self._h

    @property
    def baseline_rate(self) -> float:
        """The estimated pre-change rate (before clipping to ``min_rate``)."""
        return self._p

    @property
    def dispersion(self) -> float:
        """``phi``: the overdispersion of batch counts the test allows for (1 for batches of 1)."""
        if self.batch_size == 1:
            return 1.0
        batches = min(self._n, self._n_cap)
        margin = 1.0 + 2.0 * math.sqrt(2.0 / batches) if batches else 1.0
        return max(self._dispersion, 1.0) * margin

    @property
    def boundary_rate(self) -> float:
        """The rate above which ``S`` drifts upwards: the midpoint of the test in log odds."""
        if self._llr1 == self._llr0:
            return 1.0
        return -self._llr0 / (self._llr1 - self._llr0)

    @property
    def active(self) -> bool:
        """From a detection until the re-learned rate is back at the pre-change boundary."""
        return self._ref_boundary >= 0.0

    @property
    def reference_rate(self) -> float:
        """The baseline rate before the latest detection (0 before any)."""
        return self._ref_rate

    @property
    def post_change_rate(self) -> float:
        """Share of positives since ``S`` last left zero; ``baseline_rate`` while ``S`` is zero.

        Recovered from ``S`` and the run length, assuming constant increments over the run.
        """
        run = self._run
        a, c = self._llr1, self._llr0
        if not run or a == c:
            return self._p
        observations = run * self.batch_size
        hits = (self._s - observations * c) / (a - c)
        return min(max(hits / observations, 0.0), 1.0)

    @property
    def warming_up(self) -> bool:
        """True until ``warmup`` observations have estimated the baseline (no test is made)."""
        return self._n < self._warm
