"""Assembly of GRPO-style groups from the episodes of one segment, in bounded memory."""

from __future__ import annotations

import math
from array import array
from typing import Final, Literal

from detectors._base import Pickled, _Base, check_param
from detectors.protocol import EventLike

__all__ = ["Group", "GroupAssembler"]

GroupEnd = Literal["complete", "timeout", "evicted"]
_NONE: tuple[Group, ...] = ()
#: New groups between two scans for timed-out groups (the scan is cheap but not free).
_SCAN_EVERY: Final = 8
#: Complete groups whose spans set the patience, and the least span assumed.
_SPANS: Final = 256
_MIN_SPAN: Final = 16


class Group(Pickled):
    """What the detectors need to know of one group: its size, rewards and task identity.

    ``end`` says how the group was finished: ``complete`` (``group_size`` episodes arrived),
    ``timeout`` (no completion within the timeout, in event time) or ``evicted`` (too many
    open groups; the oldest goes first).
    """

    __slots__ = (
        "count",
        "end",
        "first_index",
        "first_ts",
        "high",
        "low",
        "mixed_sizes",
        "mixed_tasks",
        "scored",
        "size",
        "task_id",
    )

    def __init__(
        self, first_ts: float = 0.0, size: int | None = None, task_id: str | None = None
    ) -> None:
        self.first_ts = first_ts
        self.first_index = 0
        self.size = size
        self.task_id = task_id
        self.count = 0
        self.scored = 0
        self.low = math.inf
        self.high = -math.inf
        self.mixed_sizes = False
        self.mixed_tasks = False
        self.end: GroupEnd = "complete"

    @property
    def all_equal(self) -> bool:
        """At least two scored episodes, all with the same reward."""
        return self.scored >= 2 and self.high == self.low

    def __repr__(self) -> str:
        return (
            f"Group(count={self.count}, size={self.size}, scored={self.scored}, end={self.end!r})"
        )


