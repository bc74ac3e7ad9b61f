"""One-sided CUSUM for a rise of a Bernoulli rate, against a self-estimated, tracking baseline."""

from __future__ import annotations

import math

from detectors._base import _Base, check_param

__all__ = ["BernoulliCUSUM"]

#: The baseline stops learning while the statistic is above this share of the threshold, so
#: the onset of a change does not pull the reference towards itself.
_FREEZE_FRACTION = 0.5
#: Learning steps between refreshes of the log-likelihood-ratio increments.
_REFRESH = 16


class BernoulliCUSUM(_Base):
    """Detects a rise of the share of positive observations above its own baseline.

    The baseline rate ``p0`` is the share of positives among the first ``warmup``
    observations; afterwards it keeps tracking the stream with exponential weights (half-life
    ``baseline_halflife`` observations), so a slow drift is absorbed. A baseline below
    ``min_rate`` counts as ``min_rate`` (changes below that resolution are not chased), and
    a baseline of ``1 - min_rate`` or more leaves nothing to detect: the test pauses until
    the baseline comes down. The alternative ``p1`` has
    ``odds_ratio`` times the odds of ``p0``. Each observation adds its log-likelihood ratio,
    ``log(p1 / p0)`` for a positive and ``log((1 - p1) / (1 - p0))`` for a negative, to
    ``S = max(0, S + llr)``; a change is detected when ``S`` exceeds ``h = log(arl0)``.

    Calibration by analysis: for a CUSUM of log-likelihood ratios, the in-control average run
    length is at least ``exp(h)`` (Lorden 1971), so ``h = log(arl0)`` keeps the false-alarm
    rate below ``1 / arl0`` when observations are independent with rate ``p0``; the bound is
    conservative (measured in ``docs/detectors.md``). The baseline learns from an observation
    after it has been tested, and not at all while ``S`` is above half the threshold. After a
    detection the statistic and the baseline restart with a new warm-up; ``active`` holds
    from the detection until the re-learned baseline is back at or below the pre-change
    ``boundary_rate`` (the rate at which ``S`` stops drifting upwards).

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
    rise detected at 3069: 0.20 -> 0.41
    >>> round(detector.threshold, 2)
    11.51

    References
    ----------
    G. Lorden, "Procedures for reacting to a change in distribution", Ann. Math. Statist. 42
    (1971).
    M. Basseville, I. Nikiforov, *Detection of Abrupt Changes*, Prentice Hall (1993), ch. 2.
    """

    __slots__ = (
        "_alpha",
        "_drift",
        "_h",
        "_llr0",
        "_llr1",
        "_n",
        "_n_cap",
        "_p",
        "_ref_boundary",
        "_ref_rate",
        "_run_n",
        "_run_pos",
        "_s",
        "_since",
        "arl0",
        "baseline_halflife",
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
    ) -> None:
        check_param(
            odds_ratio > 1 and math.isfinite(odds_ratio), "odds_ratio", "a number > 1", odds_ratio
        )
        check_param(arl0 > 1 and math.isfinite(arl0), "arl0", "a finite number > 1", arl0)
        check_param(isinstance(warmup, int) and warmup >= 1, "warmup", "an int >= 1", warmup)
        check_param(
            baseline_halflife >= 1 and math.isfinite(baseline_halflife),
            "baseline_halflife",
            "a finite number >= 1",
            baseline_halflife,
        )
        check_param(0.0 < min_rate < 0.5, "min_rate", "a number in (0, 0.5)", min_rate)
        self.odds_ratio = odds_ratio
        self.arl0 = arl0
        self.warmup = warmup
        self.baseline_halflife = baseline_halflife
        self.min_rate = min_rate
        self._h = math.log(arl0)
        self._alpha = -math.expm1(-math.log(2.0) / baseline_halflife)
        self._n_cap = max(warmup, math.ceil(1.0 / self._alpha)) + 1
        self._reset()

    def _reset(self) -> None:
        self._ref_rate = 0.0
        self._ref_boundary = -1.0  # negative: no change in progress
        self._restart()

    def _restart(self) -> None:
        """Forget the baseline and the statistic (after a detection), keep the change."""
        self._n = 0
        self._p = 0.0
        self._s = 0.0
        self._llr1 = 0.0
        self._llr0 = 0.0
        self._run_n = 0
        self._run_pos = 0
        self._since = 0
        self._drift = False

    def update(self, x: bool | int) -> None:
        """Feed one observation (truthy is positive)."""
        if self._drift:
            self._restart()
        bit = 1 if x else 0
        n = self._n
        if n >= self.warmup:
            s = self._s + (self._llr1 if bit else self._llr0)
            if s > 0.0:
                self._run_n += 1
                self._run_pos += bit
            else:
                s = 0.0
                self._run_n = 0
                self._run_pos = 0
            self._s = s
            if s > self._h:
                self._drift = True
                if self._ref_boundary < 0.0:
                    self._ref_rate = self._p
                    self._ref_boundary = self.boundary_rate
                return
            if s > _FREEZE_FRACTION * self._h:
                return
        # Learn: exact share first (weight 1/n), exponential weights later.
        n += 1
        a = 1.0 / n
        if a < self._alpha:
            a = self._alpha
        self._p += a * (bit - self._p)
        if n <= self._n_cap:
            self._n = n
        if self._ref_boundary >= 0.0 and n >= self.warmup and self._p <= self._ref_boundary:
            self._ref_boundary = -1.0
        since = self._since + 1
        if since >= _REFRESH or n == self.warmup:
            self._refresh()
        else:
            self._since = since

    def _refresh(self) -> None:
        p0 = max(self._p, self.min_rate)
        if p0 >= 1.0 - self.min_rate:  # saturated: no rise left to detect
            self._llr1 = 0.0
            self._llr0 = -1.0
            self._since = 0
            return
        odds = self.odds_ratio * p0 / (1.0 - p0)
        p1 = odds / (1.0 + odds)
        self._llr1 = math.log(p1 / p0)
        self._llr0 = math.log((1.0 - p1) / (1.0 - p0))
        self._since = 0

    @property
    def drift_detected(self) -> bool:
        """True on the update that detected a rise (the next update starts over)."""
        return self._drift

    @property
    def statistic(self) -> float:
        """The CUSUM ``S`` of log-likelihood ratios."""
        return self._s

    @property
    def threshold(self) -> float:
        """The decision threshold ``h = log(arl0)``."""
        return self._h

    @property
    def baseline_rate(self) -> float:
        """The estimated pre-change rate (before clipping to ``min_rate``)."""
        return self._p

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
        """Share of positives since ``S`` last left zero; ``baseline_rate`` while ``S`` is zero."""
        return self._run_pos / self._run_n if self._run_n else self._p

    @property
    def warming_up(self) -> bool:
        """True until ``warmup`` observations have estimated the baseline (no test is made)."""
        return self._n < self.warmup
