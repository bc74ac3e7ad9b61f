"""The processing pipeline shared by the Kafka daemon and the replay mode.

For each message: decode (typed), refuse invalid input to the dead-letter sink with a reason,
drop repeats of a recent ``event_id``, route to the segment (run_id, env_id), update the
segment's statistics and detector bank, and hand alarms to the alert tracker. At the end of a
micro-batch, alerts whose segment has been healthy long enough are resolved.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from mypy_extensions import mypyc_attr
from prometheus_client import Histogram

from detectors._base import Pickled
from detectors.alarm import Alarm
from detectors.bank import DEFAULT_ENABLED, BankConfig, DetectorBank
from monitor.alerts import AlertTracker
from monitor.config import DetectorSettings, PipelineSettings
from monitor.dedup import RecentIds
from monitor.events import INVALID_REASONS, InvalidEvent, RolloutEvent, decode_event
from monitor.segments import Segment, SegmentTable

log = logging.getLogger(__name__)

_LOGGED_FAILURES: Final = 5


PartitionKey = tuple[str, int] | None  # (topic, partition); None in replay


class MessageLike(Protocol):
    """What the pipeline reads of a Kafka message (``monitor.source.RawMessage``)."""

    @property
    def value(self) -> bytes | None: ...

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...


class InvalidSink(Protocol):
    """Receives refused messages (the dead-letter topic, or a list in replay)."""

    def send(self, msg: Any, reason: str, detail: str) -> None: ...


class PartitionState(Pickled):
    """What one Kafka partition has fed: counters and the window of recent event ids.

    Checkpointed with the partition's segments, so that counts stay exact across restarts and
    rebalances. Duplicates of an event share its key, hence its partition.
    """

    __slots__ = ("dedup", "duplicates", "invalid", "processed")

    def __init__(self, dedup_window: int = 0) -> None:
        # (the default serves unpickling, which calls the constructor when compiled)
        self.dedup = RecentIds(dedup_window)
        self.processed = 0
        self.duplicates = 0
        self.invalid: dict[str, int] = dict.fromkeys(INVALID_REASONS, 0)


class PipelineCounters:
    """Daemon-wide counters: sums over the partitions held, plus batch histograms."""

    def __init__(self, partitions: dict[PartitionKey, PartitionState]) -> None:
        self._partitions = partitions
        self.batches = 0
        self.batch_duration = Histogram(
            "rollout_monitor_batch_duration_seconds",
            "Wall time to process one micro-batch.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=None,
        )
        self.event_age = Histogram(
            "rollout_monitor_event_age_seconds",
            "Wall clock minus the newest event's ts when its batch was processed.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=None,
        )

    def _states(self) -> list[PartitionState]:
        return list(self._partitions.values())

    @property
    def processed(self) -> int:
        return sum(p.processed for p in self._states())

    @property
    def duplicates(self) -> int:
        return sum(p.duplicates for p in self._states())

    @property
    def invalid(self) -> dict[str, int]:
        total = dict.fromkeys(INVALID_REASONS, 0)
        for state in self._states():
            for reason, n in list(state.invalid.items()):
                total[reason] = total.get(reason, 0) + n
        return total


class _Run:
    """A run of consecutive messages of one partition in a micro-batch."""

    __slots__ = ("events", "key", "positions", "repeats", "start", "state", "valid")

    def __init__(self, start: int, key: PartitionKey, state: PartitionState) -> None:
        self.start = start  # input position of its first message
        self.key = key
        self.state = state
        self.events: list[RolloutEvent] = []  # its valid events
        self.positions: list[int] = []  # and their input positions
        self.repeats: list[bool] = []  # which of them the partition's window has seen
        self.valid = 0  # events routed (valid and not repeats), counted once detected


class _Routed:
    """A micro-batch after routing: each segment's events and input positions, in order."""

    __slots__ = ("groups", "runs")

    def __init__(self) -> None:
        self.groups: dict[Segment, tuple[list[RolloutEvent], list[int]]] = {}
        self.runs: list[_Run] = []

    def state_of(self, index: int) -> PartitionState:
        """The partition state of the message at input position ``index`` (a routed one)."""
        starts = [run.start for run in self.runs]
        return self.runs[bisect.bisect_right(starts, index) - 1].state


def _released(messages: Sequence[MessageLike]) -> Iterator[MessageLike]:
    """The messages of a list in order, each set to None in the list as it is handed out
    (the caller's reference is the last one)."""
    assert isinstance(messages, list), "release needs a list"
    for position, msg in enumerate(messages):
        messages[position] = None
        yield msg


