"""``invalid_reward``: rewards outside the declared range, piled at a bound, or quantised."""

from __future__ import annotations

from array import array
from typing import Any, ClassVar, Final

from detectors._base import _FailureModeDetector, check_param, percent
from detectors.alarm import Alarm, Severity
from detectors.bernoulli_cusum import BernoulliCUSUM
from detectors.invariant import InvariantCounter
from detectors.protocol import EventLike

__all__ = ["InvalidReward"]

#: Relative slack of the range check, so that float rounding at a bound is not a violation.
_SLACK: Final = 1e-9
#: Baseline repeat share below which a reward counts as continuous (see the class docstring).
_CONTINUOUS: Final = 0.5


class InvalidReward(_FailureModeDetector):
    """Pages on rewards outside their declared range; warns on mass at a bound or on few values.

    Three checks on the ``reward`` of each scored episode:

    - **Range** (``page``): ``reward`` below ``reward_min`` or above ``reward_max`` (when the
      event declares them), or not finite. An exact invariant counted by
      :class:`~detectors.invariant.InvariantCounter`: the first violation after ``quiet``
      clean episodes alarms, and the check spends no budget.
    - **Mass at a bound** (``warning``): the share of completed episodes whose reward equals
      a declared bound. Binary rewards sit at the bounds by design, and a healthy continuous
      reward has its own share there, so the share is not compared with a fixed level: a
      :class:`~detectors.bernoulli_cusum.BernoulliCUSUM` detects a rise against its own
      baseline (a clipping bug or a default score moves it; a constant share never alarms).
    - **Few distinct values** (``warning``): the share of completed episodes whose reward,
      not at a declared bound, repeats a value among the last ``memory`` such rewards, last
      seen in *another group* (all equal rewards of one group are
      ``zero_variance_groups``' business, values at a bound the previous check's). For a
      continuous reward that share is small; rounding or quantisation makes it jump. The
      same kind of CUSUM detects the rise; it alarms only when the baseline share was below
      one half, i.e. for a reward that looked continuous (a discrete reward, such as a share
      of passed tests, repeats by nature).

    Truncated, failed and aborted episodes do not enter the two shares (their zeros are
    ``truncation_rate``'s and ``masked_failure``'s), nor do eval episodes. The two CUSUMs
    share the budget (each gets ``2 * arl0``).

    ``statistic`` and ``threshold`` are those of the larger CUSUM (the range check alarms on
    its own; its violations are in ``range_violations``). ``active`` holds while the range is
    being violated (within ``quiet`` episodes of a violation) or a detected rise persists.

    Parameters
    ----------
    quiet
        Consecutive clean episodes that end a span of range violations.
    odds_ratio
        Odds ratio of the rise of a share that the CUSUMs are tuned to.
    warmup
        Episodes that estimate each baseline share.
    baseline_halflife
        Half-life, in episodes, of the baseline shares.
    memory
        Recent rewards a new reward is compared with (a ring and a count per value).
    batch_size
        Episodes per batch of the CUSUMs; batches spanning a few groups let them allow for
        the correlation of the episodes of one group (see :class:`BernoulliCUSUM`).
    arl0
        False-alarm budget: expected episodes between false alarms of the two CUSUMs together.

    Examples
    --------
    A continuous reward in [0, 1] that starts being clipped at episode 3000 (a third of the
    rewards end up at 1.0), and an out-of-range reward at episode 5000:

    >>> import random
    >>> from types import SimpleNamespace
    >>> from detectors.invalid_reward import InvalidReward
    >>> rng = random.Random(6)
    >>> def episode(i):
    ...     reward = rng.betavariate(2, 3)
    ...     if i >= 3000:
    ...         reward = min(1.0, reward * 1.6)
    ...     if i == 5000:
    ...         reward = 1.5
    ...     return SimpleNamespace(reward=reward, reward_min=0.0, reward_max=1.0,
    ...                            status="completed", phase="train", group_id=None)
    >>> detector = InvalidReward()
    >>> for i in range(6000):
    ...     detector.update(episode(i))
    ...     if detector.alarm:
    ...         print(i, detector.alarm.severity, detector.alarm.summary)
    ... # doctest: +NORMALIZE_WHITESPACE
    3071 warning share of rewards at a declared bound rose from 0.2% to about 19%
    5000 page reward 1.5 outside the declared range [0, 1]
    """

    __slots__ = (
        "_bound",
        "_counts",
        "_pos",
        "_range",
        "_recent",
        "_repeat",
        "arl0",
        "baseline_halflife",
        "batch_size",
        "memory",
        "odds_ratio",
        "quiet",
        "warmup",
    )

    detector_id: ClassVar[str] = "invalid_reward"
    severity: ClassVar[Severity] = "page"
    fixed_threshold: ClassVar[bool] = True  # h of the bound-share CUSUM, from arl0

    def __init__(
        self,
        quiet: int = 1000,
        odds_ratio: float = 3.0,
        warmup: int = 500,
        baseline_halflife: float = 5000.0,
        memory: int = 256,
        batch_size: int = 16,
        arl0: float = 1_000_000,
    ) -> None:
        check_param(isinstance(memory, int) and memory >= 1, "memory", "an int >= 1", memory)
        self.quiet = quiet
        self.odds_ratio = odds_ratio
        self.warmup = warmup
        self.baseline_halflife = baseline_halflife
        self.memory = memory
        self.batch_size = batch_size
        self.arl0 = arl0
        self._reset()

    def _reset(self) -> None:
        self._range = InvariantCounter(quiet=self.quiet)
        self._bound = self._share_test()
        self._repeat = self._share_test()
        # the last `memory` rewards that are not at a bound (grown to `memory`, then a ring;
        # C doubles: 8 bytes a value instead of a float object each), and per value:
        # [count, group]
        self._recent = array("d")
        self._pos = 0
        self._counts: dict[float, list[Any]] = {}
        self._alarm = None

    def _share_test(self) -> BernoulliCUSUM:
        return BernoulliCUSUM(
            odds_ratio=self.odds_ratio,
            arl0=2.0 * self.arl0,
            warmup=self.warmup,
            baseline_halflife=self.baseline_halflife,
            batch_size=self.batch_size,
        )

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        reward = event.reward
        if reward is None:
            return
        low = event.reward_min
        high = event.reward_max
        # A reward within [low, high] is within the slack (the slack only widens the range):
        # the slack is computed for a reward outside only (this is the per-event path).
        bad = reward - reward != 0.0  # NaN or infinite
        if (
            not bad
            and low is not None
            and reward < low
            and reward < low - _SLACK * (1.0 + abs(low))
        ):
            bad = True
        if (
            not bad
            and high is not None
            and reward > high
            and reward > high + _SLACK * (1.0 + abs(high))
        ):
            bad = True
        counter = self._range
        # A clean episode in a quiet span changes nothing (the slot, not ``active``: this is
        # the per-event path).
        if bad or counter._clean < counter.quiet:
            counter.update(bad)
        if bad:
            if counter._drift:  # the slots, not the properties: this is the per-event path
                self._alarm = self._range_alarm(reward, low, high)
            return
        if event.status != "completed" or event.phase == "eval":
            return
        if low is not None or high is not None:
            at_bound = reward in (low, high)
            bound = self._bound
            bound.update(at_bound)
            if bound._drift:
                self._alarm = self._rise_alarm(bound, "share of rewards at a declared bound")
            if at_bound:
                return
        # The repeat share (inlined, not a helper: most episodes of a continuous reward
        # come here).
        group_id = event.group_id
        counts = self._counts
        ring = self._recent
        pos = self._pos
        # A test, not an IndexError caught: compiled, each exception builds a traceback
        # (about a microsecond), and the ring grows one event at a time to ``memory``.
        if pos < len(ring):
            old = ring[pos]
            entry = counts[old]
            if entry[0] == 1:
                del counts[old]
            else:
                entry[0] -= 1
            ring[pos] = reward
        else:  # only while the ring grows to ``memory``
            ring.append(reward)
        pos += 1
        self._pos = 0 if pos == self.memory else pos
        found = counts.get(reward)
        if found is None:
            counts[reward] = [1, group_id]
            repeat = False
        else:
            repeat = group_id is None or found[1] != group_id
            found[0] += 1
            found[1] = group_id
        cusum = self._repeat
        cusum.update(repeat)
        # Discrete rewards repeat by nature: only a reward that looked continuous can collapse.
        if cusum._drift and self._alarm is None and cusum.baseline_rate < _CONTINUOUS:
            self._alarm = self._rise_alarm(
                cusum, "share of rewards repeating a recent value of another group"
            )

    def _range_alarm(self, reward: float, low: float | None, high: float | None) -> Alarm:
        if reward - reward != 0.0:
            summary = f"reward {reward} is not finite"
        else:
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf" if high is None else f"{high:g}"
            summary = f"reward {reward:g} outside the declared range [{lo}, {hi}]"
        return Alarm(
            detector=self.detector_id,
            severity="page",
            value=1.0,
            threshold=0.0,
            summary=summary,
        )

    def _rise_alarm(self, cusum: BernoulliCUSUM, what: str) -> Alarm:
        before = cusum.baseline_rate
        after = cusum.post_change_rate
        return Alarm(
            detector=self.detector_id,
            severity="warning",
            value=cusum.statistic,
            threshold=cusum.threshold,
            summary=f"{what} rose from {percent(before)} to about {percent(after)}",
            direction="up",
        )

    @property
    def range_violations(self) -> int:
        """Episodes with a reward outside the declared range (or not finite), in total."""
        return self._range.violations

    @property
    def bound_share(self) -> BernoulliCUSUM:
        """The change detector of the share of rewards at a declared bound."""
        return self._bound

    @property
    def repeat_share(self) -> BernoulliCUSUM:
        """The change detector of the share of rewards repeating another group's value."""
        return self._repeat

    @property
    def active(self) -> bool:
        return self._range.active or self._bound.active or self._repeat.active

    @property
    def statistic(self) -> float:
        """The larger statistic of the bound-share and repeat-share tests (``max``, written
        out: read for every segment on each scrape)."""
        stat = self._bound.statistic
        repeat = self._repeat.statistic
        return repeat if repeat > stat else stat

    @property
    def threshold(self) -> float:
        return self._bound.threshold
