"""Both consumer backends against the real broker, through the same parametrized tests.

The broker is the local stack's (``make stack-up``; ``KAFKA_PORT`` moves it): when nothing
answers there, every test that needs it fails naming the address. Each test makes its own
topics, deleted afterwards, and its own groups.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from stack import Stack, delete_topics, unique_name, wait_until

from monitor.events import InvalidEvent, decode_event
from monitor.source import (
    BACKENDS,
    ConfluentDeadLetterSink,
    ConfluentSource,
    KafkaPythonDeadLetterSink,
    KafkaPythonSource,
    RawMessage,
    Source,
    SourceError,
    TopicPartition,
    make_dead_letter_sink,
    make_source,
)
from monitor.source.base import (
    DEFAULT_MAX_VALUE_BYTES,
    DETAIL_HEADER,
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    TRUNCATED_HEADER,
    TRUNCATED_VALUE_BYTES,
)

PARTITIONS = 4
# A member that leaves is noticed by the others at their next heartbeat.
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 300}
# For the tests that fail before any connection is made.
ANY_ADDRESS = "127.0.0.1:9092"

pytestmark = pytest.mark.stack

MakeSource = Callable[..., Source]


class Kafka:
    """The stack's broker, and the topics a test made on it."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.created: list[str] = []

    def topic(self, partitions: int = PARTITIONS, **config: str) -> str:
        """A new topic whose partitions all have a leader."""
        name = unique_name("test-source")
        futures = self.admin.create_topics([NewTopic(name, partitions, 1, config=config)])
        futures[name].result(timeout=10)
        self.created.append(name)

        def led() -> bool:
            meta = self.admin.list_topics(topic=name, timeout=5).topics.get(name)
            return (
                meta is not None
                and len(meta.partitions) == partitions
                and all(p.leader >= 0 for p in meta.partitions.values())
            )

        wait_until(led, timeout=10, message=f"leaders for {name}")
        return name


@pytest.fixture
def kafka(stack: Stack) -> Iterator[Kafka]:
    broker = Kafka(stack.kafka_bootstrap)
    yield broker
    delete_topics(broker.bootstrap, broker.created)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def make(backend: str, kafka: Kafka) -> Iterator[MakeSource]:
    """Builds sources of the backend under test and closes those a test left open."""
    with ExitStack() as stack:

        def build(topic: str, group: str, **kwargs: Any) -> Source:
            source = make_source(
                backend,  # type: ignore[arg-type]
                kafka.bootstrap,
                [topic],
                group,
                extra_config=FAST_GROUP,
                **kwargs,
            )
            stack.callback(source.close)
            return source

        yield build


def produce(bootstrap: str, topic: str, count: int) -> None:
    """``count`` records round-robin over the partitions: key ``k<i>``, value ``v<i>``."""
    failed: list[KafkaError] = []

    def delivered(error: KafkaError | None, _msg: Message) -> None:
        if error is not None:
            failed.append(error)

    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True}
    )
    for i in range(count):
        producer.produce(
            topic,
            value=f"v{i}".encode(),
            key=f"k{i}".encode(),
            partition=i % PARTITIONS,
            headers=[("i", str(i).encode()), ("empty", b"")],
            on_delivery=delivered,
        )
        if i % 1000 == 999:
            producer.poll(0)
    assert producer.flush(10) == 0
    assert not failed


def poll_until(
    source: Source,
    done: Callable[[list[RawMessage]], bool],
    timeout_s: float = 20.0,
    max_messages: int = 500,
) -> list[RawMessage]:
    got: list[RawMessage] = []
    deadline = time.monotonic() + timeout_s
    while not done(got):
        assert time.monotonic() < deadline, f"gave up after {len(got)} messages"
        got.extend(source.poll_batch(max_messages, 0.2))
    return got


def next_offsets(messages: list[RawMessage]) -> dict[TopicPartition, int]:
    """Per partition, the offset after the last message: what a commit of them stores."""
    result: dict[TopicPartition, int] = {}
    for m in messages:
        result[(m.topic, m.partition)] = max(result.get((m.topic, m.partition), 0), m.offset + 1)
    return result


def committed(
    bootstrap: str, group: str, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        result = reader.committed([KafkaTopicPartition(t, p) for t, p in partitions], 10)
    finally:
        reader.close()
    return {(tp.topic, tp.partition): tp.offset for tp in result}


def read_all(bootstrap: str, topic: str, count: int, timeout_s: float = 15.0) -> list[Any]:
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("reader"),
            "auto.offset.reset": "earliest",
        }
    )
    reader.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < count and time.monotonic() < deadline:
            got.extend(m for m in reader.consume(count, 0.2) if m.error() is None)
    finally:
        reader.close()
    return got


