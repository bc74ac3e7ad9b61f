"""Per-segment state: one (run_id, env_id) pair, its detector bank and its summary statistics."""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

from detectors._base import Pickled
from detectors.bank import DetectorBank
from detectors.protocol import EventLike

OVERFLOW = ("_overflow", "_overflow")
PartitionKey = tuple[str, int] | None
#: Recent values kept per segment for the exported quantiles.
WINDOW: Final = 512
STATUSES = ("completed", "truncated", "failed", "aborted")


#: What a segment holds besides its identity and bank (pickled by ``Segment.__reduce__``).
_COUNTERS = (
    "events",
    "last_ts",
    "length_count",
    "length_sum",
    "lengths",
    "reward_count",
    "reward_sum",
    "rewards",
    "status_counts",
    "unscored",
)


class Segment(Pickled):
    """Counters, recent rewards and lengths, and the detector bank of one segment.

    The recent values are rings of C doubles (``array("d")``): 4 KiB per window instead of
    a list of float objects (about 16 KiB), and readable by numpy without a copy.
    """

    __slots__ = (
        "bank",
        "env",
        "events",
        "last_ts",
        "length_count",
        "length_sum",
        "lengths",
        "partition",
        "reward_count",
        "reward_sum",
        "rewards",
        "run",
        "status_counts",
        "unscored",
    )

    def __init__(
        self,
        run: str = "",
        env: str = "",
        bank: DetectorBank | None = None,
        partition: PartitionKey = None,
    ) -> None:
        self.run = run
        self.env = env
        # (the defaults serve unpickling checkpoints written before Segment had __reduce__,
        # which calls the constructor when compiled)
        self.bank = bank if bank is not None else DetectorBank()
        self.partition = partition
        self.events = 0
        self.status_counts = dict.fromkeys(STATUSES, 0)
        self.unscored = 0
        self.rewards = array("d")
        self.reward_sum = 0.0
        self.reward_count = 0
        self.lengths = array("d")
        self.length_sum = 0.0
        self.length_count = 0
        self.last_ts = 0.0

    def __reduce__(self) -> tuple[Any, ...]:
        """Rebuilt from its run, env, bank and partition, then its counters and windows
        (``Pickled.__setstate__``, which also reads the state of checkpoints written before
        this method existed)."""
        state = {name: getattr(self, name) for name in _COUNTERS}
        return Segment, (self.run, self.env, self.bank, self.partition), state

    def record(self, status: str, reward: float | None, length: int | None, ts: float) -> None:
        """Account one event in the summary statistics (the bank is updated separately)."""
        self.events += 1
        self.status_counts[status] += 1
        if ts > self.last_ts:
            self.last_ts = ts
        if reward is None:
            self.unscored += 1
        else:
            n = self.reward_count
            if n < WINDOW:
                self.rewards.append(reward)
            else:
                self.rewards[n % WINDOW] = reward
            self.reward_count = n + 1
            self.reward_sum += reward
        if length is not None:
            n = self.length_count
            if n < WINDOW:
                self.lengths.append(length)
            else:
                self.lengths[n % WINDOW] = length
            self.length_count = n + 1
            self.length_sum += length

    def record_batch(self, events: Sequence[EventLike]) -> float:
        """:meth:`record` of each of ``events`` in turn, with the attribute loads hoisted;
        returns the newest ``ts`` among them."""
        counts = self.status_counts
        rewards, lengths = self.rewards, self.lengths
        last_ts = self.last_ts
        newest = -math.inf
        unscored = self.unscored
        reward_n, reward_sum = self.reward_count, self.reward_sum
        length_n, length_sum = self.length_count, self.length_sum
        for event in events:
            counts[event.status] += 1
            ts = event.ts
            if ts > newest:
                newest = ts
            reward = event.reward
            if reward is None:
                unscored += 1
            else:
                if reward_n < WINDOW:
                    rewards.append(reward)
                else:
                    rewards[reward_n % WINDOW] = reward
                reward_n += 1
                reward_sum += reward
            length = event.completion_tokens
            if length is not None:
                if length_n < WINDOW:
                    lengths.append(length)
                else:
                    lengths[length_n % WINDOW] = length
                length_n += 1
                length_sum += length
        self.events += len(events)
        if newest > last_ts:
            self.last_ts = newest
        self.unscored = unscored
        self.reward_count, self.reward_sum = reward_n, reward_sum
        self.length_count, self.length_sum = length_n, length_sum
        return newest


def overflow_key(partition: PartitionKey) -> tuple[str, str]:
    """The overflow segment of a partition (one per partition, so checkpoints stay separate)."""
    if partition is None:
        return OVERFLOW
    return (OVERFLOW[0], f"{OVERFLOW[1]}-{partition[0]}-{partition[1]}")


class SegmentTable:
    """Segments created lazily, at most ``max_segments`` of them plus overflow segments.

    Events of segments beyond the cap are accounted to the overflow segment of their
    partition (``run="_overflow"``), so that hostile or runaway ``env_id`` values cannot grow
    memory or exported series without bound. Each segment remembers the Kafka partition
    that feeds it: producers key events by ``run_id|env_id``, so a segment has one.
    """

    def __init__(self, max_segments: int, bank_factory: Callable[[], DetectorBank]) -> None:
        if max_segments < 1:
            raise ValueError(f"max_segments must be >= 1, got {max_segments}")
        self.max_segments = max_segments
        self._bank_factory = bank_factory
        self._segments: dict[tuple[str, str], Segment] = {}
        self._regular = 0
        self.overflow_events = 0

    def get(self, run: str, env: str, partition: PartitionKey = None) -> Segment:
        key = (run, env)
        segment = self._segments.get(key)
        if segment is not None:
            return segment
        if self._regular >= self.max_segments or run == OVERFLOW[0]:
            self.overflow_events += 1
            key = overflow_key(partition)
            segment = self._segments.get(key)
            if segment is not None:
                return segment
        else:
            self._regular += 1
        segment = Segment(key[0], key[1], self._bank_factory(), partition)
        self._segments[key] = segment
        return segment

    @property
    def by_key(self) -> Mapping[tuple[str, str], Segment]:
        """The segments by ``(run, env)``, live (the pipeline's routing reads it directly)."""
        return self._segments

    def lookup(self, run: str, env: str) -> Segment | None:
        """The segment if it exists; never creates one."""
        return self._segments.get((run, env))

    def of_partition(self, partition: PartitionKey) -> list[Segment]:
        return [s for s in self.snapshot() if s.partition == partition]

    def insert(self, segment: Segment, partition: PartitionKey) -> None:
        """Adopt a segment restored from a checkpoint."""
        segment.partition = partition
        key = (segment.run, segment.env)
        if key not in self._segments and segment.run != OVERFLOW[0]:
            self._regular += 1
        self._segments[key] = segment

    def remove_partition(self, partition: PartitionKey) -> list[Segment]:
        removed = self.of_partition(partition)
        for segment in removed:
            del self._segments[(segment.run, segment.env)]
            if segment.run != OVERFLOW[0]:
                self._regular -= 1
        return removed

    def snapshot(self) -> list[Segment]:
        """The segments as a list, safe to iterate while the consumer adds segments."""
        return list(self._segments.values())

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        return len(self._segments)
