"""``group_invariant``: group-id bugs (wrong group sizes, several tasks in one group)."""

from __future__ import annotations

from typing import ClassVar

from detectors._base import _FailureModeDetector
from detectors.alarm import Alarm, Severity
from detectors.groups import Group, GroupAssembler
from detectors.invariant import InvariantCounter
from detectors.protocol import EventLike

__all__ = ["GroupInvariant"]


class GroupInvariant(_FailureModeDetector):
    """Warns on the first group that breaks the group contract, once per broken span.

    Episodes are assembled into groups by ``group_id`` (:class:`~detectors.groups.
    GroupAssembler`). A finished group violates the contract when

    - it finished with another number of episodes than its ``group_size`` (it timed out
      short: older than ``timeout_s`` of event time and than ``timeout_spans`` times the
      longest span of recent complete groups, in episodes; an episode arriving after its
      group was complete reopens the group, which then times out with too few), or
    - its episodes carry different ``group_size`` values, or
    - its episodes carry more than one ``task_id``.

    Groups evicted because more than ``max_open`` were open are counted
    (``assembler.evictions``), not judged. Violations are counted per group by
    :class:`~detectors.invariant.InvariantCounter`: the first one after ``quiet`` clean groups
    alarms; there is no false-alarm budget (a correct harness never violates it). The counts
    per kind are in ``violations``.

    Parameters
    ----------
    quiet
        Consecutive clean groups that end a span of violations.
    timeout_s
        Event time after its first episode before an incomplete group may be given up.
    timeout_spans
        Episodes after its first one, in longest spans of recent complete groups, before an
        incomplete group may be given up (see :class:`~detectors.groups.GroupAssembler`).
    max_open
        Most groups assembled at once.

    Examples
    --------
    Groups of 8; from group 100 on, one in ten groups mixes two tasks:

    >>> from types import SimpleNamespace
    >>> from detectors.group_invariant import GroupInvariant
    >>> def group(g):
    ...     for j in range(8):
    ...         task = f"t{g}b" if g >= 100 and g % 10 == 0 and j == 7 else f"t{g}"
    ...         yield SimpleNamespace(group_id=f"g{g}", group_size=8, task_id=task,
    ...                               ts=float(g), reward=1.0)
    >>> detector = GroupInvariant()
    >>> for i, event in enumerate(e for g in range(300) for e in group(g)):
    ...     detector.update(event)
    ...     if detector.alarm:
    ...         print(i, detector.alarm.summary)
    807 group of 8 episodes holds more than one task_id
    >>> detector.violations
    {'size': 0, 'sizes': 0, 'tasks': 20}
    """

    __slots__ = (
        "_assembler",
        "_counter",
        "_kinds",
        "max_open",
        "quiet",
        "timeout_s",
        "timeout_spans",
    )

    detector_id: ClassVar[str] = "group_invariant"
    severity: ClassVar[Severity] = "warning"
    fixed_threshold: ClassVar[bool] = True  # always 0
    budgeted: ClassVar[bool] = False

    def __init__(
        self,
        quiet: int = 200,
        timeout_s: float = 60.0,
        timeout_spans: float = 4.0,
        max_open: int = 10_000,
    ) -> None:
        self.quiet = quiet
        self.timeout_s = timeout_s
        self.timeout_spans = timeout_spans
        self.max_open = max_open
        self._reset()

    def _reset(self) -> None:
        self._assembler = GroupAssembler(
            timeout_s=self.timeout_s, timeout_spans=self.timeout_spans, max_open=self.max_open
        )
        self._counter = InvariantCounter(quiet=self.quiet)
        self._kinds = {"size": 0, "sizes": 0, "tasks": 0}
        self._alarm = None

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        for group in self._assembler.add(event):
            if group.end != "evicted":
                self._judge(group)

    def _judge(self, group: Group) -> None:
        problem = ""
        if group.mixed_tasks:
            problem = "tasks"
        elif group.mixed_sizes:
            problem = "sizes"
        elif group.size is not None and group.count != group.size:
            problem = "size"
        counter = self._counter
        counter.update(bool(problem))
        if problem:
            self._kinds[problem] += 1
            if counter._drift and self._alarm is None:
                self._alarm = Alarm(
                    detector=self.detector_id,
                    severity=self.severity,
                    value=1.0,
                    threshold=0.0,
                    summary=_describe(group, problem),
                )

    @property
    def assembler(self) -> GroupAssembler:
        """The group assembly (open groups, timeouts, evictions)."""
        return self._assembler

    @property
    def counter(self) -> InvariantCounter:
        """The underlying violation counter (``violations`` is the total)."""
        return self._counter

    @property
    def violations(self) -> dict[str, int]:
        """Violating groups by kind: ``size`` (episode count), ``sizes``, ``tasks``."""
        return dict(self._kinds)

    @property
    def active(self) -> bool:
        return self._counter.active

    @property
    def statistic(self) -> float:
        """Violating groups in the current span (0 once ``quiet`` clean groups have passed)."""
        return float(self._counter.span_violations)

    @property
    def threshold(self) -> float:
        """0: any violation breaks the contract."""
        return 0.0


def _describe(group: Group, problem: str) -> str:
    if problem == "tasks":
        return f"group of {group.count} episodes holds more than one task_id"
    if problem == "sizes":
        return f"episodes of one group declare different group_size values (first {group.size})"
    how = "timed out" if group.end == "timeout" else "finished"
    return f"group {how} with {group.count} of {group.size} episodes"