def test_consumes_every_message_with_offsets_keys_and_headers(
    kafka: Kafka, make: MakeSource
) -> None:
    topic, n = kafka.topic(), 2000
    produce(kafka.bootstrap, topic, n)
    source = make(topic, unique_name("g"))

    got = poll_until(source, lambda got: len(got) >= n)

    assert len(got) == n
    for partition in range(PARTITIONS):
        offsets = [m.offset for m in got if m.partition == partition]
        assert offsets == list(range(n // PARTITIONS))
    for m in got:
        i = m.offset * PARTITIONS + m.partition
        assert (m.topic, m.key, m.value) == (topic, f"k{i}".encode(), f"v{i}".encode())
        assert m.headers == (("i", str(i).encode()), ("empty", b""))
        assert m.timestamp_ms is not None and m.timestamp_ms > 1_600_000_000_000
    assert source.assignment() == [(topic, p) for p in range(PARTITIONS)]
    assert source.connected


def test_new_consumer_resumes_exactly_after_the_commit(kafka: Kafka, make: MakeSource) -> None:
    topic, group, n = kafka.topic(), unique_name("g"), 2000
    produce(kafka.bootstrap, topic, n)
    first = make(topic, group)
    got = poll_until(first, lambda got: len(got) >= n)
    processed = [m for m in got if m.offset < 300 + 50 * m.partition]
    first.commit(next_offsets(processed))
    first.close()

    rest = poll_until(make(topic, group), lambda got: len(got) >= n - len(processed))

    seen = {(m.partition, m.offset) for m in processed}
    again = {(m.partition, m.offset) for m in rest}
    assert len(again) == len(rest), "a message came twice"
    assert seen.isdisjoint(again)
    assert seen | again == {(m.partition, m.offset) for m in got}
    assert min(m.offset for m in rest if m.partition == 1) == 350


def test_a_commit_the_broker_refuses_is_reported_by_a_later_call(kafka: Kafka) -> None:
    """The confluent backend commits asynchronously outside rebalances (a synchronous commit
    can block with no bound): the broker's refusal comes back through a later call, and the
    commits sent meanwhile are on the broker once the consumer is closed."""
    topic, group = kafka.topic(), unique_name("g")
    produce(kafka.bootstrap, topic, 40)
    source = make_source("confluent", kafka.bootstrap, [topic], group, extra_config=FAST_GROUP)
    try:
        got = poll_until(source, lambda got: len(got) >= 40)
        good = next_offsets(got)
        deadline = time.monotonic() + 20
        with pytest.raises(SourceError, match=r"earlier commit failed .*Unknown topic"):
            source.commit({(topic, PARTITIONS + 5): 1})  # no such partition
            while time.monotonic() < deadline:
                source.poll_batch(100, 0.2)
                source.commit(good)
    finally:
        source.close()
    assert committed(kafka.bootstrap, group, list(good)) == good


def test_kafka_python_replaces_a_consumer_whose_group_join_stalled(kafka: Kafka) -> None:
    """kafka-python 3.0.12 now and then never finishes a leader's join; past
    ``join_stall_s`` the source joins again with a new consumer and nothing is lost."""
    topic, group = kafka.topic(), unique_name("g")
    produce(kafka.bootstrap, topic, 200)
    source = KafkaPythonSource(kafka.bootstrap, [topic], group, extra_config=FAST_GROUP)
    try:
        before = poll_until(source, lambda got: len(got) >= 1)
        stalled = source._consumer
        assert source.rejoins == 0 and source._joining_since is None
        # As if the join had never ended: the next poll finds it stalled.
        source._joining_since = time.monotonic() - source.join_stall_s - 1
        after = poll_until(source, lambda got: len(got) >= 200, timeout_s=60)
        assert source._consumer is not stalled and source.rejoins == 1
        assert source.assignment() == [(topic, p) for p in range(PARTITIONS)]
    finally:
        source.close()
    # Nothing was committed: the new consumer starts from the beginning again.
    assert {(m.partition, m.offset) for m in after} >= {(m.partition, m.offset) for m in before}
    assert len({(m.partition, m.offset) for m in after}) == 200


def test_uncommitted_messages_are_redelivered_after_reopening(
    kafka: Kafka, make: MakeSource
) -> None:
    topic, group, n = kafka.topic(), unique_name("g"), 200
    produce(kafka.bootstrap, topic, n)
    first = make(topic, group)
    got = poll_until(first, lambda got: len(got) >= n)
    first.close()

    again = poll_until(make(topic, group), lambda got: len(got) >= n)

    assert sorted((m.partition, m.offset) for m in again) == sorted(
        (m.partition, m.offset) for m in got
    )


def test_lag_reports_the_backlog_after_consuming_part(kafka: Kafka, make: MakeSource) -> None:
    topic, n = kafka.topic(), 2000
    produce(kafka.bootstrap, topic, n)
    source = make(topic, unique_name("g"))
    got = poll_until(source, lambda got: len(got) >= 700, max_messages=100)

    positions = next_offsets(got)
    expected = {
        (topic, p): n // PARTITIONS - positions.get((topic, p), 0) for p in range(PARTITIONS)
    }
    deadline = time.monotonic() + 10
    while (lag := source.lag()) != expected:
        assert time.monotonic() < deadline, f"lag {lag} != {expected}"
        time.sleep(0.2)
    assert sum(lag.values()) == n - len(got)


class Recorder:
    """Rebalance hooks that remember every call, in order."""

    def __init__(self) -> None:
        self.source: Source | None = None
        self.events: list[tuple[str, list[TopicPartition]]] = []
        self.polled: list[RawMessage] = []
        self.commit_on_revoke = False
        self.committed: dict[TopicPartition, int] = {}
        self.owned_during_revoke: list[TopicPartition] = []

    def attach(self, source: Source) -> Source:
        self.source = source
        return source

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self.events.append(("assign", partitions))

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.events.append(("revoke", partitions))
        if self.commit_on_revoke and self.source is not None:
            self.owned_during_revoke = self.source.assignment()
            offsets = {tp: o for tp, o in next_offsets(self.polled).items() if tp in partitions}
            self.source.commit(offsets)
            self.committed = offsets

    def poll(self, timeout_s: float = 0.1) -> None:
        assert self.source is not None
        self.polled.extend(self.source.poll_batch(100, timeout_s))


def test_group_splits_and_a_leaving_member_commits_before_release(
    kafka: Kafka, make: MakeSource
) -> None:
    topic, group = kafka.topic(), unique_name("g")
    produce(kafka.bootstrap, topic, 400)
    everything = [(topic, p) for p in range(PARTITIONS)]
    a, b = Recorder(), Recorder()
    source_a = a.attach(make(topic, group, on_assign=a.on_assign, on_revoke=a.on_revoke))
    poll_rounds(lambda: source_a.assignment() == everything, a)
    source_b = b.attach(make(topic, group, on_assign=b.on_assign, on_revoke=b.on_revoke))

    poll_rounds(lambda: len(source_a.assignment()) == len(source_b.assignment()) == 2, a, b)
    b_partitions = source_b.assignment()
    assert sorted(source_a.assignment() + b_partitions) == everything
    poll_rounds(lambda: set(next_offsets(b.polled)) == set(b_partitions), a, b)
    b.commit_on_revoke = True
    source_b.close()

    assert b.events[-1] == ("revoke", b_partitions)
    assert b.owned_during_revoke == b_partitions
    assert set(b.committed) == set(b_partitions)
    assert committed(kafka.bootstrap, group, b_partitions) == b.committed
    a.polled.clear()
    produce(kafka.bootstrap, topic, 400)
    poll_rounds(lambda: source_a.assignment() == everything, a)
    assert a.events[-1][0] == "assign"
    assert set(b_partitions) <= set(a.events[-1][1])
    poll_rounds(lambda: set(b_partitions) <= set(next_offsets(a.polled)), a)
    for tp in b_partitions:
        first = min(m.offset for m in a.polled if (m.topic, m.partition) == tp)
        assert first == b.committed[tp], f"{tp} resumed at {first}"


def poll_rounds(done: Callable[[], bool], *members: Recorder, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the group did not settle"
        for member in members:
            member.poll()


class HookFailed(Exception):
    pass


def refuse(partitions: list[TopicPartition]) -> None:
    raise HookFailed(partitions)


def test_an_error_in_on_assign_reaches_the_caller_of_poll_batch(
    kafka: Kafka, make: MakeSource
) -> None:
    source = make(kafka.topic(), unique_name("g"), on_assign=refuse)

    deadline = time.monotonic() + 10
    with pytest.raises(HookFailed):
        while time.monotonic() < deadline:
            source.poll_batch(10, 0.2)


def test_an_error_in_on_revoke_reaches_the_caller_of_close(kafka: Kafka, make: MakeSource) -> None:
    topic = kafka.topic()
    produce(kafka.bootstrap, topic, 40)
    source = make(topic, unique_name("g"), on_revoke=refuse)
    poll_until(source, lambda got: len(got) >= 40)

    with pytest.raises(HookFailed):
        source.close()
    source.close()


def invalid_message() -> tuple[RawMessage, InvalidEvent]:
    value = b'{"schema_version": 1, "event_id": \xff'
    msg = RawMessage(
        value=value,
        key=b"run-7|math",
        topic="rl.rollouts",
        partition=3,
        offset=12345,
        timestamp_ms=1_700_000_000_000,
        headers=(("traceparent", b"00-abc-01"), ("bin", b"\x00\xff")),
    )
    with pytest.raises(InvalidEvent) as refused:
        decode_event(value)
    return msg, refused.value


def test_dead_letter_keeps_the_original_bytes_and_every_header(kafka: Kafka, backend: str) -> None:
    dlq = kafka.topic(partitions=1)
    msg, refused = invalid_message()
    long_detail = refused.detail + " " + "é" * 2000
    sink = make_dead_letter_sink(backend, kafka.bootstrap, dlq)  # type: ignore[arg-type]

    sink.send(msg, refused.reason, long_detail)
    assert sink.flush(10) == 0

    [record] = read_all(kafka.bootstrap, dlq, 1)
    assert (record.value(), record.key()) == (msg.value, msg.key)
    headers = record.headers()
    assert [name for name, _ in headers] == [
        REASON_HEADER,
        DETAIL_HEADER,
        SOURCE_TOPIC_HEADER,
        SOURCE_PARTITION_HEADER,
        SOURCE_OFFSET_HEADER,
        "traceparent",
        "bin",
    ]
    values = dict(headers)
    assert values[REASON_HEADER] == refused.reason.encode() == b"invalid_json"
    detail = values[DETAIL_HEADER]
    assert len(detail) <= 1024 and long_detail.encode().startswith(detail)
    assert len(detail) >= 1022
    assert values[SOURCE_TOPIC_HEADER] == b"rl.rollouts"
    assert values[SOURCE_PARTITION_HEADER] == b"3"
    assert values[SOURCE_OFFSET_HEADER] == b"12345"
    assert (values["traceparent"], values["bin"]) == (b"00-abc-01", b"\x00\xff")
    assert sink.failures == 0


SINKS: dict[str, type[ConfluentDeadLetterSink] | type[KafkaPythonDeadLetterSink]] = {
    "confluent": ConfluentDeadLetterSink,
    "kafka-python": KafkaPythonDeadLetterSink,
}


@pytest.mark.parametrize(
    ("size", "sink_limit", "topic_limit"),
    [
        pytest.param(10 * 1024 * 1024, None, None, id="10MB-known-too-large"),
        pytest.param(2 * 1024 * 1024, 1 << 40, None, id="2MB-refused-by-client"),
        pytest.param(400_000, None, "100000", id="400kB-refused-by-broker"),
    ],
)
def test_dead_letter_truncates_a_value_too_large_for_the_broker(
    kafka: Kafka, backend: str, size: int, sink_limit: int | None, topic_limit: str | None
) -> None:
    config = {"max.message.bytes": topic_limit} if topic_limit else {}
    dlq = kafka.topic(partitions=1, **config)
    value = os.urandom(size)
    msg = RawMessage(value, b"key", "rl.rollouts", 0, 7, None, (("h", b"1"),))
    limit = sink_limit or DEFAULT_MAX_VALUE_BYTES
    sink = SINKS[backend](kafka.bootstrap, dlq, max_value_bytes=limit)

    sink.send(msg, "too_large", f"message of {size} bytes")
    assert sink.flush(15) == 0

    [record] = read_all(kafka.bootstrap, dlq, 1)
    assert record.value() == value[:TRUNCATED_VALUE_BYTES]
    assert record.key() == b"key"
    values = dict(record.headers())
    assert values[TRUNCATED_HEADER] == str(size).encode()
    assert values[REASON_HEADER] == b"too_large"
    assert values["h"] == b"1"
    assert sink.failures == 0


def test_confluent_source_polls_empty_while_no_broker_answers() -> None:
    source = ConfluentSource("127.0.0.1:1", [unique_name("t")], unique_name("g"))
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert source.poll_batch(10, 0.2) == []
        assert not source.connected
        assert source.lag() == {}
    finally:
        source.close()


def test_kafka_python_refuses_a_config_key_it_cannot_translate() -> None:
    with pytest.raises(SourceError, match=re.escape("'socket.keepalive.enable'")):
        make_source(
            "kafka-python", ANY_ADDRESS, ["t"], "g", extra_config={"socket.keepalive.enable": True}
        )


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_extra_config_cannot_turn_auto_commit_back_on(backend_name: str) -> None:
    with pytest.raises(SourceError, match=re.escape("'enable.auto.commit'")):
        make_source(
            backend_name,
            ANY_ADDRESS,
            ["t"],
            "g",  # type: ignore[arg-type]
            extra_config={"enable.auto.commit": True},
        )
