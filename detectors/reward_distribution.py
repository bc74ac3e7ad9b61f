"""``reward_distribution``: the shape of the reward distribution changes (per-batch tests)."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import ClassVar, Final

import numpy as np

from detectors._base import _FailureModeDetector, percent
from detectors.alarm import Alarm, Severity
from detectors.batch_ks import BatchKS, indicator_design_effect
from detectors.protocol import EventLike

__all__ = ["RewardDistribution"]

#: The mass test looks for a value that was rare in the reference becoming common.
_RARE: Final = 0.25


class RewardDistribution(_FailureModeDetector):
    """Warns when the reward distribution of recent episodes differs from the one before.

    The rewards of scored training episodes go into a :class:`~detectors.batch_ks.BatchKS`:
    every ``every`` rewards the latest ``window`` are compared with the ``reference`` rewards
    before them by a two-sample Kolmogorov-Smirnov test, so the heavy work runs once per
    batch, not per event. The reference slides with the stream: the slow rise of healthy
    learning moves both windows together and does not alarm, while a change of shape (a
    bimodal split, a new mode, a wider spread) shows up even when the mean stays put. The
    same batch also tests the **mass at an exact value**: the share of the most frequent
    reward of the window against its share in the reference, a one-sided two-proportion
    z-test, for a value that held less than a quarter of the reference (a default score
    piling up at one value; for a binary reward the share of a value is its mean, which is
    ``reward_shift``'s business). Both tests allow for the correlation of
    the episodes of one group through the design effect of the reference window.

    Budget: the two tests share it (each gets ``2 * arl0``); a test runs every ``every``
    rewards, so each may reject with probability ``every / (2 * arl0)`` on clean data.
    Assumptions: rewards of a batch are exchangeable apart from group correlation, and the
    distribution changes slowly compared with ``window + reference`` rewards when healthy.

    ``statistic`` and ``threshold`` are the KS distance of the latest test and its critical
    value. One change gives one alarm: no alarm while the previous test rejected too.
    ``active`` holds from an alarm until a test rejects neither way; after a KS rejection
    both windows refill with post-change rewards before the next test.

    Parameters
    ----------
    window
        Newest rewards compared with the reference.
    reference
        Rewards before the window that serve as reference.
    every
        Rewards between two tests.
    block
        Consecutive rewards per block of the design effect (at least twice the group size).
    arl0
        False-alarm budget: expected scored episodes between false alarms.

    Examples
    --------
    Rewards uniform on [0, 1] until episode 4000, then either 0.2 or 0.8 (same mean):

    >>> import random
    >>> from types import SimpleNamespace
    >>> from detectors.reward_distribution import RewardDistribution
    >>> rng = random.Random(9)
    >>> def episode(i):
    ...     reward = rng.random() if i < 4000 else rng.choice((0.2, 0.8))
    ...     return SimpleNamespace(reward=reward, phase="train")
    >>> detector = RewardDistribution()
    >>> for i in range(6000):
    ...     detector.update(episode(i))
    ...     if detector.alarm:
    ...         print(i, detector.alarm.severity, detector.alarm.summary)
    ... # doctest: +NORMALIZE_WHITESPACE
    4095 warning rewards pile up at 0.8 (z 5.2 > 3.5): mean 0.49 -> 0.5, std 0.29 -> 0.29;
    most frequent value 0.8 at 0.0% -> 11%
    """

    __slots__ = ("_changed", "_ks", "_mass", "_z", "arl0", "block", "every", "reference", "window")

    detector_id: ClassVar[str] = "reward_distribution"
    severity: ClassVar[Severity] = "warning"
    fixed_threshold: ClassVar[bool] = False  # the KS critical value follows the design effect

    def __init__(
        self,
        window: int = 512,
        reference: int = 1024,
        every: int = 512,
        block: int = 32,
        arl0: float = 1_000_000,
    ) -> None:
        self.window = window
        self.reference = reference
        self.every = every
        self.block = block
        self.arl0 = arl0
        self._reset()

    def _reset(self) -> None:
        self._ks = BatchKS(
            window=self.window,
            reference=self.reference,
            every=self.every,
            block=self.block,
            arl0=2.0 * self.arl0,
        )
        self._z = NormalDist().inv_cdf(1.0 - self.every / (2.0 * self.arl0))
        self._mass = 0.0
        self._changed = False
        self._alarm = None

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        reward = event.reward
        if reward is None or event.phase == "eval":
            return
        ks = self._ks
        ks.update(reward)
        if ks._tested:  # the slot, not the property: this is the per-event path
            self._after_test()

    def _after_test(self) -> None:
        ks = self._ks
        reference, current = ks.windows()
        value, before, after, z = _mass_test(reference, current, self.block)
        self._mass = z
        rejects = ks.drift_detected or (z > self._z and before < _RARE)
        if rejects and not self._changed:
            self._alarm = self._raise(reference, current, value, before, after, z)
        self._changed = rejects

    def _raise(
        self,
        reference: np.ndarray,
        current: np.ndarray,
        value: float,
        before: float,
        after: float,
        z: float,
    ) -> Alarm:
        ks = self._ks
        shape = (
            f"mean {reference.mean():.2g} -> {current.mean():.2g}, "
            f"std {reference.std():.2g} -> {current.std():.2g}; "
            f"most frequent value {value:g} at {percent(before)} -> {percent(after)}"
        )
        if ks.drift_detected:
            summary = (
                f"reward distribution changed (KS distance {ks.statistic:.2g} > "
                f"{ks.threshold:.2g}, {self.window} vs {self.reference} episodes): {shape}"
            )
            value_, threshold = ks.statistic, ks.threshold
        else:
            summary = f"rewards pile up at {value:g} (z {z:.1f} > {self._z:.1f}): {shape}"
            value_, threshold = z, self._z
        return Alarm(
            detector=self.detector_id,
            severity=self.severity,
            value=value_,
            threshold=threshold,
            summary=summary,
        )

    @property
    def test(self) -> BatchKS:
        """The underlying two-sample test."""
        return self._ks

    @property
    def mass_statistic(self) -> float:
        """z of the latest mass test (0 before the first)."""
        return self._mass

    @property
    def active(self) -> bool:
        return self._changed

    @property
    def statistic(self) -> float:
        return self._ks.statistic

    @property
    def threshold(self) -> float:
        return self._ks.threshold


def _mass_test(
    reference: np.ndarray, current: np.ndarray, block: int
) -> tuple[float, float, float, float]:
    """The most frequent value of ``current``, its share before and after, and the z of the rise.

    The variance allows for the design effect of the value's indicator over both windows
    (with the margin for its sampling error, as in :func:`compare_windows`).

    >>> _mass_test(np.array([0.0, 1.0] * 50), np.array([0.0] * 30 + [1.0] * 10), 8)[:3]
    (0.0, 0.5, 0.75)
    """
    ordered = np.sort(current)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    counts = np.diff(np.append(starts, len(ordered)))
    top = int(np.argmax(counts))
    value = float(ordered[starts[top]])
    n, m = len(current), len(reference)
    hits_after = int(counts[top])
    hits_before = int(np.count_nonzero(reference == value))
    both = np.concatenate((reference, current)) == value
    blocks = max(len(both) // block, 3)
    deff = indicator_design_effect(both, block) * (1.0 + math.sqrt(2.0 / (blocks - 1)))
    pooled = (hits_after + hits_before) / (n + m)
    variance = pooled * (1.0 - pooled) * (1.0 / n + 1.0 / m) * deff
    after, before = hits_after / n, hits_before / m
    z = (after - before) / math.sqrt(variance) if variance > 0.0 else 0.0
    return value, before, after, z