class GroupAssembler(_Base):
    """Collects the episodes of each ``group_id`` until the group is finished.

    A group is finished when ``group_size`` episodes have arrived (the size declared by its
    first episode), when it has *timed out*, or when more than ``max_open`` groups are open,
    in which case the oldest is evicted and counted. A group times out when both

    - its first episode is more than ``timeout_s`` seconds of event time (``ts``) older than
      the newest episode, and
    - more than ``timeout_spans`` times the longest *span* of the last 256 complete groups
      (episodes of the segment from a group's first to its last episode; at least 16) have
      arrived since its first episode.

    Event time alone does not scale with the segment's rate (at a low rate a pause of the
    stream makes a healthy group look old); the count of episodes follows the rate and the
    way the harness interleaves groups. Timeouts are looked for at every eighth new group.
    Episodes without ``group_id`` are ignored; an episode arriving after its group finished
    opens it again (the reopened group then times out, short). Memory is bounded by
    ``max_open``.

    Parameters
    ----------
    timeout_s
        Event time after the first episode before an incomplete group may be given up.
    timeout_spans
        Episodes after the first one, in longest recent spans, before it may be given up.
    max_open
        Most groups kept open at once.

    Examples
    --------
    Groups of 4 episodes, except that the episodes of group ``g2`` stop after two:

    >>> from types import SimpleNamespace
    >>> from detectors.groups import GroupAssembler
    >>> def episode(group, ts, reward):
    ...     return SimpleNamespace(group_id=group, group_size=4, task_id="t-" + group,
    ...                            ts=ts, reward=reward)
    >>> assembler = GroupAssembler(timeout_s=60.0)
    >>> stream = [episode(f"g{i // 4}", float(i), float(i % 2)) for i in range(8)]
    >>> stream += [episode("g2", 8.0, 1.0), episode("g2", 9.0, 1.0)]
    >>> stream += [episode(f"g{3 + i // 4}", 10.0 + i, 0.0) for i in range(200)]
    >>> for i, event in enumerate(stream):
    ...     for group in assembler.add(event):
    ...         if group.end != "complete" or i < 8:
    ...             print(i, group, group.all_equal)
    3 Group(count=4, size=4, scored=4, end='complete') False
    7 Group(count=4, size=4, scored=4, end='complete') False
    90 Group(count=2, size=4, scored=2, end='timeout') True
    >>> assembler.timeouts, assembler.open_groups
    (1, 0)
    """

    __slots__ = (
        "_index",
        "_longest",
        "_open",
        "_since_scan",
        "_span_pos",
        "_spans",
        "evictions",
        "max_open",
        "timeout_s",
        "timeout_spans",
        "timeouts",
    )

    def __init__(
        self, timeout_s: float = 60.0, timeout_spans: float = 4.0, max_open: int = 10_000
    ) -> None:
        check_param(
            timeout_s > 0 and math.isfinite(timeout_s), "timeout_s", "a positive number", timeout_s
        )
        check_param(
            timeout_spans >= 1 and math.isfinite(timeout_spans),
            "timeout_spans",
            "a finite number >= 1",
            timeout_spans,
        )
        check_param(
            isinstance(max_open, int) and max_open >= 1, "max_open", "an int >= 1", max_open
        )
        self.timeout_s = timeout_s
        self.timeout_spans = timeout_spans
        self.max_open = max_open
        self._reset()

    def _reset(self) -> None:
        self._open: dict[str, Group] = {}
        self._index = 0  # episodes with a group id so far
        # spans of the last complete groups (a ring of C int64: no int object per span)
        self._spans = array("q")
        self._span_pos = 0
        self._longest = 0
        self._since_scan = 0
        self.evictions = 0
        self.timeouts = 0

    def add(self, event: EventLike) -> tuple[Group, ...]:
        """Account one episode; the groups it finished (usually none: a shared empty tuple)."""
        group_id = event.group_id
        if group_id is None:
            return _NONE
        self._index += 1
        opened = self._open
        group = opened.get(group_id)
        if group is None:
            return self._start(event, group_id)
        size = event.group_size
        if size != group.size and (size or group.size):
            group.mixed_sizes = True
        if event.task_id != group.task_id:
            group.mixed_tasks = True
        count = group.count = group.count + 1
        reward = event.reward
        if reward is not None:
            group.scored += 1
            if reward < group.low:
                group.low = reward
            if reward > group.high:
                group.high = reward
        if count == group.size:
            del opened[group_id]
            self._complete(group)
            return (group,)
        return _NONE

    def _start(self, event: EventLike, group_id: str) -> tuple[Group, ...]:
        """Open a group with its first episode; every few new groups, expire the old ones."""
        finished = _NONE
        since = self._since_scan + 1
        if since >= _SCAN_EVERY:
            self._since_scan = 0
            finished = self._expire(event.ts)
        else:
            self._since_scan = since
        size = event.group_size
        group = Group(event.ts, size if size else None, event.task_id)
        group.first_index = self._index
        group.count = 1
        reward = event.reward
        if reward is not None:
            group.scored = 1
            group.low = group.high = reward
        opened = self._open
        opened[group_id] = group
        if len(opened) > self.max_open:
            finished = (*finished, self._evict())
        if group.size == 1:
            del opened[group_id]
            self._complete(group)
            finished = (*finished, group)
        return finished

    def _complete(self, group: Group) -> None:
        span = self._index - group.first_index
        spans = self._spans
        if len(spans) < _SPANS:
            spans.append(span)
        else:
            spans[self._span_pos] = span
            self._span_pos = (self._span_pos + 1) % _SPANS

    def _expire(self, now: float) -> tuple[Group, ...]:
        opened = self._open
        if self._spans:
            self._longest = max(self._spans)
        patience = self.timeout_spans * max(self._longest, _MIN_SPAN)
        oldest_index = self._index - patience
        oldest_ts = now - self.timeout_s
        expired: list[str] = []
        for group_id, group in opened.items():  # in the order of their first episodes
            if group.first_index >= oldest_index:
                break
            if group.first_ts < oldest_ts:
                expired.append(group_id)
        if not expired:
            return _NONE
        groups = tuple(opened.pop(group_id) for group_id in expired)
        for group in groups:
            group.end = "timeout"
        self.timeouts += len(groups)
        return groups

    def _evict(self) -> Group:
        opened = self._open
        oldest = next(iter(opened))
        group = opened.pop(oldest)
        group.end = "evicted"
        self.evictions += 1
        return group

    @property
    def open_groups(self) -> int:
        """Groups waiting for more episodes."""
        return len(self._open)

    @property
    def patience(self) -> float:
        """Episodes after its first one before an incomplete group may time out."""
        return self.timeout_spans * max(self._longest, _MIN_SPAN)
