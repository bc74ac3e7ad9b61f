"""``zero_variance_groups``: groups whose rewards are all equal carry no learning signal."""

from __future__ import annotations

from typing import ClassVar

from detectors._base import _FailureModeDetector, check_param, percent
from detectors.alarm import Alarm, Severity
from detectors.bernoulli_cusum import BernoulliCUSUM
from detectors.groups import Group, GroupAssembler
from detectors.protocol import EventLike
from detectors.rate_bound import RateBound

__all__ = ["GROUP_KINDS", "ZeroVarianceGroups"]

#: Labels of a finished group in the rate window: 0 is a group with varied rewards.
GROUP_KINDS = ("varied", "too_hard", "too_easy", "constant")
_VARIED, _TOO_HARD, _TOO_EASY, _CONSTANT = range(4)


class ZeroVarianceGroups(_FailureModeDetector):
    """Warns when the share of all-equal reward groups jumps or is high; pages at 80%.

    Episodes are assembled into groups by ``group_id`` (:class:`~detectors.groups.
    GroupAssembler`: complete at ``group_size`` episodes, given up when older than
    ``timeout_s`` of event time and ``timeout_spans`` recent group spans of episodes, at
    most ``max_open`` open groups). A finished group with at least two scored
    episodes counts as *zero-variance* when all its rewards are equal: ``too_hard`` when they
    all sit at the declared ``reward_min`` (0 without one), ``too_easy`` at ``reward_max``
    (1 without one), ``constant`` anywhere else (a constant verifier). Such groups give GRPO a
    zero advantage.

    A healthy environment has its own share (hard and easy tasks; about 20% in a typical math
    set), so two tests run on the groups:

    - a jump of the share against its own baseline (:class:`~detectors.bernoulli_cusum.
      BernoulliCUSUM`), ``warning``;
    - the share over the last ``window`` groups against an absolute level
      (:class:`~detectors.rate_bound.RateBound`): ``warning`` when its Wilson lower bound
      rises above ``threshold``, ``page`` when it reaches ``page_threshold``.

    The two tests share the budget. They run once per group, and their budget is applied
    per group, which is conservative by the group size in events. One change gives one
    warning, from whichever test sees it first, and a page when the share reaches
    ``page_threshold``. The summary splits the
    zero-variance groups of the window into ``too_hard`` / ``too_easy`` / ``constant``.
    ``statistic`` and ``threshold`` are the lower bound of the share and ``threshold``;
    ``active`` holds while the lower bound is above ``threshold`` or a detected jump persists.

    Parameters
    ----------
    threshold
        Share of zero-variance groups that must be exceeded with confidence for a warning.
    page_threshold
        Lower bound of the share from which the alarm is a page.
    window
        Finished groups the share is computed over.
    min_samples
        Groups needed before the first test of the share.
    odds_ratio
        Odds ratio of the jump the change test is tuned to.
    warmup
        Groups that estimate the baseline share of the change test.
    baseline_halflife
        Half-life, in groups, of the baseline share.
    timeout_s
        Event time after its first episode before an incomplete group may be given up.
    timeout_spans
        Episodes after its first one, in longest spans of recent complete groups, before an
        incomplete group may be given up (see :class:`~detectors.groups.GroupAssembler`).
    max_open
        Most groups assembled at once.
    arl0
        False-alarm budget: expected groups between false alarms (both tests together).

    Examples
    --------
    Groups of 8 binary rewards where 20% of the tasks are all-0 or all-1; from group 400 on
    the verifier returns 0 for every episode of most groups:

    >>> import random
    >>> from types import SimpleNamespace
    >>> from detectors.zero_variance_groups import ZeroVarianceGroups
    >>> rng = random.Random(12)
    >>> def group(g):
    ...     p = rng.choice((0.0, 1.0)) if rng.random() < 0.2 else 0.5
    ...     if g >= 400 and rng.random() < 0.9:
    ...         p = 0.0
    ...     for j in range(8):
    ...         yield SimpleNamespace(group_id=f"g{g}", group_size=8, task_id=f"t{g}",
    ...                               ts=float(g), reward=float(rng.random() < p),
    ...                               reward_min=0.0, reward_max=1.0)
    >>> detector = ZeroVarianceGroups()
    >>> for i, event in enumerate(e for g in range(800) for e in group(g)):
    ...     detector.update(event)
    ...     if detector.alarm:
    ...         print(i, detector.alarm.severity, detector.alarm.summary)
    ... # doctest: +NORMALIZE_WHITESPACE
    3391 warning share of zero-variance groups jumped from 22% to about 92%
    6375 page 90% of the last 400 groups have all-equal rewards (lower bound 80%):
    too_hard 89%, too_easy 1.2%, constant 0.0%
    """

    __slots__ = (
        "_assembler",
        "_high",
        "_jump",
        "_low",
        "_paged",
        "_rate",
        "_threshold",
        "arl0",
        "baseline_halflife",
        "max_open",
        "min_samples",
        "odds_ratio",
        "page_threshold",
        "timeout_s",
        "timeout_spans",
        "warmup",
        "window",
    )

    detector_id: ClassVar[str] = "zero_variance_groups"
    severity: ClassVar[Severity] = "warning"
    fixed_threshold: ClassVar[bool] = True  # the constructor argument

    def __init__(
        self,
        threshold: float = 0.5,
        page_threshold: float = 0.8,
        window: int = 400,
        min_samples: int = 50,
        odds_ratio: float = 3.0,
        warmup: int = 100,
        baseline_halflife: float = 1000.0,
        timeout_s: float = 60.0,
        timeout_spans: float = 4.0,
        max_open: int = 10_000,
        arl0: float = 1_000_000,
    ) -> None:
        check_param(0.0 < threshold < 1.0, "threshold", "a number in (0, 1)", threshold)
        check_param(
            threshold < page_threshold < 1.0,
            "page_threshold",
            f"a number in (threshold, 1) (({threshold}, 1))",
            page_threshold,
        )
        self._threshold = threshold
        self.page_threshold = page_threshold
        self.window = window
        self.min_samples = min_samples
        self.odds_ratio = odds_ratio
        self.warmup = warmup
        self.baseline_halflife = baseline_halflife
        self.timeout_s = timeout_s
        self.timeout_spans = timeout_spans
        self.max_open = max_open
        self.arl0 = arl0
        self._reset()

    def _reset(self) -> None:
        self._assembler = GroupAssembler(
            timeout_s=self.timeout_s, timeout_spans=self.timeout_spans, max_open=self.max_open
        )
        self._rate = RateBound(
            threshold=self.threshold,
            window=self.window,
            min_samples=self.min_samples,
            arl0=2.0 * self.arl0,
        )
        self._jump = BernoulliCUSUM(
            odds_ratio=self.odds_ratio,
            arl0=2.0 * self.arl0,
            warmup=self.warmup,
            baseline_halflife=self.baseline_halflife,
        )
        self._low: float | None = None
        self._high: float | None = None
        self._paged = False
        self._alarm = None

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        for group in self._assembler.add(event):
            if group.scored >= 2:
                if event.reward_min is not None:
                    self._low = event.reward_min
                if event.reward_max is not None:
                    self._high = event.reward_max
                self._count(group)

    def _count(self, group: Group) -> None:
        label = self._label(group)
        rate = self._rate
        jump = self._jump
        changing = rate.active or jump.active  # one warning per change, from either test
        rate.update(label)
        jump.update(label != _VARIED)
        if rate._drift:
            self._paged = False
            if not changing:
                self._alarm = self._level_alarm(self.severity)
        if not self._paged and rate._lower >= self.page_threshold:  # _STALE (< 0) when low
            self._paged = True
            self._alarm = self._level_alarm("page")
        if jump._drift and self._alarm is None and not changing:
            self._alarm = Alarm(
                detector=self.detector_id,
                severity=self.severity,
                value=jump.statistic,
                threshold=jump.threshold,
                summary=(
                    f"share of zero-variance groups jumped from {percent(jump.baseline_rate)} "
                    f"to about {percent(jump.post_change_rate)}"
                ),
                direction="up",
            )

    def _label(self, group: Group) -> int:
        if group.scored < 2 or group.high != group.low:
            return _VARIED
        value = group.low
        low = 0.0 if self._low is None else self._low
        high = 1.0 if self._high is None else self._high
        if value == low:
            return _TOO_HARD
        if value == high:
            return _TOO_EASY
        return _CONSTANT

    def _level_alarm(self, severity: Severity) -> Alarm:
        rate = self._rate
        counts = rate.label_counts()
        kinds = ", ".join(
            f"{name} {percent(counts.get(i, 0) / rate.n)}"
            for i, name in enumerate(GROUP_KINDS)
            if i != _VARIED
        )
        summary = (
            f"{percent(rate.rate)} of the last {rate.n} groups have all-equal rewards "
            f"(lower bound {percent(rate.statistic)}): {kinds}"
        )
        return Alarm(
            detector=self.detector_id,
            severity=severity,
            value=rate.statistic,
            threshold=self.threshold if severity != "page" else self.page_threshold,
            summary=summary,
            direction="up",
        )

    @property
    def assembler(self) -> GroupAssembler:
        """The group assembly (open groups, timeouts, evictions)."""
        return self._assembler

    @property
    def rate(self) -> RateBound:
        """The share of zero-variance groups over the window, labelled by kind."""
        return self._rate

    @property
    def jump(self) -> BernoulliCUSUM:
        """The change test of the share."""
        return self._jump

    @property
    def kind_counts(self) -> dict[str, int]:
        """Zero-variance groups in the window by kind."""
        counts = self._rate.label_counts()
        return {name: counts.get(i, 0) for i, name in enumerate(GROUP_KINDS) if i != _VARIED}

    @property
    def threshold(self) -> float:
        """Share above which the lower bound warns (the constructor argument)."""
        return self._threshold

    @property
    def active(self) -> bool:
        return self._rate.active or self._jump.active

    @property
    def statistic(self) -> float:
        return self._rate.statistic