def bank_factory(settings: DetectorSettings) -> Callable[[], DetectorBank]:
    """A constructor of the per-segment detector bank for these settings."""
    config = BankConfig(arl0=settings.budget_events, enabled=settings.enabled or DEFAULT_ENABLED)
    return lambda: DetectorBank(config)


@mypyc_attr(native_class=False)  # pickled as a plain dataclass, compiled or not
@dataclass
class PartitionSnapshot:
    """Everything a partition's checkpoint holds (pickled by ``monitor.checkpoint``).

    Checkpointed in parts (``monitor.checkpoint.PartedState``): the snapshot without its
    segments (partition state and alerts) first, then each segment by a pickler of its own,
    so that no pickler's memo grows with the number of segments.

    Pickling segments apart copies what they share. After a restore:

    - the :class:`BankConfig` is shared again: the banks of one ``bank_factory`` share one
      config, which would otherwise come back as a copy per segment (1.4 KB each: its
      ``enabled`` tuple of strings, its ``overrides``). :meth:`from_checkpoint_parts`
      re-interns equal configs into one object.
    - not shared: the small objects all segments' detectors refer to, such as parameter
      tuples (``fast_k``, feature names), thresholds derived from them (cached in
      ``detectors.cusum`` so that live segments share them) and strings. Each restored
      segment holds its own copies, about 2 KB (1,000 warm segments restored take 69.2
      instead of 67.3 MB). Nothing depends on their identity.
    - within a segment (one pickle), and within the partition state and alerts, sharing is
      kept as before.
    """

    state: PartitionState
    segments: list[Segment]
    alerts: dict[str, Any] = field(default_factory=dict)

    def checkpoint_parts(self) -> tuple[PartitionSnapshot, list[Segment]]:
        """The head (this snapshot without its segments) and the segments, one part each."""
        return replace(self, segments=[]), self.segments

    @classmethod
    def from_checkpoint_parts(
        cls, head: PartitionSnapshot, parts: Sequence[Segment]
    ) -> PartitionSnapshot:
        """The snapshot again, its segments' equal bank configs made one object again."""
        segments = list(parts)
        _share_bank_configs(segments)
        return replace(head, segments=segments)


def _share_bank_configs(segments: Sequence[Segment]) -> None:
    """Make the banks whose configs are equal refer to one of them (the first one seen).

    A linear scan: segments almost always have one config (``BankConfig`` is not hashable,
    its ``overrides`` are dicts)."""
    configs: list[BankConfig] = []
    for segment in segments:
        bank = segment.bank
        for config in configs:
            if config is bank.config or config == bank.config:
                bank.config = config
                break
        else:
            configs.append(bank.config)


