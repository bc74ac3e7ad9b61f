"""The daemon: consume rollout events from Kafka, detect, export, alert, commit.

Offsets are committed only after the events they cover are fully processed. A commit, for the
partitions that made progress since the last one:

1. flushes the dead-letter producer, so refused messages are durable;
2. (alerts were handed to the delivery queue when they were raised);
3. writes each partition's checkpoint (its segments' detector banks and counters, its alerts,
   and the offset after the last processed message) to the checkpoint store, durably;
4. commits those offsets to Kafka.

It runs when ``commit_every_seconds`` has passed, on partition revoke (for the revoked
partitions, before they are released), and on clean stop. After an unhandled failure nothing
is committed. On assignment, a partition with a checkpoint resumes from the checkpoint's
offset with its state (the checkpoint is written before the Kafka commit, so it is never
behind it); without one it starts fresh from the committed offset. Either way each event
affects the state exactly once.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import time
from collections.abc import Mapping
from types import FrameType

import detectors
from monitor.alertmanager import AlertmanagerClient, tls_context
from monitor.alerts import AlertsFile, AlertSink, AlertTracker
from monitor.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointStore,
    DirectoryStore,
    KafkaTopicStore,
)
from monitor.config import Settings
from monitor.exposition import SegmentExposition
from monitor.http import MonitorHTTPServer
from monitor.metrics import ConsumerState, build_registry
from monitor.pipeline import Pipeline
from monitor.source import (
    Batch,
    DeadLetterSink,
    RawMessage,
    Source,
    SourceError,
    TopicPartition,
    make_dead_letter_sink,
    make_source,
)

log = logging.getLogger(__name__)

#: Garbage-collector thresholds while consuming. The default first generation (700
#: allocations) runs a collection every few dozen events; decoded events are not tracked
#: (``monitor.events``), and what the detectors allocate per event is short-lived and acyclic.
GC_THRESHOLDS = (50_000, 20, 20)
#: Checkpoints may take at most this share of the loop's time: when writing the checkpoints
#: took ``t`` seconds, the next commit waits at least ``t / CHECKPOINT_SHARE`` (and at least
#: ``commit_every_seconds``). With many segments a checkpoint pickles all of them, so a fixed
#: interval would let checkpointing crowd out consumption; a crash then replays at most that
#: much more from the log (the state is still exactly once).
CHECKPOINT_SHARE = 0.05


class Daemon:
    """One consumer-group member: owns the source, the pipeline and the endpoints."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stopping = False
        self._pending: dict[TopicPartition, int] = {}
        self._last_commit = time.monotonic()
        self._commit_interval = settings.pipeline.commit_every_seconds
        self.source: Source | None = None
        self.dead_letter: DeadLetterSink | None = None
        self.pipeline: Pipeline | None = None
        self.http: MonitorHTTPServer | None = None
        self.checkpoints: CheckpointStore | None = None
        self.checkpoint_load_failures = 0
        self.checkpoints_saved = 0
        self.commit_failures = 0
        # Read by the HTTP thread, written by the consumer thread: the Kafka client must only be
        # called from the consumer thread (confluent-kafka blocks other threads during consume).
        self._assigned: tuple[TopicPartition, ...] = ()
        self._connected = False
        self._lag: dict[TopicPartition, int] = {}
        self._last_refresh = 0.0
        # Next offset of every partition processed so far, and of revoked partitions whose
        # state is kept until the next assignment shows whether they come back (a lost
        # session during a broker outage revokes everything, and nobody else takes over).
        self._positions: dict[TopicPartition, int] = {}
        self._parked: dict[TopicPartition, int] = {}

    # -- control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the current batch, commit and return."""
        self._stopping = True

    def install_signal_handlers(self) -> None:
        def handle(signum: int, frame: FrameType | None) -> None:
            if self._stopping and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl+C aborts
            log.info("received %s, stopping after the current batch", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def readiness(self) -> tuple[bool, str]:
        if self.source is None:
            return False, "starting"
        if not self._connected:
            return False, "broker unreachable"
        if not self._assigned:
            return False, "no partitions assigned"
        return True, "ready"

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        s = self.settings
        with contextlib.ExitStack() as stack:
            sinks: list[AlertSink] = []
            client = self._alert_client()
            if client is not None:
                sinks.append(client.start())
                stack.callback(client.close)
            if s.alertmanager.alerts_file is not None:
                alerts_file = AlertsFile(s.alertmanager.alerts_file)
                sinks.append(alerts_file)
                stack.callback(alerts_file.close)
            tracker = AlertTracker(
                s.detectors.resolve_after_seconds, s.alertmanager.runbook_base_url, sinks
            )
            extra = s.kafka.client_config()
            self.dead_letter = make_dead_letter_sink(
                s.kafka.backend, s.kafka.bootstrap_servers, s.kafka.dead_letter_topic, extra
            )
            stack.callback(self.dead_letter.flush, 10.0)
            self.pipeline = Pipeline(s.pipeline, s.detectors, tracker, self.dead_letter)
            self.checkpoints = self._checkpoint_store()
            if self.checkpoints is not None:
                stack.callback(self.checkpoints.close)
            self.source = make_source(
                s.kafka.backend,
                s.kafka.bootstrap_servers,
                list(s.kafka.topics),
                s.kafka.group_id,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                extra_config={**extra, "session.timeout.ms": s.kafka.session_timeout_ms},
            )
            stack.callback(self.source.close)
            self._start_http(client)
            stack.callback(self._close_http)
            log.info(
                "consuming %s as group %s (detectors: %s)",
                ",".join(s.kafka.topics),
                s.kafka.group_id,
                "compiled" if detectors.COMPILED else "Python, not compiled: run `make compile`",
            )
            self._loop()
            self._commit("stop")
            c = self.pipeline.counters
            log.info(
                "stopped after processing %d events (%d invalid, %d duplicates) in %d segments",
                c.processed,
                sum(c.invalid.values()),
                c.duplicates,
                len(self.pipeline.segments),
            )
        return 0

    def _loop(self) -> None:
        assert self.source is not None and self.pipeline is not None
        settings = self.settings.pipeline
        thresholds = gc.get_threshold()
        gc.collect()
        gc.freeze()  # what start-up allocated is never garbage: out of every collection
        gc.set_threshold(*GC_THRESHOLDS)
        taken = time.monotonic()  # when the last poll returned
        try:
            while not self._stopping:
                # What arrived while the last batch was processed has waited since that poll
                # returned: batch_max_seconds counts from then, not from this call.
                wait = settings.batch_max_seconds - (time.monotonic() - taken)
                batch = self.source.poll_batch(settings.batch_max_events, max(wait, 0.0))
                taken = time.monotonic()
                if batch:
                    self.pipeline.process_messages(batch, release=True)
                    self._track(batch)
                else:
                    self.pipeline.end_batch()
                now = time.monotonic()
                if now - self._last_refresh >= 0.5:
                    self._refresh_state(now)
                if now - self._last_commit >= self._commit_interval:
                    self._commit("interval")
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()

    def _refresh_state(self, now: float) -> None:
        """Copy what the endpoints show from the Kafka client (consumer thread only)."""
        assert self.source is not None
        self._last_refresh = now
        self._connected = self.source.connected
        self._assigned = tuple(self.source.assignment())
        self._lag = self.source.lag()

    def _track(self, batch: list[RawMessage]) -> None:
        offsets = batch.next_offsets if isinstance(batch, Batch) else Batch.of(batch).next_offsets
        pending = self._pending
        for key, offset in offsets.items():
            if offset > pending.get(key, -1):
                pending[key] = offset
        self._positions.update(pending)

    def _commit(self, why: str, only: list[TopicPartition] | None = None) -> None:
        self._last_commit = time.monotonic()
        if not self._pending or self.source is None:
            return
        offsets: Mapping[TopicPartition, int] = (
            dict(self._pending)
            if only is None
            else {tp: o for tp, o in self._pending.items() if tp in set(only)}
        )
        if not offsets:
            return
        if self.dead_letter is not None:
            remaining = self.dead_letter.flush(10.0)
            if remaining:
                log.error("dead-letter flush left %d messages; not committing", remaining)
                return
        try:
            started = time.monotonic()
            self._save_checkpoints(offsets)
            if why == "interval":
                spent = time.monotonic() - started
                self._commit_interval = max(
                    self.settings.pipeline.commit_every_seconds, spent / CHECKPOINT_SHARE
                )
        except OSError as exc:
            log.error("checkpoint write failed (%s); offsets stay uncommitted", exc)
            return
        if not self.source.connected:
            # A synchronous commit would block the loop (and the readiness it refreshes) until
            # the broker answers; the checkpoint covers these offsets, which stay pending.
            self._connected = False
            log.warning("broker unreachable; offset commit deferred")
            return
        try:
            self.source.commit(offsets)
        except SourceError as exc:
            # Coordinator moves and broker restarts make commits fail for a while. The
            # checkpoint already covers these offsets and they stay pending: retried next time.
            self.commit_failures += 1
            log.warning("offset commit failed (%s); retrying at the next commit", exc)
            return
        for tp in offsets:
            self._pending.pop(tp, None)
        log.debug("committed %s (%s)", offsets, why)

    # -- rebalance hooks (called from inside poll) -----------------------------------------
    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", partitions)
        self._last_refresh = 0.0  # refresh the readiness and lag at the next turn
        assert self.source is not None and self.pipeline is not None
        for tp in [tp for tp in self._parked if tp not in partitions]:
            del self._parked[tp]
            self.pipeline.drop(tp)
        seeks = {}
        for tp in partitions:
            offset = self._resume(tp)
            if offset is not None:
                seeks[tp] = offset
        if seeks:
            log.info("resuming from checkpoints at %s", seeks)
            self.source.seek(seeks)

    def _resume(self, tp: TopicPartition) -> int | None:
        """Where ``tp`` resumes: the state kept since its revoke when nobody moved it on,
        else its checkpoint; None to start fresh from the committed offset."""
        parked = self._parked.pop(tp, None)
        checkpoint = self._load_checkpoint(tp, keep=parked is not None)
        if parked is not None and (checkpoint is None or checkpoint.next_offset == parked):
            return parked
        if checkpoint is None:
            return None
        assert self.pipeline is not None
        self.pipeline.restore(tp, checkpoint.state)
        return checkpoint.next_offset

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s; committing their processed offsets", partitions)
        self._commit("revoke", only=partitions)
        for tp in partitions:
            self._pending.pop(tp, None)
            if tp in self._positions:
                self._parked[tp] = self._positions[tp]

    # -- checkpoints -----------------------------------------------------------------------
    def _checkpoint_store(self) -> CheckpointStore | None:
        c = self.settings.checkpoint
        if c.store == "directory":
            return DirectoryStore(c.directory)
        if c.store == "kafka":
            k = self.settings.kafka
            return KafkaTopicStore(k.bootstrap_servers, c.topic, k.client_config())
        return None

    def _save_checkpoints(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.checkpoints is None or self.pipeline is None:
            return
        pipeline = self.pipeline
        self.checkpoints.save(
            [
                Checkpoint(t, p, offset, pipeline.snapshot((t, p)))
                for (t, p), offset in offsets.items()
            ]
        )
        self.checkpoints_saved += len(offsets)

    def _load_checkpoint(self, tp: TopicPartition, keep: bool = False) -> Checkpoint | None:
        """The stored checkpoint of ``tp`` (None when absent or unusable: the partition then
        starts fresh from its committed offset, or from the state kept since its revoke). The
        in-memory state of ``tp`` is dropped first unless ``keep``."""
        assert self.pipeline is not None
        if not keep:
            self.pipeline.drop(tp)
        if self.checkpoints is None:
            return None
        try:
            return self.checkpoints.load(*tp)
        except CheckpointError as exc:
            self.checkpoint_load_failures += 1
            log.error("%s; %s resumes without it", exc, tp)
            return None

    # -- endpoints -------------------------------------------------------------------------
    def _alert_client(self) -> AlertmanagerClient | None:
        am = self.settings.alertmanager
        if not am.url:
            return None
        auth = None
        if am.bearer_token is not None:
            auth = f"Bearer {am.bearer_token.get_secret_value()}"
        elif am.username and am.password is not None:
            auth = AlertmanagerClient.basic_auth(am.username, am.password.get_secret_value())
        return AlertmanagerClient(
            am.url,
            resend_seconds=am.resend_seconds,
            expire_seconds=am.expire_seconds,
            queue_size=am.queue_size,
            timeout_seconds=am.timeout_seconds,
            max_backoff_seconds=am.max_backoff_seconds,
            auth_header=auth,
            ssl_context=tls_context(am.verify_tls, am.ca_file),
        )

    def _start_http(self, client: AlertmanagerClient | None) -> None:
        assert self.pipeline is not None and self.source is not None
        dead_letter = self.dead_letter
        consumer = ConsumerState(
            lag=lambda: self._lag,
            ready=lambda: self.readiness()[0],
            dead_letter_failures=lambda: dead_letter.failures if dead_letter else 0,
            assigned_partitions=lambda: len(self._assigned),
            checkpoint_load_failures=lambda: self.checkpoint_load_failures,
            checkpoints_saved=lambda: self.checkpoints_saved,
        )
        segments = SegmentExposition(self.pipeline)
        registry = build_registry(
            self.pipeline,
            consumer,
            client,
            per_segment=False,
            extra_cost=lambda: segments.last_seconds,
        )
        h = self.settings.http
        auth = None
        if h.basic_auth_username and h.basic_auth_password is not None:
            auth = (h.basic_auth_username, h.basic_auth_password.get_secret_value())
        tls = (h.tls_cert_file, h.tls_key_file) if h.tls_cert_file and h.tls_key_file else None
        self.http = MonitorHTTPServer(
            h.host,
            h.port,
            registry,
            self.readiness,
            basic_auth=auth,
            tls=tls,
            extra=segments.chunks,
        ).start()
        log.info("serving /metrics, /healthz, /readyz on %s", h.listen)

    def _close_http(self) -> None:
        if self.http is not None:
            self.http.close()
