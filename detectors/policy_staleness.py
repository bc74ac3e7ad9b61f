"""``policy_staleness``: the off-policy lag of asynchronous rollouts grows, or weight sync stops."""

from __future__ import annotations

from typing import ClassVar, Final

from detectors._base import _FailureModeDetector, check_param, percent
from detectors.alarm import Alarm, Severity
from detectors.protocol import EventLike
from detectors.rate_bound import RateBound

__all__ = ["PolicyStaleness"]

_CLIP: Final = 255


class PolicyStaleness(_FailureModeDetector):
    """Warns when staleness exceeds its configured maximum, or the policy version stops moving.

    The staleness of an episode is ``trainer_version - policy_version`` (episodes without
    both are skipped). Two checks:

    - **Quantile against the maximum**: the ``quantile`` of the staleness over the last
      ``window`` episodes exceeds ``max_staleness`` exactly when more than
      ``1 - quantile`` of them are staler than ``max_staleness``. That share is tested by
      :class:`~detectors.rate_bound.RateBound` (Wilson lower bound against
      ``1 - quantile``, confidence from the budget), so a few stale episodes do not alarm.
    - **Heartbeat**: the newest ``trainer_version`` advanced but the newest
      ``policy_version`` did not follow within ``heartbeat_events`` episodes (a stuck
      weight sync). A deterministic rule with a configured span; it clears when the policy
      version advances.

    The summary gives the median, ``quantile`` and maximum staleness of the window (a ring
    of the last ``window`` values, clipped at 255). ``statistic`` and ``threshold`` are the
    lower bound of the stale share and ``1 - quantile``; ``active`` holds while the bound is
    above it or the heartbeat is missing.

    Parameters
    ----------
    max_staleness
        Largest acceptable ``trainer_version - policy_version``.
    quantile
        Quantile of the staleness that must stay at or below ``max_staleness``.
    window
        Episodes the quantile is taken over.
    min_samples
        Episodes needed before the first test.
    heartbeat_events
        Episodes the policy version may lag behind an advance of the trainer version.
    arl0
        False-alarm budget of the quantile test (confidence of the bound).

    Examples
    --------
    Staleness of 0-2 versions; from episode 2000 on the weight sync slows down and episodes
    are 5-8 versions behind; at episode 4000 it stops:

    >>> import random
    >>> from types import SimpleNamespace
    >>> from detectors.policy_staleness import PolicyStaleness
    >>> rng = random.Random(14)
    >>> def episode(i):
    ...     trainer = i // 100
    ...     lag = rng.randint(5, 8) if i >= 2000 else rng.randint(0, 2)
    ...     policy = min(trainer - lag, 39 - lag) if i >= 4000 else trainer - lag
    ...     return SimpleNamespace(policy_version=policy, trainer_version=trainer)
    >>> detector = PolicyStaleness()
    >>> for i in range(7000):
    ...     detector.update(episode(i))
    ...     if detector.alarm:
    ...         print(i, detector.alarm.summary)
    ... # doctest: +NORMALIZE_WHITESPACE
    2081 staleness above 4 versions in 16% of the last 500 episodes (lower bound 10%);
    median 1, p90 6, max 8
    6000 policy_version stuck at 34 for 2000 episodes while trainer_version advanced to 60
    """

    __slots__ = (
        "_i",
        "_max_policy",
        "_max_trainer",
        "_pos",
        "_rate",
        "_ring",
        "_stuck",
        "_waiting_since",
        "arl0",
        "heartbeat_events",
        "max_staleness",
        "min_samples",
        "quantile",
        "window",
    )

    detector_id: ClassVar[str] = "policy_staleness"
    severity: ClassVar[Severity] = "warning"
    fixed_threshold: ClassVar[bool] = True  # 1 - quantile

    def __init__(
        self,
        max_staleness: int = 4,
        quantile: float = 0.9,
        window: int = 500,
        min_samples: int = 50,
        heartbeat_events: int = 2000,
        arl0: float = 1_000_000,
    ) -> None:
        check_param(
            isinstance(max_staleness, int) and 0 <= max_staleness < _CLIP,
            "max_staleness",
            f"an int in [0, {_CLIP})",
            max_staleness,
        )
        check_param(0.0 < quantile < 1.0, "quantile", "a number in (0, 1)", quantile)
        check_param(
            isinstance(heartbeat_events, int) and heartbeat_events >= 1,
            "heartbeat_events",
            "an int >= 1",
            heartbeat_events,
        )
        self.max_staleness = max_staleness
        self.quantile = quantile
        self.window = window
        self.min_samples = min_samples
        self.heartbeat_events = heartbeat_events
        self.arl0 = arl0
        self._reset()

    def _reset(self) -> None:
        self._rate = RateBound(
            threshold=1.0 - self.quantile,
            window=self.window,
            min_samples=self.min_samples,
            arl0=self.arl0,
        )
        self._ring = bytearray()  # the last `window` staleness values, grown as they come
        self._pos = 0
        self._i = 0
        self._max_policy = -(1 << 62)
        self._max_trainer = -(1 << 62)
        self._waiting_since = -1
        self._stuck = False
        self._alarm = None

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        policy = event.policy_version
        trainer = event.trainer_version
        if policy is None or trainer is None:
            return
        staleness = trainer - policy
        clipped = _CLIP if staleness > _CLIP else staleness if staleness > 0 else 0
        pos = self._pos
        ring = self._ring
        if pos < len(ring):
            ring[pos] = clipped
        else:
            ring.append(clipped)
        pos += 1
        self._pos = 0 if pos == self.window else pos
        rate = self._rate
        rate.update(staleness > self.max_staleness)
        if rate._drift:  # the slot, not the property: this is the per-event path
            self._alarm = self._stale_alarm()
        i = self._i = self._i + 1
        if policy > self._max_policy:
            self._max_policy = policy
            self._waiting_since = -1
            self._stuck = False
        if trainer > self._max_trainer:
            self._max_trainer = trainer
            if self._waiting_since < 0:
                self._waiting_since = i
        if (
            not self._stuck
            and self._waiting_since >= 0
            and i - self._waiting_since >= self.heartbeat_events
        ):
            self._stuck = True
            if self._alarm is None:
                self._alarm = self._stuck_alarm()

    def quantiles(self) -> tuple[int, int, int]:
        """Median, ``quantile`` and maximum of the staleness over the window; O(window)."""
        n = self._rate.n
        if n == 0:
            return 0, 0, 0
        values = sorted(self._ring)
        upper = min(int(self.quantile * n), n - 1)
        return values[n // 2], values[upper], values[-1]

    def _stale_alarm(self) -> Alarm:
        rate = self._rate
        median, upper, top = self.quantiles()
        summary = (
            f"staleness above {self.max_staleness} versions in {percent(rate.rate)} of the "
            f"last {rate.n} episodes (lower bound {percent(rate.statistic)}); median {median}, "
            f"p{self.quantile * 100:g} {upper}, max {top}"
        )
        return Alarm(
            detector=self.detector_id,
            severity=self.severity,
            value=rate.statistic,
            threshold=rate.threshold,
            summary=summary,
            direction="up",
        )

    def _stuck_alarm(self) -> Alarm:
        lag = self._i - self._waiting_since
        summary = (
            f"policy_version stuck at {self._max_policy} for {lag} episodes while "
            f"trainer_version advanced to {self._max_trainer}"
        )
        return Alarm(
            detector=self.detector_id,
            severity=self.severity,
            value=float(lag),
            threshold=float(self.heartbeat_events),
            summary=summary,
            direction="up",
        )

    @property
    def rate(self) -> RateBound:
        """The test of the share of episodes staler than ``max_staleness``."""
        return self._rate

    @property
    def stuck(self) -> bool:
        """Whether the heartbeat is missing (the policy version does not follow the trainer)."""
        return self._stuck

    @property
    def active(self) -> bool:
        return self._rate.active or self._stuck

    @property
    def statistic(self) -> float:
        return self._rate.statistic

    @property
    def threshold(self) -> float:
        return self._rate.threshold
