"""Per-segment state: one (run_id, env_id) pair, its detector bank and its summary statistics."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from detectors.bank import DetectorBank

OVERFLOW = ("_overflow", "_overflow")
#: Recent values kept per segment for the exported quantiles.
WINDOW = 512
STATUSES = ("completed", "truncated", "failed", "aborted")


class Segment:
    """Counters, recent rewards and lengths, and the detector bank of one segment."""

    __slots__ = (
        "bank",
        "env",
        "events",
        "last_ts",
        "length_count",
        "length_sum",
        "lengths",
        "reward_count",
        "reward_sum",
        "rewards",
        "run",
        "status_counts",
        "unscored",
    )

    def __init__(self, run: str, env: str, bank: DetectorBank) -> None:
        self.run = run
        self.env = env
        self.bank = bank
        self.events = 0
        self.status_counts = dict.fromkeys(STATUSES, 0)
        self.unscored = 0
        self.rewards: list[float] = []
        self.reward_sum = 0.0
        self.reward_count = 0
        self.lengths: list[float] = []
        self.length_sum = 0.0
        self.length_count = 0
        self.last_ts = 0.0

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


class SegmentTable:
    """Segments created lazily, at most ``max_segments`` of them plus one overflow segment.

    Events of segments beyond the cap are accounted to ``OVERFLOW`` so that hostile or
    runaway ``env_id`` values cannot grow memory or exported series without bound.
    """

    def __init__(self, max_segments: int, bank_factory: Callable[[], DetectorBank]) -> None:
        if max_segments < 1:
            raise ValueError(f"max_segments must be >= 1, got {max_segments}")
        self.max_segments = max_segments
        self._bank_factory = bank_factory
        self._segments: dict[tuple[str, str], Segment] = {}
        self.overflow_events = 0

    def get(self, run: str, env: str) -> Segment:
        key = (run, env)
        segment = self._segments.get(key)
        if segment is not None:
            return segment
        if len(self._segments) >= self.max_segments:
            self.overflow_events += 1
            segment = self._segments.get(OVERFLOW)
            if segment is not None:
                return segment
            key = OVERFLOW
            run, env = OVERFLOW
        segment = Segment(run, env, self._bank_factory())
        self._segments[key] = segment
        return segment

    def lookup(self, run: str, env: str) -> Segment | None:
        """The segment if it exists; never creates one."""
        return self._segments.get((run, env))

    def snapshot(self) -> list[Segment]:
        """The segments as a list, safe to iterate while the consumer adds segments."""
        return list(self._segments.values())

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        return len(self._segments)
