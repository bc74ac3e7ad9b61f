"""The processing pipeline shared by the Kafka daemon and the replay mode.

For each message: decode (typed), refuse invalid input to the dead-letter sink with a reason,
drop repeats of a recent ``event_id``, route to the segment (run_id, env_id), update the
segment's statistics and detector bank, and hand alarms to the alert tracker. At the end of a
micro-batch, alerts whose segment has been healthy long enough are resolved.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Histogram

from detectors.bank import DEFAULT_ENABLED, BankConfig, DetectorBank
from monitor.alerts import AlertTracker
from monitor.config import DetectorSettings, PipelineSettings
from monitor.dedup import RecentIds
from monitor.events import INVALID_REASONS, InvalidEvent, RolloutEvent, decode_event
from monitor.segments import SegmentTable

log = logging.getLogger(__name__)


class MessageLike(Protocol):
    """What the pipeline reads of a Kafka message (``monitor.source.RawMessage``)."""

    @property
    def value(self) -> bytes | None: ...


class InvalidSink(Protocol):
    """Receives refused messages (the dead-letter topic, or a list in replay)."""

    def send(self, msg: Any, reason: str, detail: str) -> None: ...


@dataclass
class PipelineCounters:
    """Plain integer counters, exported at scrape time."""

    processed: int = 0
    duplicates: int = 0
    batches: int = 0
    invalid: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INVALID_REASONS, 0))
    batch_duration: Histogram = field(
        default_factory=lambda: Histogram(
            "rollout_monitor_batch_duration_seconds",
            "Wall time to process one micro-batch.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=None,
        )
    )
    event_age: Histogram = field(
        default_factory=lambda: Histogram(
            "rollout_monitor_event_age_seconds",
            "Wall clock minus the newest event's ts when its batch was processed.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=None,
        )
    )


def bank_factory(settings: DetectorSettings) -> Callable[[], DetectorBank]:
    """A constructor of the per-segment detector bank for these settings."""
    config = BankConfig(arl0=settings.budget_events, enabled=settings.enabled or DEFAULT_ENABLED)
    return lambda: DetectorBank(config)


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
        self.dedup = RecentIds(pipeline.dedup_window)
        self.tracker = tracker
        self.invalid_sink = invalid_sink
        self.counters = PipelineCounters()
        self.index = 0  # position of the next message in the input
        self._newest_ts = 0.0

    # -- batches ---------------------------------------------------------------------------
    def process_messages(self, messages: Sequence[MessageLike]) -> None:
        """Process one micro-batch of Kafka messages, then resolve what has healed."""
        started = time.perf_counter()
        newest = self._newest_ts
        for msg in messages:
            self.process_bytes(msg.value, msg)
        self.end_batch(started)
        if self._newest_ts > newest:
            self.counters.event_age.observe(max(0.0, time.time() - self._newest_ts))

    def end_batch(self, started: float | None = None) -> None:
        """Close a micro-batch: resolve healed alerts, account the batch."""
        self.tracker.sweep(self._segment_ts, self._detector_active, self.index - 1)
        self.counters.batches += 1
        if started is not None:
            self.counters.batch_duration.observe(time.perf_counter() - started)

    # -- single messages -------------------------------------------------------------------
    def process_bytes(self, data: bytes | None, msg: MessageLike | None = None) -> None:
        """Decode and process one message; invalid input goes to the invalid sink."""
        index = self.index
        self.index = index + 1
        if data is None:
            self._refuse(msg, "invalid_json", "message has no value (tombstone)")
            return
        try:
            event = decode_event(data, self.settings.max_message_bytes)
        except InvalidEvent as exc:
            self._refuse(msg, exc.reason, exc.detail)
            return
        self._process(event, index)

    def process_event(self, event: RolloutEvent) -> None:
        """Process an already-validated event (the Parquet replay path)."""
        index = self.index
        self.index = index + 1
        self._process(event, index)

    def refuse(self, reason: str, detail: str) -> None:
        """Count an input record refused before decoding (replay: a bad Parquet row)."""
        self.index += 1
        self._refuse(None, reason, detail)

    def _process(self, event: RolloutEvent, index: int) -> None:
        if self.dedup.seen(event.event_id):
            self.counters.duplicates += 1
            return
        segment = self.segments.get(event.run_id, event.env_id)
        ts = event.ts
        segment.record(event.status, event.reward, event.completion_tokens, ts)
        if ts > self._newest_ts:
            self._newest_ts = ts
        self.counters.processed += 1
        try:
            alarms = segment.bank.update(event)
        except Exception as exc:  # a detector bug must not stop the monitor
            log.exception("detector update failed on event %s", event.event_id)
            self._refuse(None, "processing_error", f"{type(exc).__name__}: {exc}")
            return
        if alarms:
            for alarm in alarms:
                self.tracker.on_alarm(segment.run, segment.env, alarm, index, ts)

    def _refuse(self, msg: MessageLike | None, reason: str, detail: str) -> None:
        self.counters.invalid[reason] = self.counters.invalid.get(reason, 0) + 1
        if self.invalid_sink is not None and msg is not None:
            self.invalid_sink.send(msg, reason, detail)
        log.debug("refused message #%d: %s: %s", self.index - 1, reason, detail)

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
