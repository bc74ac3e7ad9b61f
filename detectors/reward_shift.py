"""``reward_shift``: a step change of the reward mean (broken verifier, environment change)."""

from __future__ import annotations

from typing import ClassVar

from detectors._mean_shift import _MeanShiftDetector
from detectors.alarm import Alarm, Severity
from detectors.protocol import EventLike

__all__ = ["RewardShift"]


class RewardShift(_MeanShiftDetector):
    """Pages on a sudden drop of the reward mean; a sudden rise is an ``info`` alarm.

    Runs a :class:`~detectors.cusum.MeanShiftCUSUM` on the reward of training episodes;
    unscored episodes (``reward: null``) and ``phase: "eval"`` episodes (another
    distribution) are skipped. The baseline follows the slow rise of healthy learning, so only
    step changes alarm. By default the CUSUM runs on means of 8 consecutive rewards, with the
    variance of a batch mean corrected for the correlation between batches (episodes of one
    GRPO group share a task and finish close together) and the thresholds corrected for the
    skewness of the reward (a success rate near 0 or 1); two per-episode charts beside it catch
    large drops within a few episodes. See ``docs/detectors.md`` for the measurements.

    ``active`` holds from the alarm while the re-learned mean stays more than ``k`` pre-change
    standard deviations beyond the pre-change mean, in the direction of the alarm.

    Parameters
    ----------
    arl0
        False-alarm budget: expected scored episodes between false alarms (both directions).
    k
        Reference value in standard deviations of the (batched) reward.
    warmup
        Episodes that estimate the baseline before the first test and after each alarm.
    baseline_halflife
        Half-life, in episodes, of the baseline mean and variance.
    min_std
        Floor of the reward standard deviation (a constant reward still gets a scale).
    batch_size
        Consecutive rewards averaged into one CUSUM observation.
    clip
        Bound of the standardized batch mean.
    lags, lrv_halflife
        Long-run variance correction: lags (in batches) of the autocorrelation of batch means
        and the half-life, in episodes, of the scale estimates.
    fast_k, fast_share
        Reference values of the per-episode charts and their share of the budget.

    Examples
    --------
    Binary rewards with success probability 0.6, dropping to 0.2 at episode 3000:

    >>> import random
    >>> from types import SimpleNamespace
    >>> from detectors.reward_shift import RewardShift
    >>> rng = random.Random(11)
    >>> def episode(p):
    ...     return SimpleNamespace(reward=float(rng.random() < p), phase="train")
    >>> stream = [episode(0.6) for _ in range(3000)] + [episode(0.2) for _ in range(1000)]
    >>> detector = RewardShift()
    >>> for i, event in enumerate(stream):
    ...     detector.update(event)
    ...     if detector.alarm:
    ...         print(i, detector.alarm.severity, detector.alarm.summary)
    3062 page reward mean dropped from 0.603 to about 0.108 (baseline std 0.508)
    """

    __slots__ = ()

    detector_id: ClassVar[str] = "reward_shift"
    severity: ClassVar[Severity] = "page"
    fixed_threshold: ClassVar[bool] = True  # h of the CUSUM, from arl0

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        reward = event.reward
        if reward is None or event.phase == "eval":
            return
        cusum = self._cusum
        cusum.update(reward)
        # The slot, not the property: this is the per-event path.
        if (self._ref_dir or cusum._drift) and self._follow():
            self._alarm = self._raise()

    def _raise(self) -> Alarm:
        cusum = self._cusum
        down = cusum.direction == "down"
        verb = "dropped" if down else "rose"
        summary = (
            f"reward mean {verb} from {cusum.baseline_mean:.3g} to about "
            f"{cusum.post_change_mean:.3g} (baseline std {cusum.baseline_std:.3g})"
        )
        return Alarm(
            detector=self.detector_id,
            severity="page" if down else "info",
            value=cusum.statistic,
            threshold=cusum.threshold,
            summary=summary,
            direction=cusum.direction,
        )
