"""A bounded window of recent event ids, to drop producer retries."""

from __future__ import annotations

from collections import deque


class RecentIds:
    """Remembers the last ``capacity`` distinct ids; ``seen(id)`` answers and records.

    >>> ids = RecentIds(capacity=2)
    >>> [ids.seen(x) for x in ["a", "b", "a", "c", "a", "a"]]
    [False, False, True, False, False, True]
    >>> ids.seen("c")  # "a" came back, so the window is now ("c", "a")
    True
    """

    __slots__ = ("_members", "_order", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._members: set[str] = set()

    def seen(self, event_id: str) -> bool:
        """True when ``event_id`` is in the window; otherwise record it and return False."""
        members = self._members
        if event_id in members:
            return True
        if self.capacity == 0:
            return False
        members.add(event_id)
        self._order.append(event_id)
        if len(members) > self.capacity:
            members.discard(self._order.popleft())
        return False

    def __len__(self) -> int:
        return len(self._members)
