"""Assembly of GRPO-style groups from the episodes of one segment, in bounded memory."""

from __future__ import annotations

import math
from typing import Literal

from detectors._base import _Base, check_param
from detectors.protocol import EventLike

__all__ = ["Group", "GroupAssembler"]

GroupEnd = Literal["complete", "timeout", "evicted"]
_NONE: tuple[Group, ...] = ()
#: Episodes between two scans for timed-out groups (the scan is cheap but not free).
_SCAN_EVERY = 64


class Group:
    """What the detectors need to know of one group: its size, rewards and task identity.

    ``end`` says how the group was finished: ``complete`` (``group_size`` episodes arrived),
    ``timeout`` (no completion within the timeout, in event time) or ``evicted`` (too many
    open groups; the oldest goes first).
    """

    __slots__ = (
        "count",
        "end",
        "first_ts",
        "high",
        "low",
        "mixed_sizes",
        "mixed_tasks",
        "scored",
        "size",
        "task_id",
    )

    def __init__(self, first_ts: float, size: int | None, task_id: str | None) -> None:
        self.first_ts = first_ts
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
    first episode), when its first episode is more than ``timeout_s`` seconds of event time
    (``ts``) older than the newest episode (checked every 64 episodes), or when more than
    ``max_open`` groups are open, in which case the oldest is evicted and counted. Episodes
    without ``group_id`` are ignored; an episode arriving after its group finished opens it
    again (the reopened group then times out, short). Memory is bounded by ``max_open``.

    Parameters
    ----------
    timeout_s
        Event time after the first episode at which an incomplete group is given up.
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
    >>> assembler = GroupAssembler(timeout_s=300.0)
    >>> stream = [episode(f"g{i // 4}", float(i), float(i % 2)) for i in range(8)]
    >>> stream += [episode("g2", 8.0, 1.0), episode("g2", 9.0, 1.0)]
    >>> stream += [episode(f"g{3 + i // 4}", 400.0 + i, 0.0) for i in range(60)]
    >>> for i, event in enumerate(stream):
    ...     for group in assembler.add(event):
    ...         if group.end != "complete" or i < 8:
    ...             print(i, group, group.all_equal)
    3 Group(count=4, size=4, scored=4, end='complete') False
    7 Group(count=4, size=4, scored=4, end='complete') False
    63 Group(count=2, size=4, scored=2, end='timeout') True
    >>> assembler.timeouts, assembler.open_groups
    (1, 0)
    """

    __slots__ = ("_open", "_since_scan", "evictions", "max_open", "timeout_s", "timeouts")

    def __init__(self, timeout_s: float = 300.0, max_open: int = 10_000) -> None:
        check_param(
            timeout_s > 0 and math.isfinite(timeout_s), "timeout_s", "a positive number", timeout_s
        )
        check_param(
            isinstance(max_open, int) and max_open >= 1, "max_open", "an int >= 1", max_open
        )
        self.timeout_s = timeout_s
        self.max_open = max_open
        self._reset()

    def _reset(self) -> None:
        self._open: dict[str, Group] = {}
        self._since_scan = 0
        self.evictions = 0
        self.timeouts = 0

    def add(self, event: EventLike) -> tuple[Group, ...]:
        """Account one episode; the groups it finished (usually none: a shared empty tuple)."""
        group_id = event.group_id
        finished = _NONE
        since = self._since_scan + 1
        if since >= _SCAN_EVERY:
            self._since_scan = 0
            finished = self._expire(event.ts)
        else:
            self._since_scan = since
        if group_id is None:
            return finished
        size = event.group_size
        opened = self._open
        group = opened.get(group_id)
        if group is None:
            group = Group(event.ts, size if size else None, event.task_id)
            opened[group_id] = group
            if len(opened) > self.max_open:
                finished = (*finished, self._evict())
        else:
            if size != group.size and (size or group.size):
                group.mixed_sizes = True
            if event.task_id != group.task_id:
                group.mixed_tasks = True
        group.count += 1
        reward = event.reward
        if reward is not None:
            group.scored += 1
            if reward < group.low:
                group.low = reward
            if reward > group.high:
                group.high = reward
        if group.count == group.size:
            del opened[group_id]
            finished = (*finished, group) if finished else (group,)
        return finished

    def _expire(self, now: float) -> tuple[Group, ...]:
        opened = self._open
        expired: list[str] = []
        cutoff = now - self.timeout_s
        for group_id, group in opened.items():  # oldest first
            if group.first_ts >= cutoff:
                break
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
