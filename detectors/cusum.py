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


def _skew_factor(k: float, g: float) -> float:
    """Factor (>= 1) on a CUSUM threshold for increments with third moment ``g``.

    >>> _skew_factor(0.5, 0.0), round(_skew_factor(0.5, 1.5), 2)
    (1.0, 1.37)
    """
    if g <= 0.0:
        return 1.0
    theta = (math.sqrt(0.25 + 2.0 * g * k / 3.0) - 0.5) / (g / 3.0)
    factor = 2.0 * k / theta
    return factor if factor > 1.0 else 1.0


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
    lags
        Number of lags (in batches) of the long-run variance correction; 0 switches it off.
        With ``lags > 0`` the variance of a batch mean is multiplied by the design effect
        ``1 + 2 * sum_j (1 - j / (lags + 1)) * rho_j`` (Bartlett weights, floored at 1), where
        ``rho_j`` is the autocorrelation of batch means at lag ``j``, estimated on the
        deviations from the baseline with a half-life of ``lrv_halflife`` samples. Episodes of
        one GRPO group share a task and finish close together, so consecutive batches are
        positively correlated; without the correction the CUSUM sees a random walk that is
        wider than it assumes and alarms far more often than ``arl0`` says.
    lrv_halflife
        Half-life, in samples, of the variance and autocorrelation estimates (with
        ``lags > 0``; the variance learns with ``baseline_halflife`` otherwise).
    fast_k
        Reference values of extra per-sample CUSUMs that run beside the batched one against
        the same baseline, in standard deviations of one sample (the long-run ones, with
        ``lags > 0``). Batching delays the detection of a large shift to a batch boundary and
        spends a whole batch per step; a per-sample chart with ``k = 1`` finds a two-sigma
        shift in a few samples. The charts share ``arl0`` (their false-alarm rates add up):
        the per-sample charts get ``fast_share`` of it together, in equal parts, the batched
        chart the rest.
    fast_share
        Share of the false-alarm budget spent on the per-sample charts (with ``fast_k``).

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
        "_acc2",
        "_acc3",
        "_alpha",
        "_beta",
        "_cov",
        "_deff",
        "_direction",
        "_down",
        "_drift",
        "_fast_base",
        "_fast_h",
        "_fast_n",
        "_fast_s",
        "_fired",
        "_floor",
        "_h",
        "_h_down",
        "_h_up",
        "_in_batch",
        "_inv_sd",
        "_lagged",
        "_m2e",
        "_m3e",
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
        "fast_k",
        "fast_share",
        "k",
        "lags",
        "lrv_halflife",
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
        lags: int = 0,
        lrv_halflife: float = 8000.0,
        fast_k: tuple[float, ...] = (),
        fast_share: float = 0.2,
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
        check_param(isinstance(lags, int) and 0 <= lags <= 64, "lags", "an int in [0, 64]", lags)
        check_param(
            lrv_halflife >= batch_size and math.isfinite(lrv_halflife),
            "lrv_halflife",
            f"a finite number >= batch_size ({batch_size})",
            lrv_halflife,
        )
        fast_k = tuple(fast_k)
        check_param(
            len(fast_k) <= 4 and all(0 < f < clip for f in fast_k),
            "fast_k",
            f"at most 4 numbers in (0, clip={clip})",
            fast_k,
        )
        check_param(0.0 < fast_share < 1.0, "fast_share", "a number in (0, 1)", fast_share)
        check_param(not fast_k or batch_size > 1, "fast_k", "empty when batch_size is 1", fast_k)
        self.fast_k = fast_k
        self.fast_share = fast_share
        self.k = k
        self.arl0 = arl0
        self.warmup = warmup
        self.baseline_halflife = baseline_halflife
        self.min_std = min_std
        self.batch_size = batch_size
        self.clip = clip
        self.lags = lags
        self.lrv_halflife = lrv_halflife
        # Everything below is in units of batches (one batch is one sample when batch_size=1).
        main_arl0 = arl0 / (1.0 - fast_share) if fast_k else arl0
        self._h = cusum_threshold(k, main_arl0 / batch_size)
        fast_arl0 = arl0 * len(fast_k) / fast_share
        self._fast_base = [cusum_threshold(f, fast_arl0) for f in fast_k]
        self._alpha = -math.expm1(-math.log(2.0) * batch_size / baseline_halflife)
        self._beta = -math.expm1(-math.log(2.0) * batch_size / lrv_halflife)
        self._warm = -(-warmup // batch_size)
        self._n_cap = max(2 * self._warm, math.ceil(1.0 / min(self._alpha, self._beta))) + 1
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
        self._acc2 = 0.0
        self._acc3 = 0.0
        self._m2e = 0.0
        self._m3e = 0.0
        self._in_batch = 0
        self._drift = False
        self._direction = ""
        self._deff = 1.0
        self._cov = [0.0] * self.lags
        self._lagged = [0.0] * self.lags
        # per fast chart: [up, down] sides, their run lengths; the chart that fired (-1: none)
        self._fast_s = [[0.0, 0.0] for _ in self.fast_k]
        self._fast_n = [[0, 0] for _ in self.fast_k]
        self._fired = -1
        self._inv_sd = 0.0
        # per fast chart: the thresholds of its [up, down] sides (skewness-corrected)
        self._fast_h = [[h, h] for h in self._fast_base]
        self._h_up = self._h
        self._h_down = self._h

    def update(self, x: float) -> None:
        """Feed one sample."""
        if self._drift:
            self._reset()
        if self._inv_sd and self._fast(x):
            return
        if self.lags:
            # moments of single samples about the baseline, for the skewness correction
            d = x - self._mean
            dd = d * d
            self._acc2 += dd
            self._acc3 += dd * d
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
            std = math.sqrt(self._var * self._deff)
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
            h_up = self._h_up
            h_down = self._h_down
            if up > h_up or down > h_down:
                self._drift = True
                up_first = up > h_up and (down <= h_down or up * h_down >= down * h_up)
                self._direction = "up" if up_first else "down"
                return
            if up > _FREEZE_FRACTION * h_up or down > _FREEZE_FRACTION * h_down:
                return
            if self._inv_sd and self._fast_busy():
                return
        # Learn: exact running mean/variance first (weight 1/n), exponential weights later.
        n += 1
        a = 1.0 / n
        if a < self._alpha:
            a = self._alpha
        d = x - mean
        step = a * d
        self._mean = mean + step
        if self.lags:
            # the scale (variance and correlation) changes more slowly than the level: it
            # learns with the longer half-life, which keeps its estimation error small
            b = 1.0 / n
            if b < self._beta:
                b = self._beta
            self._var = (1.0 - b) * (self._var + b * d * d)
            self._learn_correlation(d, b)
            size = self.batch_size
            self._m2e += b * (self._acc2 / size - self._m2e)
            self._m3e += b * (self._acc3 / size - self._m3e)
        else:
            self._var = (1.0 - a) * (self._var + d * step)
        if n <= self._n_cap:
            self._n = n
        # the per-sample charts wait for twice the warm-up: a scale estimated from few batches
        # is too often too small, and those charts react to one sample
        if self.lags:
            self._acc2 = 0.0
            self._acc3 = 0.0
            self._scale(n)

    def _scale(self, n: int) -> None:
        """Skewness-corrected thresholds of the sides, and the scale of the per-sample charts.

        The Siegmund threshold assumes Gaussian increments. A side whose increments have a
        long right tail (the down side of a success rate of 80%: failures are rare and far
        below the mean) crosses it far more often. The exponent ``theta`` of the run-length
        tail solves ``K(theta) = k * theta`` for the cumulant generating function ``K`` of the
        standardized sample; with ``K`` to third order, ``theta**2 * g / 6 + theta / 2 = k``
        for the third moment ``g`` of that side. The threshold is scaled by ``2 * k / theta``
        (the Gaussian exponent over the skewed one) and never lowered. A batch mean of
        ``batch_size`` samples has ``g / sqrt(batch_size)``.
        """
        sd = math.sqrt(self._var * self._deff)
        inv = 1.0 / (max(sd, self._floor) * math.sqrt(self.batch_size))
        g = self._m3e * inv * inv * inv
        gb = g / math.sqrt(self.batch_size)
        self._h_up = self._h * _skew_factor(self.k, gb)
        self._h_down = self._h * _skew_factor(self.k, -gb)
        if not self.fast_k or n < 2 * self._warm:
            return
        self._inv_sd = inv
        for j, f in enumerate(self.fast_k):
            base = self._fast_base[j]
            self._fast_h[j] = [base * _skew_factor(f, g), base * _skew_factor(f, -g)]

    def _fast(self, x: float) -> bool:
        """Update the per-sample charts with ``x``; True when one of them detected."""
        z = (x - self._mean) * self._inv_sd
        clip = self.clip
        if z > clip:
            z = clip
        elif z < -clip:
            z = -clip
        for j, f in enumerate(self.fast_k):
            sides = self._fast_s[j]
            runs = self._fast_n[j]
            up = sides[0] + z - f
            if up > 0.0:
                runs[0] += 1
            else:
                up = 0.0
                runs[0] = 0
            down = sides[1] - z - f
            if down > 0.0:
                runs[1] += 1
            else:
                down = 0.0
                runs[1] = 0
            sides[0] = up
            sides[1] = down
            h = self._fast_h[j]
            if up > h[0] or down > h[1]:
                self._drift = True
                self._fired = j
                self._direction = "up" if up >= down else "down"
                return True
        return False

    def _fast_busy(self) -> bool:
        """True while a per-sample chart is above the share of its threshold that freezes."""
        for sides, h in zip(self._fast_s, self._fast_h, strict=True):
            if sides[0] > _FREEZE_FRACTION * h[0] or sides[1] > _FREEZE_FRACTION * h[1]:
                return True
        return False

    def _learn_correlation(self, d: float, b: float) -> None:
        """Update the lagged covariances of batch-mean deviations and the design effect."""
        cov = self._cov
        lagged = self._lagged
        lags = self.lags
        total = 0.0
        for j in range(lags):
            c = cov[j] + b * (d * lagged[j] - cov[j])
            cov[j] = c
            total += (1.0 - (j + 1) / (lags + 1)) * c
        lagged.insert(0, d)
        lagged.pop()
        var = self._var
        deff = 1.0 + 2.0 * total / var if var > 0.0 else 1.0
        self._deff = deff if deff > 1.0 else 1.0

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
        """The largest CUSUM side, in units of the batched chart's threshold scale.

        Each side counts as its share of its own (skewness-corrected) threshold times
        :attr:`threshold`, so the statistic crosses the threshold when any side of any chart
        does; without skewness and ``fast_k`` it is the larger side of the batched chart, in
        standard deviations of a batch mean.
        """
        h = self._h
        stat = max(self._up / self._h_up * h, self._down / self._h_down * h) if h > 0.0 else 0.0
        for sides, limits in zip(self._fast_s, self._fast_h, strict=True):
            for side, limit in zip(sides, limits, strict=True):
                scaled = side / limit * self._h if limit > 0.0 else 0.0
                if scaled > stat:
                    stat = scaled
        return stat

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

        The average of the samples since that side of the chart that detected last left zero
        (the run that led to the detection; for a per-sample chart, implied by its clipped
        standardized values); ``baseline_mean`` while both sides are zero.
        """
        j = self._fired
        if j >= 0 and self._inv_sd:
            side = 0 if self._direction == "up" else 1
            run = self._fast_n[j][side]
            if run:
                shift = (self._fast_s[j][side] / run + self.fast_k[j]) / self._inv_sd
                return self._mean + shift if side == 0 else self._mean - shift
        up = self._direction == "up" if j >= 0 else self._up >= self._down
        if up:
            return self._sum_up / self._n_up if self._n_up else self._mean
        return self._sum_down / self._n_down if self._n_down else self._mean

    @property
    def design_effect(self) -> float:
        """The long-run variance factor applied to the batch-mean variance (1 without lags)."""
        return self._deff

    @property
    def warming_up(self) -> bool:
        """True until ``warmup`` samples have estimated the baseline (no test is made)."""
        return self._n < self._warm
