"""The confluent-kafka (librdkafka) backend: the consumer and the dead-letter producer."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from confluent_kafka import TopicPartition as KafkaTopicPartition

from monitor.source._config import CONSUMER_OWNED_KEYS, PRODUCER_OWNED_KEYS, checked_extra
from monitor.source._health import DEFAULT_STALE_AFTER_S, Reachability
from monitor.source._lag import DEFAULT_LAG_REFRESH_S, LagCache
from monitor.source._records import records as _batch
from monitor.source.base import (
    DEFAULT_MAX_VALUE_BYTES,
    Batch,
    RawMessage,
    RebalanceHook,
    SourceError,
    TopicPartition,
    dead_letter_headers,
    truncated_value,
)

log = logging.getLogger(__name__)

#: Error-callback codes that mean the broker cannot be reached.
_UNREACHABLE = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})
#: Milliseconds between two librdkafka statistics reports (the broker-up signal).
_STATISTICS_INTERVAL_MS = 2000
#: Seconds a broker query made while refreshing the lag may take.
_QUERY_TIMEOUT_S = 1.0
#: Seconds ``send`` waits for room when the producer's local queue is full.
_QUEUE_FULL_WAIT_S = 5.0
#: Consumer prefetch defaults (``extra_config`` may override them). librdkafka's own
#: (``fetch.queue.backoff.ms=1000``, ``queued.max.messages.kbytes=65536``) keep up to 64 MiB
#: of fetched records in memory and idle the fetcher for a second whenever that queue is
#: full; a consumer that processes records slower than the broker serves them always has a
#: full queue. 16 MiB and 10 ms keep it fed with a quarter of the memory.
PREFETCH_DEFAULTS: dict[str, Any] = {
    "fetch.queue.backoff.ms": 10,
    "queued.max.messages.kbytes": 16384,
}


class ConfluentSource:
    """A :class:`~monitor.source.base.Source` on a confluent-kafka ``Consumer``.

    Auto-commit and the automatic offset store are off and consumption starts at the
    earliest offset when the group has none. Batches come from ``consume()``; error events
    (partition EOF and the like) are logged and left out. Partitions lost without a clean
    revoke (the group evicted this member) go to ``on_revoke`` too; a commit made there
    fails with :class:`~monitor.source.base.SourceError`.

    Parameters
    ----------
    bootstrap_servers
        ``host:port[,host:port...]``.
    topics
        Topics to subscribe to.
    group_id
        Consumer group.
    on_assign, on_revoke
        Rebalance hooks, called with ``(topic, partition)`` lists from within
        :meth:`poll_batch` or :meth:`close`; ``on_revoke`` runs before the partitions are
        given up, so a synchronous :meth:`commit` in it lands.
    extra_config
        Further librdkafka settings (``security.protocol``, ``sasl.*``, ``ssl.*``, ...).
    lag_refresh_s
        Seconds between two reads of the watermarks behind :meth:`lag`.
    stale_after_s
        Seconds without a sign of the broker after which :attr:`connected` is False.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: RebalanceHook | None = None,
        on_revoke: RebalanceHook | None = None,
        extra_config: Mapping[str, Any] | None = None,
        lag_refresh_s: float = DEFAULT_LAG_REFRESH_S,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = list(topics)
        self.group_id = group_id
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.extra_config = dict(extra_config or {})
        self.lag_refresh_s = lag_refresh_s
        self.stale_after_s = stale_after_s
        self._health = Reachability(stale_after_s)
        self._lag = LagCache(self._high_watermarks, self._start_positions, lag_refresh_s)
        self._closing_errors: list[BaseException] | None = None
        self._closed = False
        self._seeks: dict[TopicPartition, int] = {}
        self._in_rebalance = False
        self._unconfirmed: dict[TopicPartition, int] = {}  # sent, not yet confirmed
        self._commit_failed: dict[TopicPartition, str] = {}
        config = {
            "logger": log,
            **PREFETCH_DEFAULTS,
            **checked_extra(extra_config, CONSUMER_OWNED_KEYS),
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "statistics.interval.ms": _STATISTICS_INTERVAL_MS,
            "error_cb": self._on_error,
            "stats_cb": self._on_stats,
            "on_commit": self._committed,
        }
        try:
            self._consumer = Consumer(config)
            self._consumer.subscribe(
                self.topics,
                on_assign=self._assigned,
                on_revoke=self._revoked,
                on_lost=self._revoked,
            )
        except KafkaException as exc:
            raise SourceError(f"cannot create a consumer for {bootstrap_servers}: {exc}") from exc

    def __enter__(self) -> ConfluentSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def poll_batch(self, max_messages: int, timeout_s: float) -> Batch:
        try:
            messages = self._consumer.consume(num_messages=max_messages, timeout=timeout_s)
        except KafkaException as exc:
            _raise_unless_transient(exc, "consume")
            return Batch()
        batch = _batch(messages)
        if batch:
            self._health.alive()
            self._lag.advance(batch.next_offsets)
        return batch

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets``: synchronously inside a rebalance callback, else asynchronously.

        A synchronous commit can block in librdkafka with no bound (for instance right after
        a broker restart), and Python cannot even run its signal handlers meanwhile. Outside
        the rebalance callbacks the commit is therefore sent and its result comes back to
        :meth:`_committed` during a later ``consume``; offsets not yet confirmed are sent
        again with the next commit, and a failure reported since the last call is raised
        here (after this call's commit was sent), so the caller keeps its offsets pending.
        Offsets of partitions this consumer no longer owns are not sent again.
        ``close()`` waits for commits still in flight. The commits that must be on the
        broker before the partitions move, those of ``on_revoke``, stay synchronous.
        """
        if not offsets:
            return
        if self._in_rebalance:
            self._commit_sync(offsets)
            return
        if self._unconfirmed:
            owned = set(self.assignment())
            self._unconfirmed = {tp: o for tp, o in self._unconfirmed.items() if tp in owned}
        self._unconfirmed.update(offsets)
        request = [KafkaTopicPartition(t, p, o) for (t, p), o in self._unconfirmed.items()]
        failed, self._commit_failed = self._commit_failed, {}
        try:
            self._consumer.commit(offsets=request, asynchronous=True)
        except KafkaException as exc:
            raise SourceError(f"commit of {dict(offsets)} failed: {exc.args[0]}") from exc
        if failed:
            raise SourceError(f"an earlier commit failed for {failed} (owned ones are sent again)")

    def _commit_sync(self, offsets: Mapping[TopicPartition, int]) -> None:
        request = [KafkaTopicPartition(t, p, offset) for (t, p), offset in offsets.items()]
        try:
            result = self._consumer.commit(offsets=request, asynchronous=False)
        except KafkaException as exc:
            raise SourceError(f"commit of {dict(offsets)} failed: {exc.args[0]}") from exc
        failed = {(tp.topic, tp.partition): str(tp.error) for tp in result if tp.error}
        for tp in offsets:
            if tp not in failed and self._unconfirmed.get(tp, -1) <= offsets[tp]:
                self._unconfirmed.pop(tp, None)
        if failed:
            raise SourceError(f"commit failed for {failed}")

    def _committed(self, error: KafkaError | None, partitions: list[KafkaTopicPartition]) -> None:
        """librdkafka's result of an asynchronous commit (served inside ``consume``)."""
        for tp in partitions:
            key = (tp.topic, tp.partition)
            why = tp.error or error
            if why is not None:
                self._commit_failed[key] = str(why)
            elif self._unconfirmed.get(key) == tp.offset:
                del self._unconfirmed[key]

    def assignment(self) -> list[TopicPartition]:
        return sorted((tp.topic, tp.partition) for tp in self._consumer.assignment())

    def lag(self) -> dict[TopicPartition, int]:
        return self._lag.lag(self.assignment())

    @property
    def connected(self) -> bool:
        return self._health.reachable

    def close(self) -> None:
        """Leave the group: ``on_revoke`` runs first; an error it raised is raised here."""
        if self._closed:
            return
        self._closed = True
        self._closing_errors = []
        try:
            self._consumer.close()
        except KafkaException as exc:
            raise SourceError(f"closing the consumer failed: {exc}") from exc
        if self._closing_errors:
            raise self._closing_errors[0]

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._seeks.update(offsets)

    def _assigned(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        self._in_rebalance = True
        try:
            self._assign(consumer, partitions)
        finally:
            self._in_rebalance = False

    def _assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        self._health.alive()
        self._seeks.clear()
        if self.on_assign is not None:
            self.on_assign(sorted((tp.topic, tp.partition) for tp in partitions))
        if self._seeks:
            # Setting start offsets from the assign callback: assign them explicitly.
            for tp in partitions:
                offset = self._seeks.get((tp.topic, tp.partition))
                if offset is not None:
                    tp.offset = offset
            self._seeks.clear()
            consumer.assign(partitions)

    def _revoked(self, _consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        revoked = sorted((tp.topic, tp.partition) for tp in partitions)
        self._in_rebalance = True
        try:
            if self.on_revoke is not None and revoked:
                self.on_revoke(revoked)
        except Exception as exc:
            # Kept for close() to raise once the consumer is closed, so that the client
            # is released whatever the hook did.
            if self._closing_errors is None:
                raise
            self._closing_errors.append(exc)
        finally:
            self._in_rebalance = False
            for tp in revoked:
                self._unconfirmed.pop(tp, None)
                self._commit_failed.pop(tp, None)
            self._lag.forget(revoked)

    def _on_error(self, error: KafkaError) -> None:
        if error.code() in _UNREACHABLE:
            if self._health.trouble():
                log.warning("Kafka at %s unreachable: %s", self.bootstrap_servers, error)
            else:
                log.debug("Kafka at %s still unreachable: %s", self.bootstrap_servers, error)
        elif error.fatal():
            log.error("fatal Kafka consumer error: %s", error)
        else:
            log.warning("Kafka consumer error: %s", error)

    def _on_stats(self, stats_json: str) -> None:
        brokers = json.loads(stats_json).get("brokers", {})
        if any(b.get("state") == "UP" for b in brokers.values()):
            self._health.alive()

    def _high_watermarks(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Watermarks cached from fetch responses; the broker is asked only when none is."""
        result: dict[TopicPartition, int] = {}
        for topic, partition in partitions:
            tp = KafkaTopicPartition(topic, partition)
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                try:
                    _low, high = self._consumer.get_watermark_offsets(tp, _QUERY_TIMEOUT_S)
                except KafkaException as exc:
                    log.debug("no high watermark for %s: %s", tp, exc)
                    continue
            result[(topic, partition)] = high
        return result

    def _start_positions(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Committed offsets, or the low watermark (``earliest``) where there is none."""
        try:
            committed = self._consumer.committed(
                [KafkaTopicPartition(t, p) for t, p in partitions], _QUERY_TIMEOUT_S
            )
            result: dict[TopicPartition, int] = {}
            for tp in committed:
                offset = tp.offset
                if offset < 0:
                    offset, _high = self._consumer.get_watermark_offsets(tp, _QUERY_TIMEOUT_S)
                result[(tp.topic, tp.partition)] = offset
        except KafkaException as exc:
            log.debug("no start positions for %s: %s", partitions, exc)
            return {}
        return result


class ConfluentDeadLetterSink:
    """A :class:`~monitor.source.base.DeadLetterSink` on a confluent-kafka ``Producer``.

    A value larger than ``max_value_bytes``, or refused by the client or the broker as too
    large, is sent as its first 64 KiB with ``x-rollout-monitor-truncated``.

    Parameters
    ----------
    bootstrap_servers
        ``host:port[,host:port...]``.
    topic
        The dead-letter topic.
    extra_config
        Further librdkafka producer settings.
    max_value_bytes
        Values above this size are truncated without trying the full value.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        extra_config: Mapping[str, Any] | None = None,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.extra_config = dict(extra_config or {})
        self.max_value_bytes = max_value_bytes
        self._failures = 0
        self._too_large: deque[tuple[RawMessage, str, str]] = deque()
        config = {
            "logger": log,
            "acks": "all",
            "linger.ms": 5,
            **checked_extra(extra_config, PRODUCER_OWNED_KEYS),
            "bootstrap.servers": bootstrap_servers,
            "error_cb": self._on_error,
        }
        try:
            self._producer = Producer(config)
        except KafkaException as exc:
            raise SourceError(f"cannot create a producer for {bootstrap_servers}: {exc}") from exc

    def __enter__(self) -> ConfluentDeadLetterSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush(10.0)

    def send(self, msg: RawMessage, reason: str, detail: str) -> None:
        self._resend_too_large()
        too_large = msg.value is not None and len(msg.value) > self.max_value_bytes
        self._produce(msg, reason, detail, truncate=too_large)
        self._producer.poll(0)

    def flush(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            self._resend_too_large()
            remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
            if not self._too_large or time.monotonic() >= deadline:
                return remaining + len(self._too_large)

    @property
    def failures(self) -> int:
        return self._failures

    def _produce(self, msg: RawMessage, reason: str, detail: str, *, truncate: bool) -> None:
        value = truncated_value(msg.value) if truncate else msg.value
        original_length = len(msg.value) if truncate and msg.value is not None else None
        headers: list[tuple[str, str | bytes | None]] = list(
            dead_letter_headers(msg, reason, detail, original_length)
        )
        on_delivery = functools.partial(self._delivered, msg, reason, detail, truncate)
        try:
            self._produce_waiting_for_room(value, msg.key, headers, on_delivery)
        except KafkaException as exc:
            if not truncate and _error_code(exc) == KafkaError.MSG_SIZE_TOO_LARGE:
                self._produce(msg, reason, detail, truncate=True)
                return
            self._failed(msg, str(exc))
        except BufferError as exc:
            self._failed(msg, f"local queue full: {exc}")

    def _produce_waiting_for_room(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
        on_delivery: Any,
    ) -> None:
        deadline = time.monotonic() + _QUEUE_FULL_WAIT_S
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key, headers=headers, on_delivery=on_delivery
                )
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    raise
                self._producer.poll(0.1)

    def _delivered(
        self,
        msg: RawMessage,
        reason: str,
        detail: str,
        truncated: bool,
        error: KafkaError | None,
        _record: Message,
    ) -> None:
        if error is None:
            return
        if not truncated and error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            self._too_large.append((msg, reason, detail))
            return
        self._failed(msg, str(error))

    def _resend_too_large(self) -> None:
        while self._too_large:
            msg, reason, detail = self._too_large.popleft()
            self._produce(msg, reason, detail, truncate=True)

    def _failed(self, msg: RawMessage, why: str) -> None:
        self._failures += 1
        log.error(
            "dead-letter record for %s[%d]@%d not delivered: %s",
            msg.topic,
            msg.partition,
            msg.offset,
            why,
        )

    def _on_error(self, error: KafkaError) -> None:
        log.warning("Kafka dead-letter producer error: %s", error)


def _error_code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _raise_unless_transient(exc: KafkaException, what: str) -> None:
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError) and not error.fatal():
        log.warning("%s failed, will retry: %s", what, error)
        return
    raise SourceError(f"{what} failed: {exc}") from exc
