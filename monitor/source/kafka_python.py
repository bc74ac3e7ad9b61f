"""The kafka-python (3.x) backend: the consumer and the dead-letter producer.

kafka-python 3 runs its network I/O, heartbeats and rebalance listeners on a thread of
its own, and a listener that blocks on the consumer from that thread fails ("Cannot block
on net.run() from the IO thread itself"). The hooks therefore run on a short-lived thread
while an async listener awaits them on the I/O thread: the group does not move on until a
hook returns, the I/O thread keeps heartbeating, and a synchronous :meth:`commit` from
``on_revoke`` goes through while this member still owns the partitions. The caller's
thread is blocked in ``poll_batch`` or ``close`` meanwhile, so hooks never run alongside
the caller's own code.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from kafka import (
    AsyncConsumerRebalanceListener,
    KafkaConsumer,
    KafkaProducer,
    OffsetAndMetadata,
)
from kafka import TopicPartition as KafkaTopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import IllegalStateError, KafkaError, MessageSizeTooLargeError
from kafka.future import Future

from monitor.source._config import (
    CONSUMER_OWNED_KEYS,
    KAFKA_PYTHON_CONSUMER_KEYS,
    KAFKA_PYTHON_PRODUCER_KEYS,
    PRODUCER_OWNED_KEYS,
    kafka_python_kwargs,
)
from monitor.source._health import DEFAULT_STALE_AFTER_S, Reachability
from monitor.source._lag import DEFAULT_LAG_REFRESH_S, LagCache
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

#: Milliseconds a broker query made while refreshing the lag may take.
_QUERY_TIMEOUT_MS = 1000
#: Seconds between two reads of the client's connection count.
_CONNECTION_CHECK_S = 1.0
#: Milliseconds ``send`` may block for metadata or room in the producer's buffer.
_MAX_BLOCK_MS = 5000
#: Seconds a group join may take before the consumer is replaced (see ``poll_batch``).
JOIN_STALL_S = 30.0


class _EventLoop(Protocol):
    def call_soon_threadsafe(self, callback: Callable[[], Any]) -> Any: ...


class KafkaPythonSource:
    """A :class:`~monitor.source.base.Source` on a kafka-python ``KafkaConsumer``.

    Auto-commit is off and consumption starts at the earliest offset when the group has
    none; ``check_crcs`` stays at its default (on). Construction needs the broker: it
    raises :class:`~monitor.source.base.SourceError` when none answers within
    kafka-python's bootstrap timeout (30 s).

    Parameters
    ----------
    bootstrap_servers
        ``host:port[,host:port...]``.
    topics
        Topics to subscribe to.
    group_id
        Consumer group.
    on_assign, on_revoke
        Rebalance hooks, called with ``(topic, partition)`` lists while :meth:`poll_batch`
        or :meth:`close` is running; ``on_revoke`` runs before the partitions are given up,
        so a synchronous :meth:`commit` in it lands.
    extra_config
        librdkafka-style settings, translated (``security.protocol``, ``sasl.mechanism``,
        ``sasl.username``, ``sasl.password``, ``ssl.ca.location``,
        ``ssl.certificate.location``, ``ssl.key.location``, session, fetch and reconnect
        settings: see ``monitor.source._config``). A key without a kafka-python
        equivalent raises :class:`~monitor.source.base.SourceError`.
    lag_refresh_s
        Seconds between two reads of the watermarks behind :meth:`lag`.
    stale_after_s
        Seconds without a sign of the broker after which :attr:`connected` is False.
    join_stall_s
        Seconds a group join (from the revoke that starts it to the assignment that ends
        it) may take. kafka-python 3.0.12 now and then never finishes a leader's join: the
        log stops after "Elected group leader -- performing partition assignments" and the
        consumer stays without partitions for good. Past this time :meth:`poll_batch`
        closes the consumer (leaving the group) and joins again with a new one.
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
        join_stall_s: float = JOIN_STALL_S,
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
        self._connections_checked_at = -float("inf")
        self._hook_error: BaseException | None = None
        self._closing = False
        self._seeks: dict[TopicPartition, int] = {}
        self.join_stall_s = join_stall_s
        self.rejoins = 0  # consumers replaced after a stalled join
        self._kwargs = kafka_python_kwargs(
            extra_config, CONSUMER_OWNED_KEYS, KAFKA_PYTHON_CONSUMER_KEYS
        )
        self._consumer = self._subscribed_consumer()

    def _subscribed_consumer(self) -> KafkaConsumer:
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **self._kwargs,
            )
        except KafkaError as exc:
            raise SourceError(f"cannot reach Kafka at {self.bootstrap_servers}: {exc}") from exc
        self._health.alive()
        # Set by the listener: when the current join started (None once assigned).
        self._joining_since: float | None = time.monotonic()
        listener = _HookListener(self, _event_loop_of(consumer), consumer)
        consumer.subscribe(topics=self.topics, listener=listener)
        return consumer

    def _join_again(self) -> None:
        """Replace a consumer whose group join stalled (see ``join_stall_s``).

        Only while the broker answers: a join that waits for the broker is not stalled.
        The new consumer is built first, so a failure leaves the old one in place.
        """
        if self._connection_count() == 0:
            return
        self.rejoins += 1
        log.warning(
            "the group join of %s has not finished in %.0f s; leaving the group and joining "
            "again with a new consumer",
            self.group_id,
            self.join_stall_s,
        )
        stalled = self._consumer
        try:
            self._consumer = self._subscribed_consumer()
        except SourceError as exc:
            self._joining_since = time.monotonic()
            log.warning("no new consumer (%s); waiting for the current join again", exc)
            return
        try:
            stalled.close(autocommit=False)
        except Exception as exc:  # the old client is dropped whatever its close did
            log.warning("closing the stalled consumer failed: %s", exc)

    def __enter__(self) -> KafkaPythonSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def poll_batch(self, max_messages: int, timeout_s: float) -> Batch:
        try:
            polled = self._consumer.poll(
                timeout_ms=max(0, int(timeout_s * 1000)), max_records=max_messages
            )
        except KafkaError as exc:
            self._raise_hook_error()
            if not exc.retriable:
                raise SourceError(f"poll failed: {exc}") from exc
            if self._health.trouble():
                log.warning("poll from Kafka at %s failed: %s", self.bootstrap_servers, exc)
            return Batch()
        joining = self._joining_since
        if joining is not None and time.monotonic() - joining > self.join_stall_s:
            self._join_again()
        batch = Batch.of(_raw(record) for records in polled.values() for record in records)
        if batch:
            self._health.alive()
            self._lag.advance(batch.next_offsets)
        return batch

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        request = {
            KafkaTopicPartition(t, p): OffsetAndMetadata(offset, "", -1)
            for (t, p), offset in offsets.items()
        }
        try:
            self._consumer.commit(request)
        except KafkaError as exc:
            raise SourceError(f"commit of {dict(offsets)} failed: {exc}") from exc

    def assignment(self) -> list[TopicPartition]:
        return sorted((tp.topic, tp.partition) for tp in self._consumer.assignment())

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._seeks.update(offsets)

    def lag(self) -> dict[TopicPartition, int]:
        return self._lag.lag(self.assignment())

    @property
    def connected(self) -> bool:
        """Whether the client holds a connection to a broker, read at most once a second.

        kafka-python reports reachability nowhere else: it logs failed requests and
        retries them inside ``poll``.
        """
        now = time.monotonic()
        if now - self._connections_checked_at >= _CONNECTION_CHECK_S:
            self._connections_checked_at = now
            if self._connection_count() > 0:
                self._health.alive()
            else:
                self._health.trouble()
        return self._health.reachable

    def close(self) -> None:
        """Leave the group: ``on_revoke`` runs first; an error it raised is raised here."""
        if self._closing:
            return
        self._closing = True
        try:
            self._consumer.close(autocommit=False)
        except KafkaError as exc:
            self._raise_hook_error()
            raise SourceError(f"closing the consumer failed: {exc}") from exc
        self._raise_hook_error()

    def _raise_hook_error(self) -> None:
        error, self._hook_error = self._hook_error, None
        if error is not None:
            raise error

    def _connection_count(self) -> float:
        if self._closing:
            return 0.0
        metrics = self._consumer.metrics() or {}
        return float(metrics.get("consumer-metrics", {}).get("connection-count", 0.0))

    def _high_watermarks(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """High watermarks from fetch responses; the broker is asked only where none is."""
        result: dict[TopicPartition, int] = {}
        unknown: list[KafkaTopicPartition] = []
        for topic, partition in partitions:
            tp = KafkaTopicPartition(topic, partition)
            try:
                high = self._consumer.highwater(tp)
            except IllegalStateError:
                continue
            if high is None:
                unknown.append(tp)
            else:
                result[(topic, partition)] = high
        if unknown:
            try:
                ends = self._consumer.end_offsets(unknown, timeout_ms=_QUERY_TIMEOUT_MS)
            except KafkaError as exc:
                log.debug("no high watermark for %s: %s", unknown, exc)
            else:
                result.update({(tp.topic, tp.partition): end for tp, end in ends.items()})
        return result

    def _start_positions(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        result: dict[TopicPartition, int] = {}
        for topic, partition in partitions:
            try:
                offset = self._consumer.position(
                    KafkaTopicPartition(topic, partition), timeout_ms=_QUERY_TIMEOUT_MS
                )
            except (KafkaError, IllegalStateError) as exc:
                log.debug("no position for %s[%d]: %s", topic, partition, exc)
                continue
            if offset is not None:
                result[(topic, partition)] = offset
        return result


class _HookListener(AsyncConsumerRebalanceListener):
    """Runs the source's hooks off the I/O thread and awaits them on it."""

    def __init__(self, source: KafkaPythonSource, loop: _EventLoop, consumer: Any) -> None:
        self.source = source
        self.loop = loop
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[KafkaTopicPartition]) -> None:
        if self.consumer is not self.source._consumer:
            return  # a replaced consumer closing (see KafkaPythonSource._join_again)
        self.source._joining_since = time.monotonic()  # a (re)join starts with a revoke
        partitions = sorted((tp.topic, tp.partition) for tp in revoked)
        try:
            if self.source.on_revoke is not None and partitions:
                await self._run_hook(self.source.on_revoke, partitions)
        finally:
            self.source._lag.forget(partitions)

    async def on_partitions_assigned(self, assigned: set[KafkaTopicPartition]) -> None:
        if self.consumer is not self.source._consumer:
            return
        self.source._health.alive()
        self.source._seeks.clear()
        if self.source.on_assign is not None:
            partitions = sorted((tp.topic, tp.partition) for tp in assigned)
            await self._run_hook(self.source.on_assign, partitions)
        for (topic, partition), offset in self.source._seeks.items():
            self.source._consumer.seek(KafkaTopicPartition(topic, partition), offset)
        self.source._seeks.clear()
        self.source._joining_since = None

    def _run_hook(self, hook: RebalanceHook, partitions: list[TopicPartition]) -> Awaitable[None]:
        """A future of ``hook(partitions)`` run on its own thread, resolved on the loop.

        The hook's exception is kept for the source to raise to its caller. During
        ``close()`` the future still succeeds, since an error leaving the listener there
        would stop kafka-python's close half way (its client left open).
        """
        done: Future = Future()
        failure: list[BaseException] = []

        def resolve() -> None:  # kafka-python's loop takes plain functions, not partials
            if failure:
                done.failure(failure[0])
            else:
                done.success(None)

        def run() -> None:
            try:
                hook(partitions)
            except BaseException as exc:
                self.source._hook_error = exc
                if not self.source._closing:
                    failure.append(exc)
            self.loop.call_soon_threadsafe(resolve)

        threading.Thread(target=run, name="kafka-rebalance-hook", daemon=True).start()
        return done


def _event_loop_of(consumer: KafkaConsumer) -> _EventLoop:
    """The consumer's I/O event loop, to resolve a future from another thread.

    kafka-python exposes no public handle for it; the check keeps a future change of its
    internals a clear error at construction rather than a hang at the first rebalance.
    """
    loop = getattr(consumer, "_net", None)
    if loop is None or not callable(getattr(loop, "call_soon_threadsafe", None)):
        consumer.close(autocommit=False)
        raise SourceError("this kafka-python version has no I/O event loop to run hooks on")
    return loop


class KafkaPythonDeadLetterSink:
    """A :class:`~monitor.source.base.DeadLetterSink` on a kafka-python ``KafkaProducer``.

    A value larger than ``max_value_bytes``, or refused by the client or the broker as too
    large, is sent as its first 64 KiB with ``x-rollout-monitor-truncated``.

    Parameters
    ----------
    bootstrap_servers
        ``host:port[,host:port...]``.
    topic
        The dead-letter topic.
    extra_config
        librdkafka-style producer settings, translated as for the consumer.
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
        self._lock = threading.Lock()
        self._pending = 0
        self._failures = 0
        self._too_large: deque[tuple[RawMessage, str, str]] = deque()
        kwargs = {
            "acks": "all",
            "linger_ms": 5,
            # With idempotence a record the broker refuses as too large fails the producer
            # for good, and the truncated retry could never be sent.
            "enable_idempotence": False,
            **kafka_python_kwargs(extra_config, PRODUCER_OWNED_KEYS, KAFKA_PYTHON_PRODUCER_KEYS),
        }
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap_servers, max_block_ms=_MAX_BLOCK_MS, **kwargs
            )
        except KafkaError as exc:
            raise SourceError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc

    def __enter__(self) -> KafkaPythonDeadLetterSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, msg: RawMessage, reason: str, detail: str) -> None:
        self._resend_too_large()
        too_large = msg.value is not None and len(msg.value) > self.max_value_bytes
        self._produce(msg, reason, detail, truncate=too_large)

    def flush(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            self._resend_too_large()
            try:
                self._producer.flush(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaError as exc:
                log.debug("dead-letter flush incomplete: %s", exc)
            if not self._too_large or time.monotonic() >= deadline:
                with self._lock:
                    return self._pending + len(self._too_large)

    @property
    def failures(self) -> int:
        return self._failures

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is queued, then release the producer."""
        self.flush(timeout_s)
        self._producer.close(timeout=timeout_s)

    def _produce(self, msg: RawMessage, reason: str, detail: str, *, truncate: bool) -> None:
        value = truncated_value(msg.value) if truncate else msg.value
        original_length = len(msg.value) if truncate and msg.value is not None else None
        headers = dead_letter_headers(msg, reason, detail, original_length)
        try:
            future = self._producer.send(self.topic, value=value, key=msg.key, headers=headers)
        except MessageSizeTooLargeError:
            if not truncate:
                self._produce(msg, reason, detail, truncate=True)
                return
            self._failed(msg, "too large even truncated")
            return
        except KafkaError as exc:
            self._failed(msg, str(exc))
            return
        with self._lock:
            self._pending += 1
        future.add_callback(self._delivered)
        future.add_errback(functools.partial(self._not_delivered, msg, reason, detail, truncate))

    def _delivered(self, _metadata: Any) -> None:
        with self._lock:
            self._pending -= 1

    def _not_delivered(
        self, msg: RawMessage, reason: str, detail: str, truncated: bool, error: Exception
    ) -> None:
        # Runs on the producer's I/O thread: a retry is left for the caller's next call.
        with self._lock:
            self._pending -= 1
        if not truncated and isinstance(error, MessageSizeTooLargeError):
            self._too_large.append((msg, reason, detail))
            return
        self._failed(msg, str(error))

    def _resend_too_large(self) -> None:
        while self._too_large:
            msg, reason, detail = self._too_large.popleft()
            self._produce(msg, reason, detail, truncate=True)

    def _failed(self, msg: RawMessage, why: str) -> None:
        with self._lock:
            self._failures += 1
        log.error(
            "dead-letter record for %s[%d]@%d not delivered: %s",
            msg.topic,
            msg.partition,
            msg.offset,
            why,
        )


def _raw(record: ConsumerRecord) -> RawMessage:
    timestamp = record.timestamp
    return RawMessage(
        value=record.value,
        key=record.key,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=None if timestamp is None or timestamp < 0 else timestamp,
        headers=tuple(record.headers) if record.headers else (),
    )
