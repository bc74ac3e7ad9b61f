"""Two-sided tabular CUSUM for a mean shift, with a self-estimated, slowly tracking baseline."""

from __future__ import annotations

import math

from detectors._base import _Base, check_param

__all__ = ["MeanShiftCUSUM", "cusum_threshold"]

#: Siegmund's correction of the decision interval for the overshoot of a Gaussian random walk.
_OVERSHOOT = 1.166
#: The baseline stops learning while either side is above this share of the threshold, so the
#: onset of a change does not pull the reference towards itself.
_FREEZE_FRACTION = 0.5


def cusum_threshold(k: float, arl0: float) -> float:
    """Decision interval ``h``, in standard deviations, of a two-sided CUSUM with in-control ARL.

    Each side gets ``2 * arl0`` (the two sides alarm about independently, so their rates add).
    Siegmund's approximation for standard normal observations gives the one-sided ARL as
    ``(exp(2*k*b) - 2*k*b - 1) / (2*k**2)`` with ``b = h + 1.166``; it is solved for ``h`` by a
    fixed-point iteration on ``y = 2*k*b``: ``y = log(1 + c + y)`` with ``c = 2*k**2 * 2*arl0``.

    >>> round(cusum_threshold(0.5, 469), 2)  # the textbook k=0.5, h=5 chart
    5.0
    >>> round(cusum_threshold(0.5, 1_000_000), 2)
    12.65
    """
    c = 2.0 * k * k * 2.0 * arl0
    y = math.log1p(c)
    for _ in range(200):
        nxt = math.log(1.0 + c + y)
        if abs(nxt - y) < 1e-12:
            y = nxt
            break
        y = nxt
    return max(y / (2.0 * k) - _OVERSHOOT, 0.0)


