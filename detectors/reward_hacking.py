"""``reward_hacking``: the proxy reward rises while the real objective does not."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

from detectors._base import _FailureModeDetector, _pickled_names, check_param
from detectors.alarm import Alarm, Severity
from detectors.cusum import MeanShiftCUSUM
from detectors.protocol import EventLike

__all__ = ["RewardHacking"]

#: The signals this detector batches itself, in the order of ``_sums``.
_SIGNALS = ("reward", "length", "repetition")
#: Batch means averaged into one observation of the slow reward detector.
SLOW_MEANS: Final = 8
#: Most component names remembered as not being a correctness one (names beyond are checked
#: as they come, not remembered): a trainer that puts an id in the names must not grow the
#: state without bound.
MAX_NAMES: Final = 64
#: Signals whose detections are checked by the joint rules 1 and 2.
_JOINT = frozenset(("reward", "slow_reward", "length", "repetition", "eval"))


class RewardHacking(_FailureModeDetector):
    """Pages when a reward rise coincides with a signature of gaming the reward.

    Change detectors (:class:`~detectors.cusum.MeanShiftCUSUM` on means of ``batch_size``,
    baselines that absorb slow drift) watch, on training episodes, the reward, the
    log-length ``log1p(completion_tokens)``, the ``repetition`` score and each reward
    component (at most ``max_components``), and the reward of ``phase: "eval"`` episodes.
    Three joint rules, where *concurrent* means detections at most ``within`` events apart:

    1. the reward rises concurrently with a rise of the completion length or of the
       repetition (longer, more repetitive answers that score higher). A second reward
       detector, on means of ``SLOW_MEANS`` batches and with a baseline that follows the
       stream more slowly (half-life ``slow_halflife``), sees a rise spread over a few
       thousand episodes that the first one absorbs; it counts only together with a rise of
       the repetition, since in healthy training the reward and the length often wander up
       together at that pace (longer reasoning that solves more), while more repetitive
       answers are a degenerate policy;
    2. the training reward rises concurrently with a fall of the eval reward;
    3. a reward component rises while the correctness component (a name containing one of
       ``correctness``) falls concurrently, or does not rise within ``within`` events (the
       alarm then comes ``within`` events after the rise). Off, and the components are not
       even tracked, while the segment has not shown a correctness component. When several
       names qualify, the first seen is the correctness component (in the order of the
       events and of their ``reward_components``), in every process and after a restore.

    Budget: a false page needs a false rise of the reward (rules 1 and 2, confirmed by a
    second, concurrent false detection, which makes them far rarer than each detector's
    own rate) or of a component (rule 3, confirmed by the usual silence of the correctness
    component). The two reward, length, repetition and eval detectors each get ``arl0``; the
    component detectors share ``arl0`` (each gets ``arl0 * max_components``), so the false
    page rate stays below ``1 / arl0``.

    One change gives one alarm: no new alarm while ``active``, which holds from the alarm
    while the detector that triggered it (the reward, or the component) stays more than
    ``k`` pre-change standard deviations above its pre-change mean. ``statistic`` and
    ``threshold`` are those of the reward detector.

    Parameters
    ----------
    within
        Events within which two detections count as concurrent.
    correctness
        Substrings that mark a reward component as the correctness component.
    max_components
        Most reward components watched (the first seen).
    k
        Reference value of the change detectors, in standard deviations.
    warmup
        Episodes that estimate each baseline.
    baseline_halflife
        Half-life, in episodes, of the baselines.
    slow_halflife
        Half-life, in episodes, of the baseline of the slow reward detector (rule 1 with the
        repetition only).
    min_std
        Floor of the standard deviations (in data units; log-tokens for the length).
    batch_size
        Consecutive values averaged into one CUSUM observation.
    arl0
        False-alarm budget: expected events between false pages.

    Examples
    --------
    From episode 3000 on, the reward rises from 0.4 to 0.8 and the answers get twice as
    long:

    >>> import random
    >>> from types import SimpleNamespace
    >>> from detectors.reward_hacking import RewardHacking
    >>> rng = random.Random(10)
    >>> def episode(i):
    ...     hacked = i >= 3000
    ...     return SimpleNamespace(
    ...         phase="train", reward=float(rng.random() < (0.8 if hacked else 0.4)),
    ...         completion_tokens=int(rng.lognormvariate(6.5 + 0.7 * hacked, 0.5)),
    ...         repetition=None, reward_components=None)
    >>> detector = RewardHacking()
    >>> for i in range(5000):
    ...     detector.update(episode(i))
    ...     if detector.alarm:
    ...         print(i, detector.alarm.severity, detector.alarm.summary)
    ... # doctest: +NORMALIZE_WHITESPACE
    3055 page reward rose from 0.393 to about 0.786 with completion length (672 -> about 996
    tokens), 24 events apart
    """

    __slots__ = (
        "_components",
        "_correct",
        "_counts",
        "_eval",
        "_length",
        "_names",
        "_parts",
        "_pending",
        "_ref",
        "_repetition",
        "_reward",
        "_seen",
        "_slow",
        "_sums",
        "_t",
        "arl0",
        "baseline_halflife",
        "batch_size",
        "correctness",
        "k",
        "max_components",
        "min_std",
        "slow_halflife",
        "warmup",
        "within",
    )

    detector_id: ClassVar[str] = "reward_hacking"
    severity: ClassVar[Severity] = "page"
    fixed_threshold: ClassVar[bool] = True  # h of the reward CUSUM, from arl0

    def __init__(
        self,
        within: int = 2500,
        correctness: Sequence[str] = ("correct",),
        max_components: int = 8,
        k: float = 0.5,
        warmup: int = 512,
        baseline_halflife: float = 1000.0,
        slow_halflife: float = 4000.0,
        min_std: float = 0.05,
        batch_size: int = 8,
        arl0: float = 1_000_000,
    ) -> None:
        check_param(isinstance(within, int) and within >= 1, "within", "an int >= 1", within)
        check_param(
            isinstance(correctness, tuple) and all(isinstance(c, str) and c for c in correctness),
            "correctness",
            "a tuple of non-empty strings",
            correctness,
        )
        check_param(
            isinstance(max_components, int) and max_components >= 1,
            "max_components",
            "an int >= 1",
            max_components,
        )
        self.within = within
        self.correctness = tuple(correctness)
        self.max_components = max_components
        self.k = k
        self.warmup = warmup
        self.baseline_halflife = baseline_halflife
        self.slow_halflife = slow_halflife
        self.min_std = min_std
        self.batch_size = batch_size
        self.arl0 = arl0
        self._reset()

    def _cusum(
        self, arl0: float, batched: bool = True, halflife: float | None = None, means: int = 1
    ) -> MeanShiftCUSUM:
        halflife = self.baseline_halflife if halflife is None else halflife
        if batched:
            return MeanShiftCUSUM(
                k=self.k,
                arl0=arl0,
                warmup=self.warmup,
                baseline_halflife=halflife,
                min_std=self.min_std,
                batch_size=self.batch_size,
            )
        # The same test on batch means that this detector forms itself (the per-event path
        # adds to a sum instead of calling the CUSUM).
        b = self.batch_size
        return MeanShiftCUSUM(
            k=self.k,
            arl0=arl0 / b,
            warmup=max(-(-self.warmup // b), 2 * means),
            baseline_halflife=halflife / b,
            min_std=self.min_std / math.sqrt(b),
            batch_size=means,
        )

    def _reset(self) -> None:
        self._reward = self._cusum(self.arl0, batched=False)
        self._slow = self._cusum(
            self.arl0, batched=False, halflife=self.slow_halflife, means=SLOW_MEANS
        )
        self._length = self._cusum(self.arl0, batched=False)
        self._repetition = self._cusum(self.arl0, batched=False)
        self._eval = self._cusum(self.arl0)
        # running sums and counts of the current batch: reward, log-length, repetition
        self._sums = [0.0, 0.0, 0.0]
        self._counts = [0, 0, 0]
        self._components: dict[str, MeanShiftCUSUM] = {}
        self._parts: dict[str, list[Any]] = {}  # per component: [sum, count] of its batch
        self._correct = ""
        # component names seen that are not a correctness one (at most MAX_NAMES; emptied
        # once one is): a dict, first seen first, like the choice it serves
        self._names: dict[str, None] = {}
        self._t = 0
        # signal -> (event index, mean before, mean after) of its latest detection
        self._seen: dict[str, tuple[int, float, float]] = {}
        self._pending: tuple[int, str] | None = None
        self._ref: tuple[str, float, float] | None = None
        self._alarm = None

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        t = self._t = self._t + 1
        reward = event.reward
        if event.phase == "eval":
            if reward is not None:
                cusum = self._eval
                cusum.update(reward)
                if cusum._drift:  # the slots, not the properties: this is the per-event path
                    self._detected("eval", cusum)
        else:
            sums = self._sums
            counts = self._counts
            b = self.batch_size
            if reward is not None:
                sums[0] += reward
                counts[0] += 1
                if counts[0] == b:
                    self._feed(0)
            tokens = event.completion_tokens
            if tokens is not None:
                sums[1] += math.log1p(tokens)
                counts[1] += 1
                if counts[1] == b:
                    self._feed(1)
            repetition = event.repetition
            if repetition is not None:
                sums[2] += repetition
                counts[2] += 1
                if counts[2] == b:
                    self._feed(2)
            components = event.reward_components
            # Rule 3 needs a correctness component: without one the components are skipped.
            if components and (
                self._correct or not all(name in self._names for name in components)
            ):
                self._update_components(components)
        pending = self._pending
        if pending is not None and t >= pending[0]:
            self._pending = None
            self._component_rule(pending[1], timed_out=True)
        if self._ref is not None and not self._displaced():
            self._ref = None

    def _feed(self, i: int) -> None:
        """Hand a full batch of signal ``i`` to its CUSUM."""
        mean = self._sums[i] / self._counts[i]
        self._sums[i] = 0.0
        self._counts[i] = 0
        signal, cusum = _SIGNALS[i], (self._reward, self._length, self._repetition)[i]
        cusum.update(mean)
        if cusum._drift:
            self._detected(signal, cusum)
        if i == 0:
            slow = self._slow
            slow.update(mean)
            if slow._drift:
                self._detected("slow_reward", slow)

    def _update_components(self, components: Mapping[str, float | None]) -> None:
        if not self._correct:
            names = self._names
            for name in components:
                if name in names:
                    continue
                if any(c in name for c in self.correctness):
                    self._correct = name  # the first qualifying name seen
                    names.clear()
                    break
                if len(names) < MAX_NAMES:
                    names[name] = None
            if not self._correct:
                return
        parts = self._parts
        b = self.batch_size
        for name, value in components.items():
            if value is None:
                continue
            part = parts.get(name)
            if part is None:
                if len(parts) >= self.max_components:
                    continue
                part = parts[name] = [0.0, 0]
                self._components[name] = self._cusum(self.arl0 * self.max_components, False)
            part[0] += value
            part[1] += 1
            if part[1] == b:
                cusum = self._components[name]
                cusum.update(part[0] / b)
                part[0] = 0.0
                part[1] = 0
                if cusum._drift:  # the slot, not the property: this is the per-event path
                    self._detected(f"component:{name}", cusum)

    def __setstate__(self, state: list[Any] | tuple[None, dict[str, Any]] | dict[str, Any]) -> None:
        if isinstance(state, list):
            state = dict(zip(_pickled_names(type(self)), state, strict=True))
        elif isinstance(state, tuple):
            state = state[1]
        names = state.get("_names")
        if isinstance(names, set | frozenset):  # formats 2 and 3: every name seen, as a set
            kept = [] if state.get("_correct") else sorted(names)[:MAX_NAMES]
            state = {**state, "_names": dict.fromkeys(kept)}
        super().__setstate__(state)

    def _detected(self, signal: str, cusum: MeanShiftCUSUM) -> None:
        direction = cusum.direction
        before, after = cusum.baseline_mean, cusum.post_change_mean
        key = f"{signal}:{direction}"
        self._seen[key] = (self._t, before, after)
        if direction == "up":  # the pre-change level, for `active` after an alarm
            self._seen[f"ref:{signal}"] = (0, before, cusum.baseline_std)
        if signal in _JOINT:
            self._joint_rules()
        elif signal == f"component:{self._correct}":
            if direction == "down" and self._pending is not None:
                name = self._pending[1]
                self._pending = None
                self._component_rule(name, timed_out=False)
            elif direction == "up":
                self._pending = None
        elif direction == "up":
            name = signal.partition(":")[2]
            if self._correct and not self._component_rule(name, timed_out=False):
                self._pending = (self._t + self.within, name)

    def _recent(self, key: str) -> tuple[int, float, float] | None:
        seen = self._seen.get(key)
        if seen is None or self._t - seen[0] > self.within:
            return None
        return seen

    def _joint_rules(self) -> None:
        if self.active:
            return
        pairs = (
            ("reward", "length", "completion length"),
            ("reward", "repetition", "repetition"),
            ("slow_reward", "repetition", "repetition"),
        )
        for source, signal, what in pairs:
            rise = self._recent(f"{source}:up")
            other = self._recent(f"{signal}:up")
            if rise is None or other is None:
                continue
            if signal == "length":
                detail = f"{math.expm1(other[1]):.0f} -> about {math.expm1(other[2]):.0f} tokens"
            else:
                detail = f"{other[1]:.3g} -> about {other[2]:.3g}"
            gap = abs(rise[0] - other[0])
            self._raise(
                source,
                f"reward rose from {rise[1]:.3g} to about {rise[2]:.3g} with {what} "
                f"({detail}), {gap} events apart",
            )
            # one alarm per change: these two detections do not pair again
            del self._seen[f"{source}:up"], self._seen[f"{signal}:up"]
            return
        rise = self._recent("reward:up")
        fall = self._recent("eval:down")
        if rise is not None and fall is not None:
            self._raise(
                "reward",
                f"training reward rose from {rise[1]:.3g} to about {rise[2]:.3g} while the eval "
                f"reward fell from {fall[1]:.3g} to about {fall[2]:.3g}",
            )

    def _component_rule(self, name: str, timed_out: bool) -> bool:
        """Rule 3 for the latest rise of component ``name``; False while undecided."""
        rise = self._seen.get(f"component:{name}:up")
        correct = self._correct
        if rise is None or not correct or self.active:
            return True
        when = rise[0]
        up = self._seen.get(f"component:{correct}:up")
        if up is not None and abs(up[0] - when) <= self.within:
            return True  # correctness rose with it: learning, not hacking
        fall = self._seen.get(f"component:{correct}:down")
        if fall is not None and abs(fall[0] - when) <= self.within:
            how = f"'{correct}' fell from {fall[1]:.3g} to about {fall[2]:.3g}"
        elif timed_out:
            how = f"'{correct}' did not rise within {self.within} events"
        else:
            return False
        self._raise(
            f"component:{name}",
            f"reward component '{name}' rose from {rise[1]:.3g} to about {rise[2]:.3g} while {how}",
        )
        return True

    def _raise(self, signal: str, summary: str) -> None:
        ref = self._seen.get(f"ref:{signal}")
        if ref is not None:
            self._ref = (signal, ref[1], ref[2])
        cusum = self._reward
        self._alarm = Alarm(
            detector=self.detector_id,
            severity=self.severity,
            value=cusum.statistic,
            threshold=cusum.threshold,
            summary=summary,
            direction="up",
        )

    @property
    def reward_cusum(self) -> MeanShiftCUSUM:
        """The change detector of the training reward."""
        return self._reward

    def _displaced(self) -> bool:
        """Whether the detector behind the latest alarm is still above its pre-change level."""
        if self._ref is None:
            return False
        signal, mean, std = self._ref
        if signal == "reward":
            cusum = self._reward
        elif signal == "slow_reward":
            cusum = self._slow
        else:
            cusum = self._components[signal.partition(":")[2]]
        if cusum.warming_up or cusum._drift:
            return True
        return cusum.baseline_mean > mean + self.k * std

    @property
    def active(self) -> bool:
        return self._ref is not None

    @property
    def statistic(self) -> float:
        return self._reward.statistic

    @property
    def threshold(self) -> float:
        return self._reward.threshold
