"""``length_anomaly``: completion length collapse or explosion."""

from __future__ import annotations

import math
from typing import ClassVar

from detectors._mean_shift import _MeanShiftDetector
from detectors.alarm import Alarm, Severity
from detectors.protocol import EventLike

__all__ = ["LengthAnomaly"]


class LengthAnomaly(_MeanShiftDetector):
    """Warns on a step change of the completion length, in either direction.

    Runs a :class:`~detectors.cusum.MeanShiftCUSUM` on ``log1p(completion_tokens)`` of
    training episodes, so a change is relative (halving and doubling are equally far) and the
    long right tail of lengths is tamed. Episodes without ``completion_tokens`` and
    ``phase: "eval"`` episodes (other sampling settings) are skipped. The baseline follows
    slow length growth during training. The summary gives the typical length (geometric mean,
    in tokens) before and after the change.

    ``active`` holds from the alarm while the re-learned log-length stays more than ``k``
    pre-change standard deviations beyond the pre-change level, in the direction of the alarm.

    Parameters
    ----------
    arl0
        False-alarm budget: expected episodes between false alarms (both directions).
    k
        Reference value in standard deviations of the (batched) log-length.
    warmup
        Episodes that estimate the baseline before the first test and after each alarm.
    baseline_halflife
        Half-life, in episodes, of the baseline mean and variance.
    min_std
        Floor of the log-length standard deviation.
    batch_size
        Consecutive log-lengths averaged into one CUSUM observation.
    clip
        Bound of the standardized batch mean.
    lags, lrv_halflife
        Long-run variance correction for the correlation of episodes of one group (see
        :class:`~detectors.cusum.MeanShiftCUSUM`).
    fast_k, fast_share
        Per-episode charts beside the batched one, for large changes, and their share of the
        budget.

    Examples
    --------
    Lengths around 800 tokens collapsing to around 100 tokens at episode 2000:

    >>> import math
    >>> import random
    >>> from types import SimpleNamespace
    >>> from detectors.length_anomaly import LengthAnomaly
    >>> rng = random.Random(5)
    >>> def episode(typical):
    ...     tokens = int(rng.lognormvariate(math.log(typical), 0.5))
    ...     return SimpleNamespace(completion_tokens=tokens, phase="train")
    >>> stream = [episode(800) for _ in range(2000)] + [episode(100) for _ in range(500)]
    >>> detector = LengthAnomaly()
    >>> for i, event in enumerate(stream):
    ...     detector.update(event)
    ...     if detector.alarm:
    ...         print(i, detector.alarm.severity, detector.alarm.summary)
    ... # doctest: +NORMALIZE_WHITESPACE
    2003 warning completion length collapse: typical length about 152 tokens,
    baseline 817 tokens (geometric means)
    """

    __slots__ = ()

    detector_id: ClassVar[str] = "length_anomaly"
    severity: ClassVar[Severity] = "warning"
    fixed_threshold: ClassVar[bool] = True  # h of the CUSUM, from arl0

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        tokens = event.completion_tokens
        if tokens is None or event.phase == "eval":
            return
        cusum = self._cusum
        cusum.update(math.log1p(tokens))
        # The slot, not the property: this is the per-event path.
        if (self._ref_dir or cusum._drift) and self._follow():
            self._alarm = self._raise()

    def _raise(self) -> Alarm:
        cusum = self._cusum
        what = "collapse" if cusum.direction == "down" else "explosion"
        before = math.expm1(cusum.baseline_mean)
        after = math.expm1(cusum.post_change_mean)
        summary = (
            f"completion length {what}: typical length about {after:.0f} tokens, "
            f"baseline {before:.0f} tokens (geometric means)"
        )
        return Alarm(
            detector=self.detector_id,
            severity=self.severity,
            value=cusum.statistic,
            threshold=cusum.threshold,
            summary=summary,
            direction=cusum.direction,
        )