class Pipeline:
    """Decode, deduplicate, route and detect; one instance per daemon or replay."""

    def __init__(
        self,
        pipeline: PipelineSettings,
        detectors: DetectorSettings,
        tracker: AlertTracker,
        invalid_sink: InvalidSink | None = None,
    ) -> None:
        self.settings = pipeline
        self.segments = SegmentTable(pipeline.max_segments, bank_factory(detectors))
        self.tracker = tracker
        self.invalid_sink = invalid_sink
        self.partitions: dict[PartitionKey, PartitionState] = {}
        self.counters = PipelineCounters(self.partitions)
        self.index = 0  # position of the next message in the input
        self.detector_failures = 0
        self._newest_ts = 0.0

    def partition_state(self, key: PartitionKey) -> PartitionState:
        state = self.partitions.get(key)
        if state is None:
            state = self.partitions[key] = PartitionState(self.settings.dedup_window)
        return state

    # -- batches ---------------------------------------------------------------------------
    def process_messages(self, messages: Sequence[MessageLike], *, release: bool = False) -> None:
        """Process one micro-batch of Kafka messages, then resolve what has healed.

        Two passes. Routing, per message in input order: decode, refuse, deduplicate, find
        the segment (segments are created in input order, so the cap treats them as before)
        and collect the events of each segment. Detection, per segment: its summary
        statistics and its detector bank take all its events of the batch in one call
        (:meth:`DetectorBank.update_batch`). Each segment sees its events in input order, so
        the state and the alarms are those of updating event by event; alarms go to the
        tracker in input order.

        With ``release`` (``messages`` must then be a list), each message is dropped from the
        list once it is routed: its raw bytes are then freed while the batch's decoded events
        pile up, instead of both being held whole until the batch ends (about 1 KB per
        message each; 20 MB of a 20,000-message batch).
        """
        started = time.perf_counter()
        newest = self._newest_ts
        batch = _Routed()
        self._route(_released(messages) if release else messages, batch)
        self._detect(batch)
        self.end_batch(started)
        if self._newest_ts > newest:
            self.counters.event_age.observe(max(0.0, time.time() - self._newest_ts))

    def _route(self, messages: Iterable[MessageLike], batch: _Routed) -> None:
        """Decode and refuse per message, ask each partition's window of recent ids about
        all its valid events of the batch at once, then group the new ones by segment in
        input order (segments are created in input order, so the cap treats them as when
        events are processed one by one)."""
        max_bytes = self.settings.max_message_bytes
        index = self.index
        key: PartitionKey = None
        state: PartitionState | None = None
        runs = batch.runs
        events: list[RolloutEvent] = []
        positions: list[int] = []
        try:
            for msg in messages:
                msg_key = (msg.topic, msg.partition)
                if msg_key != key or state is None:
                    key, state = msg_key, self.partition_state(msg_key)
                    run = _Run(index, key, state)
                    runs.append(run)
                    events, positions = run.events, run.positions
                index += 1
                data = msg.value
                if data is None:
                    self.index = index
                    self._refuse(msg, "invalid_json", "message has no value (tombstone)", state)
                    continue
                try:
                    events.append(decode_event(data, max_bytes))
                except InvalidEvent as exc:
                    self.index = index
                    self._refuse(msg, exc.reason, exc.detail, state)
                    continue
                positions.append(index - 1)
        finally:
            self.index = index
        if runs:  # then the loop ran: msg is bound
            del msg  # the last message is not kept while the batch is routed
        self._drop_repeats(runs)
        self._group(runs, batch.groups)

    @staticmethod
    def _drop_repeats(runs: list[_Run]) -> None:
        """Mark the repeats of recent ids: one call per partition for all its runs."""
        by_state: dict[PartitionState, list[_Run]] = {}
        for run in runs:
            by_state.setdefault(run.state, []).append(run)
        for state, of_state in by_state.items():
            repeats = state.dedup.seen_many([e.event_id for run in of_state for e in run.events])
            start = 0
            for run in of_state:
                end = start + len(run.events)
                run.repeats = repeats[start:end]
                start = end

    def _group(
        self, runs: list[_Run], groups: dict[Segment, tuple[list[RolloutEvent], list[int]]]
    ) -> None:
        by_key = self.segments.by_key
        get_segment = self.segments.get
        for run in runs:
            key = run.key
            routed = 0
            for event, index, repeat in zip(run.events, run.positions, run.repeats, strict=True):
                if repeat:
                    continue
                segment = by_key.get((event.run_id, event.env_id))
                if segment is None:
                    segment = get_segment(event.run_id, event.env_id, key)
                routed += 1
                group = groups.get(segment)
                if group is None:
                    groups[segment] = ([event], [index])
                else:
                    group[0].append(event)
                    group[1].append(index)
            run.state.duplicates += len(run.events) - routed
            run.valid = routed

    def _detect(self, batch: _Routed) -> None:
        alarms: list[tuple[int, Segment, Alarm, float]] = []
        newest = self._newest_ts
        for segment, (events, indexes) in batch.groups.items():
            batch_ts = segment.record_batch(events)
            if batch_ts > newest:
                newest = batch_ts
            try:
                found, failed = segment.bank.update_batch(events)
            except Exception as bank_error:  # a bank bug must not stop the monitor
                found, failed = [], dict.fromkeys(range(len(events)), bank_error)
            for i, alarm in found:
                alarms.append((indexes[i], segment, alarm, events[i].ts))
            for i, error in failed.items():
                self._detector_failed(events[i], error, batch.state_of(indexes[i]))
        for run in batch.runs:  # counted once the detectors have run
            run.state.processed += run.valid
        self._newest_ts = newest
        if len(alarms) > 1:
            alarms.sort(key=lambda a: a[0])  # stable: a segment's alarms keep their order
        for index, segment, alarm, ts in alarms:
            self.tracker.on_alarm(segment.run, segment.env, alarm, index, ts)

    def end_batch(self, started: float | None = None) -> None:
        """Close a micro-batch: resolve healed alerts, account the batch."""
        self.tracker.sweep(self._segment_ts, self._detector_active, self.index - 1)
        self.counters.batches += 1
        if started is not None:
            self.counters.batch_duration.observe(time.perf_counter() - started)

    # -- single messages (replay) ----------------------------------------------------------
    def process_bytes(self, data: bytes | None) -> None:
        """Decode and process one message of a file; invalid input is counted."""
        self._process_bytes(data, None, None, self.partition_state(None))

    def process_event(self, event: RolloutEvent) -> None:
        """Process an already-validated event (the Parquet replay path)."""
        index = self.index
        self.index = index + 1
        self._process(event, index, None, self.partition_state(None))

    def refuse(self, reason: str, detail: str) -> None:
        """Count an input record refused before decoding (replay: a bad Parquet row)."""
        self.index += 1
        self._refuse(None, reason, detail, self.partition_state(None))

    def _process_bytes(
        self, data: bytes | None, msg: MessageLike | None, key: PartitionKey, state: PartitionState
    ) -> None:
        index = self.index
        self.index = index + 1
        if data is None:
            self._refuse(msg, "invalid_json", "message has no value (tombstone)", state)
            return
        try:
            event = decode_event(data, self.settings.max_message_bytes)
        except InvalidEvent as exc:
            self._refuse(msg, exc.reason, exc.detail, state)
            return
        self._process(event, index, key, state)

    def _process(
        self, event: RolloutEvent, index: int, key: PartitionKey, state: PartitionState
    ) -> None:
        if state.dedup.seen(event.event_id):
            state.duplicates += 1
            return
        segment = self.segments.get(event.run_id, event.env_id, key)
        ts = event.ts
        segment.record(event.status, event.reward, event.completion_tokens, ts)
        if ts > self._newest_ts:
            self._newest_ts = ts
        state.processed += 1
        try:
            alarms = segment.bank.update(event)
        except Exception as exc:  # a detector bug must not stop the monitor
            self._detector_failed(event, exc, state)
            return
        if alarms:
            for alarm in alarms:
                self.tracker.on_alarm(segment.run, segment.env, alarm, index, ts)

    def _detector_failed(self, event: RolloutEvent, exc: Exception, state: PartitionState) -> None:
        self.detector_failures += 1
        if self.detector_failures <= _LOGGED_FAILURES:  # a broken detector fails on every event
            # exc_info from the exception itself: batched detection reports failures after
            # the except block that caught them
            log.error("detector update failed on event %s", event.event_id, exc_info=exc)
            if self.detector_failures == _LOGGED_FAILURES:
                log.error("further detector failures are counted, not logged")
        self._refuse(None, "processing_error", f"{type(exc).__name__}: {exc}", state)

    def _refuse(
        self, msg: MessageLike | None, reason: str, detail: str, state: PartitionState
    ) -> None:
        state.invalid[reason] = state.invalid.get(reason, 0) + 1
        if self.invalid_sink is not None and msg is not None:
            self.invalid_sink.send(msg, reason, detail)
        log.debug("refused message #%d: %s: %s", self.index - 1, reason, detail)

    # -- checkpoints -----------------------------------------------------------------------
    def snapshot(self, key: PartitionKey) -> PartitionSnapshot:
        """The state a partition has fed, for its checkpoint (shares the live objects)."""
        segments = self.segments.of_partition(key)
        names = {(s.run, s.env) for s in segments}
        return PartitionSnapshot(
            state=self.partition_state(key),
            segments=segments,
            alerts=self.tracker.export(names),
        )

    def restore(self, key: PartitionKey, snapshot: PartitionSnapshot) -> None:
        """Take over a partition's state from its checkpoint."""
        self.drop(key, forget_alerts=True)
        self.partitions[key] = snapshot.state
        for segment in snapshot.segments:
            self.segments.insert(segment, key)
        self.tracker.restore(snapshot.alerts)

    def drop(self, key: PartitionKey, forget_alerts: bool = True) -> None:
        """Forget a partition's state (it was revoked; its next owner restores it)."""
        removed = self.segments.remove_partition(key)
        if forget_alerts:
            self.tracker.forget({(s.run, s.env) for s in removed})
        self.partitions.pop(key, None)

    # -- lookups for the tracker -----------------------------------------------------------
    def _segment_ts(self, run: str, env: str) -> float:
        segment = self.segments.lookup(run, env)
        return segment.last_ts if segment is not None else 0.0

    def _detector_active(self, run: str, env: str, detector_id: str) -> bool:
        segment = self.segments.lookup(run, env)
        if segment is None:
            return False
        detector = segment.bank.detectors.get(detector_id)
        return bool(detector is not None and detector.active)
