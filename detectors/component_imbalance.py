"""``component_imbalance``: a reward component saturates or dominates the reward's variance."""

from __future__ import annotations

import math
from typing import ClassVar

from detectors._base import Pickled, _FailureModeDetector, check_param
from detectors.alarm import Alarm, Severity
from detectors.cusum import MeanShiftCUSUM, cusum_threshold
from detectors.protocol import EventLike

__all__ = ["ComponentImbalance"]


class _Component(Pickled):
    """Running sums of one component over the current batch, and its change detectors."""

    __slots__ = ("count", "share", "spread", "squares", "total")

    def __init__(
        self, spread: MeanShiftCUSUM | None = None, share: MeanShiftCUSUM | None = None
    ) -> None:
        # (the defaults serve unpickling, which calls the constructor when compiled)
        self.spread = spread if spread is not None else MeanShiftCUSUM()
        self.share = share if share is not None else MeanShiftCUSUM()
        self.count = 0
        self.total = 0.0
        self.squares = 0.0


class ComponentImbalance(_FailureModeDetector):
    """Warns when a reward component saturates or comes to dominate the reward's variance.

    Per reward component (the first ``max_components`` names seen), the values of completed
    training episodes (truncated and failed ones carry zeros in every component, which would
    hide a saturation) are summed over batches of ``batch`` episodes; the per-event work is three
    additions per component. At the end of each batch, for every component present in at
    least half of it, two change detectors (:class:`~detectors.cusum.MeanShiftCUSUM`, one
    observation per batch, baselines that absorb slow drift) are updated:

    - on the log of the batch variance (floored at ``min_std**2``): a **saturation** alarm
      when it drops and the component's standard deviation falls to at most ``collapse``
      times its baseline while another component still varies (a format reward that every
      answer now gets, a rubric item stuck at one value). The drop is detected by the change
      detector at the budget; ``collapse`` only keeps a small, significant narrowing from
      being called a saturation. A component that reaches its maximum on most but not all
      episodes (97% of the answers get the full format reward) narrows to about a third,
      not tenfold, and is reported as saturating, rather than later as the other component
      coming to dominate;
    - on the component's share of the summed variances of all components: a **dominance**
      alarm when it rises and the new share is above ``dominance`` (one component carries
      the learning signal, e.g. a format reward outweighing correctness).

    A stable imbalance is not an alarm; a change towards one is. Nothing is tested while
    fewer than two components are present. Saturation is checked first (a saturated
    component makes another one dominate; the root cause is reported), and no alarm is
    raised while an earlier change is in progress. Budget: a batch is one observation, so each
    detector gets ``arl0 / batch`` observations, and the ``2 * max_components`` detectors
    share it. ``statistic`` is the largest variance-CUSUM statistic and ``threshold`` its
    decision interval. ``active`` holds while a component's detected change persists.

    Parameters
    ----------
    batch
        Episodes per batch (one observation of each detector).
    dominance
        Share of the summed variances above which a risen share alarms.
    collapse
        Ratio of the new to the baseline standard deviation at or below which a drop of the
        variance counts as saturation.
    min_std
        Floor of a component's standard deviation (in reward units).
    max_components
        Most components watched.
    k
        Reference value of the change detectors, in standard deviations.
    warmup
        Batches that estimate each baseline.
    baseline_halflife
        Half-life, in batches, of the baselines.
    arl0
        False-alarm budget: expected episodes between false alarms.

    Examples
    --------
    A binary ``correct`` and a ``format`` component that is 1 for 70% of the answers, until
    episode 6000, after which every answer gets the format reward:

    >>> import random
    >>> from types import SimpleNamespace
    >>> from detectors.component_imbalance import ComponentImbalance
    >>> rng = random.Random(13)
    >>> def episode(i):
    ...     fmt = 1.0 if i >= 6000 else float(rng.random() < 0.7)
    ...     parts = {"correct": float(rng.random() < 0.4), "format": fmt}
    ...     return SimpleNamespace(phase="train", status="completed", reward_components=parts)
    >>> detector = ComponentImbalance()
    >>> for i in range(9000):
    ...     detector.update(episode(i))
    ...     if detector.alarm:
    ...         print(i, detector.alarm.summary)
    ... # doctest: +NORMALIZE_WHITESPACE
    6527 reward component 'format' saturated: std 0.4 -> 0.0034 (mean 1) while correct
    still varies
    """

    __slots__ = (
        "_episodes",
        "_events",
        "_floor",
        "_h",
        "_parts",
        "arl0",
        "baseline_halflife",
        "batch",
        "collapse",
        "dominance",
        "k",
        "max_components",
        "min_std",
        "warmup",
    )

    detector_id: ClassVar[str] = "component_imbalance"
    severity: ClassVar[Severity] = "warning"
    fixed_threshold: ClassVar[bool] = True  # h, from arl0

    def __init__(
        self,
        batch: int = 128,
        dominance: float = 0.9,
        collapse: float = 0.5,
        min_std: float = 1e-3,
        max_components: int = 16,
        k: float = 0.5,
        warmup: int = 16,
        baseline_halflife: float = 64.0,
        arl0: float = 1_000_000,
    ) -> None:
        check_param(isinstance(batch, int) and batch >= 8, "batch", "an int >= 8", batch)
        check_param(0.5 < dominance < 1.0, "dominance", "a number in (0.5, 1)", dominance)
        check_param(0.0 < collapse < 1.0, "collapse", "a number in (0, 1)", collapse)
        check_param(min_std > 0 and math.isfinite(min_std), "min_std", "a positive number", min_std)
        check_param(
            isinstance(max_components, int) and max_components >= 2,
            "max_components",
            "an int >= 2",
            max_components,
        )
        check_param(
            arl0 > batch and math.isfinite(arl0), "arl0", f"a finite number > batch ({batch})", arl0
        )
        self.batch = batch
        self.dominance = dominance
        self.collapse = collapse
        self.min_std = min_std
        self.max_components = max_components
        self.k = k
        self.warmup = warmup
        self.baseline_halflife = baseline_halflife
        self.arl0 = arl0
        self._floor = min_std * min_std
        self._h = cusum_threshold(k, self._per_detector_arl0)
        self._detector(min_std)  # checks k, warmup and baseline_halflife now
        self._reset()

    def _reset(self) -> None:
        self._parts: dict[str, _Component] = {}
        self._events = 0
        # component name -> (kind, pre-change mean, pre-change std) of a change in progress
        self._episodes: dict[str, tuple[str, float, float]] = {}
        self._alarm = None

    def _detector(self, min_std: float) -> MeanShiftCUSUM:
        return MeanShiftCUSUM(
            k=self.k,
            arl0=self._per_detector_arl0,
            warmup=self.warmup,
            baseline_halflife=self.baseline_halflife,
            min_std=min_std,
        )

    @property
    def _per_detector_arl0(self) -> float:
        return self.arl0 * 2 * self.max_components / self.batch

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        components = event.reward_components
        if not components or event.status != "completed" or event.phase == "eval":
            return
        parts = self._parts
        for name, value in components.items():
            if value is None:
                continue
            part = parts.get(name)
            if part is None:
                if len(parts) >= self.max_components:
                    continue
                part = parts[name] = _Component(self._detector(0.05), self._detector(0.01))
            part.count += 1
            part.total += value
            part.squares += value * value
        events = self._events + 1
        if events < self.batch:
            self._events = events
            return
        self._events = 0
        self._close_batch()

    def _close_batch(self) -> None:
        stats: dict[str, tuple[float, float]] = {}  # name -> (mean, variance)
        least = self.batch // 2
        for name, part in self._parts.items():
            if part.count >= least:
                mean = part.total / part.count
                stats[name] = (mean, max(part.squares / part.count - mean * mean, 0.0))
            part.count = 0
            part.total = 0.0
            part.squares = 0.0
        if len(stats) < 2:
            return
        summed = sum(variance for _, variance in stats.values())
        quiet = not self._episodes  # one alarm per change: none while one is in progress
        for name, (mean, variance) in stats.items():
            spread = self._parts[name].spread
            spread.update(math.log(variance + self._floor))
            if spread.drift_detected and spread.direction == "down":
                self._saturated(name, mean, stats)
        if summed > 0.0:
            for name, (_, variance) in stats.items():
                share = self._parts[name].share
                share.update(variance / summed)
                if share.drift_detected and share.direction == "up":
                    self._dominates(name)
        if not quiet:
            self._alarm = None
        self._end_episodes()

    def _saturated(self, name: str, mean: float, stats: dict[str, tuple[float, float]]) -> None:
        spread = self._parts[name].spread
        before = math.exp(spread.baseline_mean / 2.0)
        after = math.exp(spread.post_change_mean / 2.0)
        varying = [other for other, (_, v) in stats.items() if other != name and v > self._floor]
        if after > self.collapse * before or not varying or name in self._episodes:
            return
        self._episodes[name] = ("saturated", spread.baseline_mean, spread.baseline_std)
        others = ", ".join(varying)
        verb = "varies" if len(varying) == 1 else "vary"
        self._raise(
            spread,
            f"reward component '{name}' saturated: std {before:.2g} -> {after:.2g} "
            f"(mean {mean:.3g}) while {others} still {verb}",
        )

    def _dominates(self, name: str) -> None:
        share = self._parts[name].share
        after = share.post_change_mean
        if after <= self.dominance or name in self._episodes:
            return
        self._episodes[name] = ("dominates", share.baseline_mean, share.baseline_std)
        self._raise(
            share,
            f"reward component '{name}' dominates the reward variance: share "
            f"{share.baseline_mean:.0%} -> about {after:.0%}",
        )

    def _raise(self, cusum: MeanShiftCUSUM, summary: str) -> None:
        if self._alarm is not None:
            return
        self._alarm = Alarm(
            detector=self.detector_id,
            severity=self.severity,
            value=cusum.statistic,
            threshold=cusum.threshold,
            summary=summary,
            direction=cusum.direction,
        )

    def _end_episodes(self) -> None:
        """End the changes in progress whose component is back near its pre-change level."""
        for name, (kind, mean, std) in list(self._episodes.items()):
            part = self._parts[name]
            cusum = part.spread if kind == "saturated" else part.share
            if cusum.warming_up or cusum.drift_detected:
                continue
            margin = self.k * std
            if kind == "saturated":
                back = cusum.baseline_mean >= mean - margin
            else:
                back = cusum.baseline_mean <= mean + margin
            if back:
                del self._episodes[name]

    @property
    def components(self) -> tuple[str, ...]:
        """Names of the watched components."""
        return tuple(self._parts)

    @property
    def active(self) -> bool:
        return bool(self._episodes)

    @property
    def statistic(self) -> float:
        """The largest spread statistic of the components (0 before the first component).

        ``max`` over the components in order, written as a loop (read for every segment on
        each scrape: no generator).
        """
        stat: float | None = None
        for part in self._parts.values():
            value = part.spread.statistic
            if stat is None or value > stat:
                stat = value
        return 0.0 if stat is None else stat

    @property
    def threshold(self) -> float:
        return self._h
