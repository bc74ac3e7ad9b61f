"""The shared part of the failure-mode detectors that watch one number per event for a shift."""

from __future__ import annotations

from detectors._base import _FailureModeDetector
from detectors.cusum import MeanShiftCUSUM


class _MeanShiftDetector(_FailureModeDetector):
    """A failure-mode detector running a :class:`MeanShiftCUSUM` on one number per event.

    ``active`` starts with a detection and holds while the re-learned level stays more than
    ``k`` pre-change standard deviations beyond the pre-change level, in the direction of the
    first alarm of the episode (a later alarm in the other direction that brings the level
    back ends the episode). During the re-learning warm-up it holds.
    """

    __slots__ = (
        "_cusum",
        "_ref_dir",
        "_ref_mean",
        "_ref_std",
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
        arl0: float = 1_000_000,
        k: float = 0.5,
        warmup: int = 512,
        baseline_halflife: float = 1000.0,
        min_std: float = 0.05,
        batch_size: int = 8,
        clip: float = 4.0,
        lags: int = 6,
        lrv_halflife: float = 8000.0,
        fast_k: tuple[float, ...] = (0.5, 1.0),
        fast_share: float = 0.2,
    ) -> None:
        self.arl0 = arl0
        self.k = k
        self.warmup = warmup
        self.baseline_halflife = baseline_halflife
        self.min_std = min_std
        self.batch_size = batch_size
        self.clip = clip
        self.lags = lags
        self.lrv_halflife = lrv_halflife
        self.fast_k = tuple(fast_k)
        self.fast_share = fast_share
        self._reset()

    def _reset(self) -> None:
        self._cusum = MeanShiftCUSUM(
            k=self.k,
            arl0=self.arl0,
            warmup=self.warmup,
            baseline_halflife=self.baseline_halflife,
            min_std=self.min_std,
            batch_size=self.batch_size,
            clip=self.clip,
            lags=self.lags,
            lrv_halflife=self.lrv_halflife,
            fast_k=self.fast_k,
            fast_share=self.fast_share,
        )
        self._alarm = None
        self._ref_dir = ""
        self._ref_mean = 0.0
        self._ref_std = 0.0

    def _follow(self) -> bool:
        """Episode bookkeeping after an update that detected or happened during an episode.

        Called only when ``_ref_dir`` is set or the CUSUM detected, so the common path stays a
        single CUSUM update. True when this update detected a change.
        """
        cusum = self._cusum
        if self._ref_dir and not self._displaced():
            self._ref_dir = ""
        if not cusum.drift_detected:
            return False
        if not self._ref_dir:
            self._ref_dir = cusum.direction
            self._ref_mean = cusum.baseline_mean
            self._ref_std = cusum.baseline_std
        return True

    def _displaced(self) -> bool:
        cusum = self._cusum
        if cusum.warming_up or cusum.drift_detected:
            return True
        margin = self.k * self._ref_std
        if self._ref_dir == "down":
            return cusum.baseline_mean < self._ref_mean - margin
        return cusum.baseline_mean > self._ref_mean + margin

    @property
    def cusum(self) -> MeanShiftCUSUM:
        """The underlying change detector (for its baseline and statistics)."""
        return self._cusum

    @property
    def active(self) -> bool:
        return bool(self._ref_dir)

    @property
    def statistic(self) -> float:
        return self._cusum.statistic

    @property
    def threshold(self) -> float:
        return self._cusum.threshold