class MeanShiftCUSUM(_Base):
    """Two-sided tabular CUSUM on standardized values against a self-estimated baseline.

    The first ``warmup`` samples estimate the pre-change mean and variance; afterwards both
    keep tracking the stream through an exponentially weighted average with a half-life of
    ``baseline_halflife`` samples, so a slow drift (the steady rise of a healthy learning
    curve) is absorbed while a step change is not. Each new value is standardized with the
    baseline *before* the baseline learns from it, and the baseline does not learn at all
    while either CUSUM side is above half the threshold, so a change in progress does not
    contaminate its own reference. The standard deviation is floored at ``min_std``.

    With ``z`` the standardized value clipped to ``[-clip, clip]``, the two sides are
    ``S+ = max(0, S+ + z - k)`` and ``S- = max(0, S- - z - k)``; a change is detected when one
    exceeds ``h``. ``h`` comes from the false-alarm budget ``arl0`` (expected samples between
    false alarms, both sides together) by Siegmund's approximation, see
    :func:`cusum_threshold`. That calibration assumes the standardized values are roughly
    standard normal and independent. Skewed data (a Bernoulli reward far from p = 0.5) alarm
    more often on the side of the rare outcome; positively autocorrelated data (episodes of
    one group) alarm more often on both sides. ``batch_size > 1`` runs the CUSUM on means of
    that many consecutive samples instead, which brings both back towards the assumption (the
    baseline variance is then the variance of batch means, so short-range correlation is
    included) at the cost of detecting only at batch boundaries.

    After a detection the statistics and the baseline are reset: the baseline re-learns from
    the post-change data with a new warm-up.

    Parameters
    ----------
    k
        Reference value in standard deviations: half the smallest shift worth detecting quickly.
    arl0
        False-alarm budget: expected number of samples between false alarms (two-sided).
    warmup
        Samples that estimate the baseline before the first test (and after each detection).
    baseline_halflife
        Half-life, in samples, of the exponentially weighted baseline mean and variance.
    min_std
        Floor of the baseline standard deviation, in data units.
    batch_size
        Number of consecutive samples averaged into one CUSUM observation.
    clip
        Standardized values are clipped to ``[-clip, clip]`` so one outlier cannot alarm.

    Examples
    --------
    A unit-variance stream whose mean rises by one standard deviation at sample 1000:

    >>> import random
    >>> from detectors.cusum import MeanShiftCUSUM
    >>> rng = random.Random(42)
    >>> stream = [rng.gauss(0.0, 1.0) for _ in range(1000)] + [
    ...     rng.gauss(1.0, 1.0) for _ in range(1000)]
    >>> detector = MeanShiftCUSUM(arl0=10_000)
    >>> for i, x in enumerate(stream):
    ...     detector.update(x)
    ...     if detector.drift_detected:
    ...         print(f"change detected at {i}, direction {detector.direction}")
    ...         break
    change detected at 1018, direction up
    >>> round(detector.threshold, 2)
    8.05

    References
    ----------
    E. S. Page, "Continuous inspection schemes", Biometrika 41 (1954).
    D. Siegmund, *Sequential Analysis: Tests and Confidence Intervals*, Springer (1985).
    D. C. Montgomery, *Introduction to Statistical Quality Control*, ch. 9 (tabular CUSUM).
    """

    __slots__ = (
        "_acc",
        "_alpha",
        "_direction",
        "_down",
        "_drift",
        "_floor",
        "_h",
        "_in_batch",
        "_mean",
        "_n",
        "_n_cap",
        "_n_down",
        "_n_up",
        "_sum_down",
        "_sum_up",
        "_up",
        "_var",
        "_warm",
        "arl0",
        "baseline_halflife",
        "batch_size",
        "clip",
        "k",
        "min_std",
        "warmup",
    )

    def __init__(
        self,
        k: float = 0.5,
        arl0: float = 1_000_000,
        warmup: int = 256,
        baseline_halflife: float = 1000.0,
        min_std: float = 1e-6,
        batch_size: int = 1,
        clip: float = 4.0,
    ) -> None:
        check_param(k > 0 and math.isfinite(k), "k", "a positive finite number", k)
        check_param(arl0 > 1 and math.isfinite(arl0), "arl0", "a finite number > 1", arl0)
        check_param(
            isinstance(batch_size, int) and batch_size >= 1, "batch_size", "an int >= 1", batch_size
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
        check_param(min_std > 0 and math.isfinite(min_std), "min_std", "a positive number", min_std)
        check_param(clip > k, "clip", f"a number > k ({k})", clip)
        self.k = k
        self.arl0 = arl0
        self.warmup = warmup
        self.baseline_halflife = baseline_halflife
        self.min_std = min_std
        self.batch_size = batch_size
        self.clip = clip
        # Everything below is in units of batches (one batch is one sample when batch_size=1).
        self._h = cusum_threshold(k, arl0 / batch_size)
        self._alpha = -math.expm1(-math.log(2.0) * batch_size / baseline_halflife)
        self._warm = -(-warmup // batch_size)
        self._n_cap = max(self._warm, math.ceil(1.0 / self._alpha)) + 1
        self._floor = min_std / math.sqrt(batch_size)
        self._reset()

    def _reset(self) -> None:
        self._n = 0
        self._mean = 0.0
        self._var = 0.0
        self._up = 0.0
        self._down = 0.0
        self._n_up = 0
        self._n_down = 0
        self._sum_up = 0.0
        self._sum_down = 0.0
        self._acc = 0.0
        self._in_batch = 0
        self._drift = False
        self._direction = ""

    def update(self, x: float) -> None:
        """Feed one sample."""
        if self._drift:
            self._reset()
        if self.batch_size > 1:
            acc = self._acc + x
            filled = self._in_batch + 1
            if filled < self.batch_size:
                self._acc = acc
                self._in_batch = filled
                return
            self._acc = 0.0
            self._in_batch = 0
            x = acc / filled
        n = self._n
        mean = self._mean
        if n >= self._warm:
            std = math.sqrt(self._var)
            if std < self._floor:
                std = self._floor
            z = (x - mean) / std
            clip = self.clip
            if z > clip:
                z = clip
            elif z < -clip:
                z = -clip
            k = self.k
            up = self._up + z - k
            if up > 0.0:
                self._n_up += 1
                self._sum_up += x
            else:
                up = 0.0
                self._n_up = 0
                self._sum_up = 0.0
            down = self._down - z - k
            if down > 0.0:
                self._n_down += 1
                self._sum_down += x
            else:
                down = 0.0
                self._n_down = 0
                self._sum_down = 0.0
            self._up = up
            self._down = down
            h = self._h
            if up > h or down > h:
                self._drift = True
                self._direction = "up" if up >= down else "down"
                return
            if up > _FREEZE_FRACTION * h or down > _FREEZE_FRACTION * h:
                return
        # Learn: exact running mean/variance first (weight 1/n), exponential weights later.
        n += 1
        a = 1.0 / n
        if a < self._alpha:
            a = self._alpha
        d = x - mean
        step = a * d
        self._mean = mean + step
        self._var = (1.0 - a) * (self._var + d * step)
        if n <= self._n_cap:
            self._n = n

    @property
    def drift_detected(self) -> bool:
        """True on the update that detected a change (the next update starts over)."""
        return self._drift

    @property
    def direction(self) -> str:
        """``"up"`` or ``"down"`` on the update that detected a change, else ``""``."""
        return self._direction

    @property
    def statistic(self) -> float:
        """The larger of the two CUSUM sides, in standard deviations."""
        return self._up if self._up >= self._down else self._down

    @property
    def threshold(self) -> float:
        """The decision interval ``h`` derived from ``arl0``."""
        return self._h

    @property
    def baseline_mean(self) -> float:
        """The pre-change mean the stream is compared against."""
        return self._mean

    @property
    def baseline_std(self) -> float:
        """The baseline standard deviation of one sample (floored at ``min_std``).

        With ``batch_size > 1`` this is ``sqrt(batch_size)`` times the standard deviation of
        batch means, which includes the short-range correlation of the samples.
        """
        return max(math.sqrt(self._var), self._floor) * math.sqrt(self.batch_size)

    @property
    def post_change_mean(self) -> float:
        """Estimate of the mean after the change signalled by the larger side.

        The average of the samples since that side last left zero (the run that led to the
        detection); ``baseline_mean`` while both sides are zero.
        """
        if self._up >= self._down:
            return self._sum_up / self._n_up if self._n_up else self._mean
        return self._sum_down / self._n_down

    @property
    def warming_up(self) -> bool:
        """True until ``warmup`` samples have estimated the baseline (no test is made)."""
        return self._n < self._warm
