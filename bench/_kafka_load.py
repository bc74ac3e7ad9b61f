"""Topics for the benchmark: create, preload at full speed, produce at a steady rate, delete."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench._events import EventFactory

DeliveryCallback = Callable[[KafkaError | None, Message], None]

#: Events generated and handed to the producer at once while preloading.
PRELOAD_CHUNK = 50_000
#: Seconds between two rounds of a paced producer.
PACE_TICK_S = 0.005

_PRELOAD_CONFIG = {
    "linger.ms": 50,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "acks": 1,
}


def unique_topic(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for future in futures.values():
        future.result(timeout=30)
    _wait_for_leaders(bootstrap, name, partitions)


def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    names = list(names)
    if not names:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(names, operation_timeout=30).values():
        with contextlib.suppress(KafkaException):  # already gone: nothing to clean up
            future.result(timeout=30)


def delete_groups(bootstrap: str, names: Iterable[str]) -> None:
    """Delete consumer groups (their committed offsets would otherwise linger for days)."""
    names = list(names)
    if not names:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_consumer_groups(names, request_timeout=30).values():
        with contextlib.suppress(KafkaException):  # never committed: nothing to delete
            future.result()


def _wait_for_leaders(bootstrap: str, name: str, partitions: int, timeout_s: float = 30) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=5).topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} has no leader for all {partitions} partitions")


def message_count(bootstrap: str, topic: str, partitions: int) -> int:
    """Sum of the high watermarks of ``topic`` (its message count, nothing being deleted)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("bench.count")})
    try:
        total = 0
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


@dataclass(frozen=True)
class Preloaded:
    topic: str
    events: int
    segments: int
    partitions: int
    bytes: int
    seconds: float


def preload(
    bootstrap: str,
    topic: str,
    events: int,
    segments: int,
    partitions: int,
    compression: str = "none",
    seed: int = 0,
    events_per_second: float = 10_000.0,
) -> Preloaded:
    """Fill ``topic`` with ``events`` healthy events over ``segments``; ts advances steadily."""
    started = time.perf_counter()
    factory = EventFactory(segments, seed)
    producer = Producer(
        {"bootstrap.servers": bootstrap, **_PRELOAD_CONFIG, "compression.type": compression}
    )
    errors: list[str] = []

    def delivered(error: KafkaError | None, _msg: Message) -> None:
        if error is not None:
            errors.append(str(error))

    size = 0
    start_ts = 1_764_000_000.0
    for first in range(0, events, PRELOAD_CHUNK):
        n = min(PRELOAD_CHUNK, events - first)
        ts = start_ts + (first + np.arange(n)) / events_per_second
        for key, value in factory.messages(n, ts):
            size += len(value)
            _produce(producer, topic, key, value, delivered)
        producer.poll(0)
    if producer.flush(120) or errors:
        raise RuntimeError(f"preload of {topic} incomplete: {errors[:3]}")
    counted = message_count(bootstrap, topic, partitions)
    if counted != events:
        raise RuntimeError(f"topic {topic} holds {counted} messages, expected {events}")
    return Preloaded(topic, events, segments, partitions, size, time.perf_counter() - started)


def _produce(
    producer: Producer, topic: str, key: bytes, value: bytes, callback: DeliveryCallback | None
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=callback)
            return
        except BufferError:
            producer.poll(0.05)


def produce_steadily(
    bootstrap: str,
    topic: str,
    segments: int,
    rate: float,
    duration_s: float,
    compression: str = "none",
    seed: int = 1,
) -> np.ndarray:
    """Produce ``rate`` events/s for ``duration_s`` with ``ts`` = produce wall time.

    Returns the wall time (``time.time()``) of each ``produce`` call, in produce order.
    The producer keeps librdkafka's default ``linger.ms`` (5), as a trainer would.
    """
    factory = EventFactory(segments, seed)
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": compression})
    total = int(rate * duration_s)
    produced_at = np.zeros(total)
    sent = 0
    t0 = time.time()
    while sent < total:
        now = time.time()
        due = min(total, int((now - t0) * rate) + 1)
        if due > sent:
            n = due - sent
            for key, value in factory.messages(n, np.full(n, now)):
                produced_at[sent] = time.time()
                _produce(producer, topic, key, value, None)
                sent += 1
            producer.poll(0)
        else:
            time.sleep(PACE_TICK_S)
    if producer.flush(60):
        raise RuntimeError(f"steady producer to {topic} could not deliver everything")
    return produced_at
