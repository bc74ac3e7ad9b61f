"""Consumer lag from positions the source hands out and watermarks refreshed on a timer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping

from monitor.source.base import TopicPartition

OffsetsOf = Callable[[list[TopicPartition]], dict[TopicPartition, int]]

#: Seconds between two reads of the high watermarks.
DEFAULT_LAG_REFRESH_S = 2.0


class LagCache:
    """Positions kept live from delivered batches; high watermarks read every ``refresh_s``.

    The bookkeeping is guarded by a lock and the broker queries of a refresh run outside
    it, so a slow refresh never holds up :meth:`advance`.

    Parameters
    ----------
    high_watermarks
        Reads the high watermark of the given partitions (the backend's locally cached
        value first, a broker query only for partitions it has none for).
    start_positions
        Reads where consumption of the given partitions starts (committed offset or the
        reset position); asked only for owned partitions nothing was delivered from yet.
    refresh_s
        Seconds between two reads of the watermarks and start positions.
    clock
        Monotonic clock, in seconds.

    Examples
    --------
    >>> cache = LagCache(lambda tps: {tp: 10 for tp in tps}, lambda tps: {tp: 0 for tp in tps})
    >>> cache.lag([("t", 0), ("t", 1)])
    {('t', 0): 10, ('t', 1): 10}
    >>> cache.advance({("t", 0): 7})
    >>> cache.lag([("t", 0), ("t", 1)])
    {('t', 0): 3, ('t', 1): 10}
    """

    def __init__(
        self,
        high_watermarks: OffsetsOf,
        start_positions: OffsetsOf,
        refresh_s: float = DEFAULT_LAG_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.high_watermarks = high_watermarks
        self.start_positions = start_positions
        self.refresh_s = refresh_s
        self.clock = clock
        self._positions: dict[TopicPartition, int] = {}
        self._high: dict[TopicPartition, int] = {}
        self._refreshed_at = -float("inf")
        self._lock = threading.Lock()

    def advance(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """Set the positions of a delivered batch from its next offset per partition."""
        with self._lock:
            self._positions.update(next_offsets)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop what is known of partitions this consumer no longer owns."""
        with self._lock:
            for tp in partitions:
                self._positions.pop(tp, None)
                self._high.pop(tp, None)

    def lag(self, assignment: list[TopicPartition]) -> dict[TopicPartition, int]:
        """High watermark minus position for each owned partition where both are known."""
        now = self.clock()
        if assignment and now - self._refreshed_at >= self.refresh_s:
            self._refreshed_at = now
            self._refresh(assignment)
        with self._lock:
            high, positions = self._high, self._positions
            return {
                tp: max(0, high[tp] - positions[tp])
                for tp in assignment
                if tp in high and tp in positions
            }

    def _refresh(self, assignment: list[TopicPartition]) -> None:
        high = self.high_watermarks(assignment)
        with self._lock:
            unknown = [tp for tp in assignment if tp not in self._positions]
        starts = self.start_positions(unknown) if unknown else {}
        with self._lock:
            self._high.update(high)
            for tp, offset in starts.items():
                # A batch delivered during the query is newer than the start position.
                self._positions.setdefault(tp, offset)
