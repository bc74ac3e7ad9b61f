"""Two-sided tabular CUSUM for a mean shift, with a self-estimated, slowly tracking baseline."""

from __future__ import annotations

import functools
import math
from array import array
from typing import Final

from detectors._base import _Base, check_param

__all__ = ["MeanShiftCUSUM", "cusum_threshold"]

#: Siegmund's correction of the decision interval for the overshoot of a Gaussian random walk.
_OVERSHOOT: Final = 1.166
#: Batches between refreshes of the design effect and the skewness-corrected thresholds.
_RESCALE_BATCHES: Final = 8
#: The baseline stops learning while either side is above this share of the threshold, so the
#: onset of a change does not pull the reference towards itself.
_FREEZE_FRACTION: Final = 0.5


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


@functools.lru_cache(maxsize=256)
def _constants(
    k: float,
    arl0: float,
    warmup: int,
    baseline_halflife: float,
    min_std: float,
    batch_size: int,
    lrv_halflife: float,
    fast_k: tuple[float, ...],
    fast_share: float,
) -> tuple[float, tuple[float, ...], float, float, float, float, int, int, float]:
    """The constants a :class:`MeanShiftCUSUM` derives from its parameters, in units of
    batches (one batch is one sample when ``batch_size = 1``): ``h``, the per-sample charts'
    base thresholds, their ``k``, the baseline and scale learning rates, the warm-up in
    batches, the cap of the sample count and the floor of the batch-mean deviation.

    Cached, so that the detectors of every segment share these objects (a float object is
    32 bytes, and each segment holds about fifteen charts) instead of holding equal copies.
    """
    main_arl0 = arl0 / (1.0 - fast_share) if fast_k else arl0
    h = cusum_threshold(k, main_arl0 / batch_size)
    fast_arl0 = arl0 * len(fast_k) / fast_share
    fast_base = tuple(cusum_threshold(f, fast_arl0) for f in fast_k)
    k0 = fast_k[0] if fast_k else 0.0
    k1 = fast_k[1] if len(fast_k) > 1 else 0.0
    alpha = -math.expm1(-math.log(2.0) * batch_size / baseline_halflife)
    beta = -math.expm1(-math.log(2.0) * batch_size / lrv_halflife)
    warm = -(-warmup // batch_size)
    n_cap = max(2 * warm, math.ceil(1.0 / min(alpha, beta))) + 1
    floor = min_std / math.sqrt(batch_size)
    return h, fast_base, k0, k1, alpha, beta, warm, n_cap, floor


def _skew_factor(k: float, g: float) -> float:
    """Factor (>= 1) on a CUSUM threshold for increments with third moment ``g``.

    The ratio ``2 * k / theta`` of the Gaussian tail exponent to the one solving
    ``theta**2 * g / 6 + theta / 2 = k``, written without dividing by ``g``; 1 for ``g <= 0``
    (or not a number), at most ``1e6``.

    >>> _skew_factor(0.5, 0.0), round(_skew_factor(0.5, 1.5), 2), _skew_factor(1.0, 1e-300)
    (1.0, 1.37, 1.0)
    >>> _skew_factor(0.5, float("nan")), _skew_factor(0.5, float("inf"))
    (1.0, 1000000.0)
    """
    if not g > 0.0:
        return 1.0
    factor = 0.5 + math.sqrt(0.25 + 2.0 * g * k / 3.0)
    return factor if factor < 1e6 else 1e6


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
        "_alpha",
        "_batches",
        "_beta",
        "_cov",
        "_d0",
        "_d1",
        "_deff",
        "_direction",
        "_down",
        "_drift",
        "_fast_base",
        "_fired",
        "_floor",
        "_h",
        "_h_down",
        "_h_up",
        "_hd0",
        "_hd1",
        "_hu0",
        "_hu1",
        "_in_batch",
        "_inv_sd",
        "_k0",
        "_k1",
        "_lagged",
        "_m3",
        "_mean",
        "_n",
        "_n_cap",
        "_n_down",
        "_n_up",
        "_nd0",
        "_nd1",
        "_nu0",
        "_nu1",
        "_sum_down",
        "_sum_up",
        "_u0",
        "_u1",
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
            len(fast_k) <= 2 and all(0 < f < clip for f in fast_k),
            "fast_k",
            f"at most 2 numbers in (0, clip={clip})",
            fast_k,
        )
        check_param(0.0 < fast_share < 1.0, "fast_share", "a number in (0, 1)", fast_share)
        check_param(
            not fast_k or (batch_size > 1 and lags > 0),
            "fast_k",
            "empty unless batch_size > 1 and lags > 0",
            fast_k,
        )
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
        (
            self._h,
            self._fast_base,
            self._k0,
            self._k1,
            self._alpha,
            self._beta,
            self._warm,
            self._n_cap,
            self._floor,
        ) = _constants(
            k,
            arl0,
            warmup,
            baseline_halflife,
            min_std,
            batch_size,
            lrv_halflife,
            fast_k,
            fast_share,
        )
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
        self._m3 = 0.0
        self._in_batch = 0
        self._batches = 0
        self._drift = False
        self._direction = ""
        self._deff = 1.0
        # C doubles (8 bytes a value instead of a float object each), updated in place
        self._cov = array("d", bytes(8 * self.lags))
        self._lagged = array("d", bytes(8 * self.lags))
        self._h_up = self._h
        self._h_down = self._h
        # The per-sample charts (at most two, flat slots: this is the per-event path): sides,
        # their run lengths, skewness-corrected thresholds; the chart that fired (-1: none).
        self._inv_sd = 0.0
        self._fired = -1
        self._u0 = self._d0 = self._u1 = self._d1 = 0.0
        self._nu0 = self._nd0 = self._nu1 = self._nd1 = 0
        base = self._fast_base
        self._hu0 = self._hd0 = base[0] if base else math.inf
        self._hu1 = self._hd1 = base[1] if len(base) > 1 else math.inf

    def update(self, x: float) -> None:
        """Feed one sample."""
        if self._drift:
            self._reset()
        inv = self._inv_sd
        if inv:
            z = (x - self._mean) * inv
            clip = self.clip
            if z > clip:
                z = clip
            elif z < -clip:
                z = -clip
            # The per-sample charts, written out: this runs on every sample, and a method
            # call per chart would cost about as much as the chart. A chart at rest stays at
            # rest unless |z| exceeds its k, and a side at 0 stays at 0 (its run length too,
            # no store) unless z passes k on its side. A side leaving 0 is ``0.0 + z - f``,
            # which is ``z - f`` exactly (``-z - f`` on the down side), and is positive:
            # the difference of two unequal floats is never 0.
            f = self._k0
            up = self._u0
            down = self._d0
            if up or down or z > f or z < -f:
                if up:
                    up = up + z - f
                    if up > 0.0:
                        self._nu0 += 1
                    else:
                        up = 0.0
                        self._nu0 = 0
                    self._u0 = up
                elif z > f:
                    up = self._u0 = z - f
                    self._nu0 = 1
                if down:
                    down = down - z - f
                    if down > 0.0:
                        self._nd0 += 1
                    else:
                        down = 0.0
                        self._nd0 = 0
                    self._d0 = down
                elif z < -f:
                    down = self._d0 = -z - f
                    self._nd0 = 1
                if up > self._hu0 or down > self._hd0:
                    self._fast_alarm(0, up > self._hu0)
                    return
            f = self._k1
            if f:
                up = self._u1
                down = self._d1
                if up or down or z > f or z < -f:
                    if up:
                        up = up + z - f
                        if up > 0.0:
                            self._nu1 += 1
                        else:
                            up = 0.0
                            self._nu1 = 0
                        self._u1 = up
                    elif z > f:
                        up = self._u1 = z - f
                        self._nu1 = 1
                    if down:
                        down = down - z - f
                        if down > 0.0:
                            self._nd1 += 1
                        else:
                            down = 0.0
                            self._nd1 = 0
                        self._d1 = down
                    elif z < -f:
                        down = self._d1 = -z - f
                        self._nd1 = 1
                    if up > self._hu1 or down > self._hd1:
                        self._fast_alarm(1, up > self._hu1)
                        return
        batch_size = self.batch_size
        if batch_size > 1:
            filled = self._in_batch + 1
            if filled < batch_size:
                self._acc += x
                self._in_batch = filled
                return
            x = (self._acc + x) / filled
            self._acc = 0.0
            self._in_batch = 0
        n = self._n
        mean = self._mean
        lags = self.lags
        if lags and n:
            # the third moment learns from every batch, frozen or not: the batches a freeze
            # leaves out are those of the long tail it measures
            b = 1.0 / n
            if b < self._beta:
                b = self._beta
            dev = x - mean
            m3 = self._m3
            self._m3 = m3 + b * (dev * dev * dev - m3)
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
            if inv and self._fast_busy():
                return
        # Learn: exact running mean/variance first (weight 1/n), exponential weights later.
        n += 1
        a = 1.0 / n
        if a < self._alpha:
            a = self._alpha
        d = x - mean
        step = a * d
        self._mean = mean + step
        if n <= self._n_cap:
            self._n = n
        if not lags:
            self._var = (1.0 - a) * (self._var + d * step)
            return
        # the scale (variance, correlation, skewness) changes more slowly than the level: it
        # learns with the longer half-life, which keeps its estimation error small
        b = 1.0 / n
        if b < self._beta:
            b = self._beta
        self._var = (1.0 - b) * (self._var + b * d * d)
        # the lagged covariances of batch-mean deviations (see _scale), written out
        cov = self._cov
        lagged = self._lagged
        for j, y in enumerate(lagged):
            c = cov[j]
            cov[j] = c + b * (d * y - c)
        lagged.insert(0, d)
        lagged.pop()
        # the derived scale and thresholds move slowly: refreshed every few batches, and on
        # every batch of the warm-up
        batches = self._batches + 1
        if n <= 2 * self._warm or batches >= _RESCALE_BATCHES:
            self._batches = 0
            self._scale(n)
        else:
            self._batches = batches

    def _fast_alarm(self, chart: int, up: bool) -> None:
        self._drift = True
        self._fired = chart
        self._direction = "up" if up else "down"

    def _scale(self, n: int) -> None:
        """Design effect, skewness-corrected thresholds, and the per-sample charts' scale.

        The Siegmund threshold assumes Gaussian increments. A side whose increments have a
        long right tail (the down side of a success rate of 80%: failures are rare and far
        below the mean) crosses it far more often. The exponent ``theta`` of the run-length
        tail solves ``K(theta) = k * theta`` for the cumulant generating function ``K`` of the
        standardized sample; with ``K`` to third order, ``theta**2 * g / 6 + theta / 2 = k``
        for the third moment ``g`` of that side. The threshold is scaled by ``2 * k / theta``
        (the Gaussian exponent over the skewed one) and never lowered. ``g`` is estimated on
        the batch means (no per-sample work); a single sample has ``sqrt(batch_size)`` times
        the standardized third moment of a mean of ``batch_size`` independent samples.
        """
        lags = self.lags
        total = 0.0
        for j, c in enumerate(self._cov):
            total += (1.0 - (j + 1) / (lags + 1)) * c
        var = self._var
        deff = 1.0 + 2.0 * total / var if var > 0.0 else 1.0
        if not deff > 1.0:
            deff = 1.0
        self._deff = deff
        sd = math.sqrt(var * deff)
        if self._floor > sd:  # max(sd, floor), without the call
            sd = self._floor
        gb = self._m3 / (sd * sd * sd)
        root = math.sqrt(self.batch_size)
        g = gb * root
        inv = 1.0 / (sd * root)
        self._h_up = self._h * _skew_factor(self.k, gb)
        self._h_down = self._h * _skew_factor(self.k, -gb)
        # the per-sample charts wait for twice the warm-up: a scale estimated from few batches
        # is too often too small, and those charts react to one sample
        if not self.fast_k or n < 2 * self._warm:
            return
        self._inv_sd = inv
        base = self._fast_base
        self._hu0 = base[0] * _skew_factor(self._k0, g)
        self._hd0 = base[0] * _skew_factor(self._k0, -g)
        if self._k1:
            self._hu1 = base[1] * _skew_factor(self._k1, g)
            self._hd1 = base[1] * _skew_factor(self._k1, -g)

    def _fast_busy(self) -> bool:
        """True while a per-sample chart is above the share of its threshold that freezes.

        The charts in use are the first ``len(fast_k)`` (the second needs ``_k1``); written
        out, as :attr:`statistic` is, so that no list is built on the per-event path.
        """
        fast = self.fast_k
        if not fast:
            return False
        if self._u0 > _FREEZE_FRACTION * self._hu0 or self._d0 > _FREEZE_FRACTION * self._hd0:
            return True
        if self._k1 and len(fast) > 1:
            return (
                self._u1 > _FREEZE_FRACTION * self._hu1 or self._d1 > _FREEZE_FRACTION * self._hd1
            )
        return False

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
        # Written out, as ``max`` over the sides in order (up, then down, of the batched
        # chart, then of each per-sample chart in use: one per ``fast_k``, as many as
        # ``_fast_base`` holds), a later side taken only when greater. The exporter reads it
        # for every segment on each scrape, mostly from memory not in the CPU caches: no
        # list, as few slots as can be (``_fast_base`` sits next to ``_down``), and a side at
        # 0 (it is never negative) is passed over without reading its threshold, since it
        # scales to 0 (thresholds are positive), never greater than the maximum so far
        # (never negative either). A test holds it equal to the formula.
        h = self._h
        stat = 0.0
        if h > 0.0:
            side = self._up
            if side:
                stat = side / self._h_up * h
            side = self._down
            if side:
                scaled = side / self._h_down * h
                if scaled > stat:
                    stat = scaled
        # the per-sample charts: one base threshold per fast_k (both set at construction,
        # where fast_k is checked positive: the second chart needs no test of _k1)
        charts = len(self._fast_base)
        if not charts:
            return stat
        side = self._u0
        if side:
            limit = self._hu0
            scaled = side / limit * h if limit > 0.0 else 0.0
            if scaled > stat:
                stat = scaled
        side = self._d0
        if side:
            limit = self._hd0
            scaled = side / limit * h if limit > 0.0 else 0.0
            if scaled > stat:
                stat = scaled
        if charts > 1:
            side = self._u1
            if side:
                limit = self._hu1
                scaled = side / limit * h if limit > 0.0 else 0.0
                if scaled > stat:
                    stat = scaled
            side = self._d1
            if side:
                limit = self._hd1
                scaled = side / limit * h if limit > 0.0 else 0.0
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
            up_side = self._direction == "up"
            if j == 0:
                stat, run = (self._u0, self._nu0) if up_side else (self._d0, self._nd0)
            else:
                stat, run = (self._u1, self._nu1) if up_side else (self._d1, self._nd1)
            if run:
                shift = (stat / run + self.fast_k[j]) / self._inv_sd
                return self._mean + shift if up_side else self._mean - shift
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
