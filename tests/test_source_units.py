"""The broker-free parts of monitor.source: lag bookkeeping, reachability, config, headers."""

from __future__ import annotations

import subprocess
import sys

import pytest

import monitor.source
from monitor.source import BACKENDS, Batch, RawMessage, SourceError, TopicPartition, make_source
from monitor.source._config import (
    CONSUMER_OWNED_KEYS,
    KAFKA_PYTHON_CONSUMER_KEYS,
    KAFKA_PYTHON_PRODUCER_KEYS,
    PRODUCER_OWNED_KEYS,
    checked_extra,
    kafka_python_kwargs,
)
from monitor.source._health import Reachability
from monitor.source._lag import LagCache
from monitor.source.base import (
    DETAIL_HEADER,
    MAX_DETAIL_BYTES,
    TRUNCATED_HEADER,
    TRUNCATED_VALUE_BYTES,
    dead_letter_headers,
    truncated_value,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def message(partition: int, offset: int) -> RawMessage:
    return RawMessage(b"v", None, "t", partition, offset, None)


class Offsets:
    """Answers watermark or start-position reads from a dict and counts the reads."""

    def __init__(self, values: dict[TopicPartition, int]) -> None:
        self.values = values
        self.reads: list[list[TopicPartition]] = []

    def __call__(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.reads.append(partitions)
        return {tp: self.values[tp] for tp in partitions if tp in self.values}


def test_lag_reads_watermarks_at_most_once_per_refresh_interval() -> None:
    clock, assignment = Clock(), [("t", 0), ("t", 1)]
    high, start = Offsets({("t", 0): 100, ("t", 1): 50}), Offsets({("t", 0): 0, ("t", 1): 10})
    cache = LagCache(high, start, refresh_s=2.0, clock=clock)

    assert cache.lag(assignment) == {("t", 0): 100, ("t", 1): 40}
    cache.advance(Batch.of([message(0, 59)]).next_offsets)
    high.values[("t", 0)] = 120
    clock.now = 1.9
    assert cache.lag(assignment) == {("t", 0): 40, ("t", 1): 40}
    clock.now = 2.0
    assert cache.lag(assignment) == {("t", 0): 60, ("t", 1): 40}
    assert len(high.reads) == 2
    assert start.reads == [assignment]


def test_lag_leaves_out_partitions_with_an_unknown_end_and_forgets_revoked_ones() -> None:
    clock = Clock()
    cache = LagCache(Offsets({("t", 0): 10}), Offsets({}), refresh_s=1.0, clock=clock)
    cache.advance(Batch.of([message(0, 3), message(1, 3)]).next_offsets)

    assert cache.lag([("t", 0), ("t", 1)]) == {("t", 0): 6}
    cache.forget([("t", 0)])
    clock.now = 5.0
    assert cache.lag([("t", 1)]) == {}


def test_a_start_position_does_not_overwrite_a_newer_delivered_position() -> None:
    cache: LagCache

    def start_while_a_batch_arrives(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        cache.advance(Batch.of([message(0, 41)]).next_offsets)
        return {tp: 0 for tp in partitions}

    cache = LagCache(Offsets({("t", 0): 50}), start_while_a_batch_arrives)
    assert cache.lag([("t", 0)]) == {("t", 0): 8}


def test_reachability_needs_a_fresh_sign_of_life_after_trouble() -> None:
    clock = Clock()
    health = Reachability(stale_after_s=10.0, clock=clock)
    assert not health.reachable
    health.alive()
    assert health.reachable
    clock.now = 1.0
    assert health.trouble() is True
    assert health.trouble() is False
    assert not health.reachable
    clock.now = 2.0
    health.alive()
    assert health.reachable
    clock.now = 12.5
    assert not health.reachable


def test_kafka_python_kwargs_translate_the_security_settings() -> None:
    extra = {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "monitor",
        "sasl.password": "secret",
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.certificate.location": "/etc/cert.pem",
        "ssl.key.location": "/etc/key.pem",
        "ssl.endpoint.identification.algorithm": "none",
    }
    assert kafka_python_kwargs(extra, CONSUMER_OWNED_KEYS, KAFKA_PYTHON_CONSUMER_KEYS) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "monitor",
        "sasl_plain_password": "secret",
        "ssl_cafile": "/etc/ca.pem",
        "ssl_certfile": "/etc/cert.pem",
        "ssl_keyfile": "/etc/key.pem",
        "ssl_check_hostname": False,
    }
    producer = kafka_python_kwargs(
        {"acks": "all", "linger.ms": "20"}, PRODUCER_OWNED_KEYS, KAFKA_PYTHON_PRODUCER_KEYS
    )
    assert producer == {"acks": "all", "linger_ms": 20}


@pytest.mark.parametrize(
    ("key", "message_part"),
    [
        ("queue.buffering.max.ms", "no kafka-python equivalent"),
        ("group.id", "set by the source itself"),
        ("enable.auto.offset.store", "set by the source itself"),
    ],
)
def test_kafka_python_kwargs_refuse_a_key_naming_it(key: str, message_part: str) -> None:
    with pytest.raises(SourceError, match=f"'{key}' .*{message_part}"):
        kafka_python_kwargs({key: "1"}, CONSUMER_OWNED_KEYS, KAFKA_PYTHON_CONSUMER_KEYS)


def test_confluent_extra_config_passes_through_what_it_does_not_own() -> None:
    extra = {"security.protocol": "SSL", "ssl.ca.location": "/ca.pem", "fetch.wait.max.ms": 50}
    assert checked_extra(extra, CONSUMER_OWNED_KEYS) == extra
    assert checked_extra(None, CONSUMER_OWNED_KEYS) == {}


def test_dead_letter_headers_cut_the_detail_and_mark_truncation() -> None:
    msg = RawMessage(b"x" * 10, b"k", "rl.rollouts", 1, 9, None, (("a", b"1"),))
    headers = dead_letter_headers(msg, "too_large", "d" * 5000, truncated_from=10)

    values = dict(headers)
    assert len(values[DETAIL_HEADER]) == MAX_DETAIL_BYTES
    assert values[TRUNCATED_HEADER] == b"10"
    assert headers[-1] == ("a", b"1")
    assert truncated_value(b"y" * (TRUNCATED_VALUE_BYTES + 5)) == b"y" * TRUNCATED_VALUE_BYTES
    assert truncated_value(None) is None


def test_make_source_names_the_valid_backends() -> None:
    with pytest.raises(ValueError, match=r"confluent.*kafka-python"):
        make_source("kafka", "127.0.0.1:9092", ["t"], "g")  # type: ignore[arg-type]
    assert BACKENDS == ("confluent", "kafka-python")


def test_each_backend_library_is_imported_only_when_its_backend_is_used() -> None:
    # A fresh interpreter: this one has imported both libraries for other tests.
    script = (
        "import sys\n"
        "import monitor.daemon, monitor.source as s\n"
        "print(sorted(m for m in ('kafka', 'confluent_kafka') if m in sys.modules))\n"
        "print(s.KafkaPythonSource.__module__)\n"
        "print(sorted(m for m in ('kafka', 'confluent_kafka') if m in sys.modules))\n"
        "print(s.ConfluentDeadLetterSink.__module__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:4] == [
        "[]",
        "monitor.source.kafka_python",
        "['kafka']",
        "monitor.source.confluent",
    ]
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        monitor.source.Nope  # noqa: B018


def test_confluent_records_keep_order_drop_error_events_and_give_next_offsets() -> None:
    """Runs of partitions interleaved (a partition seen again later), an end-of-partition
    event in a run, headers, a null value and a message without a timestamp."""
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE, KafkaError, Message

    from monitor.source._records import records

    def msg(topic: str, partition: int, offset: int, **more: object) -> Message:
        fields = {"key": b"k", "value": b"v%d" % offset, "timestamp": (TIMESTAMP_CREATE_TIME, 7)}
        return Message(topic=topic, partition=partition, offset=offset, **{**fields, **more})

    eof = Message(topic="a", partition=0, offset=3, error=KafkaError(KafkaError._PARTITION_EOF))
    messages = [
        msg("a", 0, 1),
        msg("a", 0, 2, headers=[("h", b"x"), ("n", None)]),
        eof,
        msg("a", 1, 10, value=None),
        msg("b", 1, 4, timestamp=(TIMESTAMP_NOT_AVAILABLE, 0)),
        msg("a", 0, 3),
    ]
    batch = records(messages)
    assert [(m.topic, m.partition, m.offset, m.value) for m in batch] == [
        ("a", 0, 1, b"v1"),
        ("a", 0, 2, b"v2"),
        ("a", 1, 10, None),
        ("b", 1, 4, b"v4"),
        ("a", 0, 3, b"v3"),
    ]
    assert batch[1].headers == (("h", b"x"), ("n", b""))
    assert [m.timestamp_ms for m in batch] == [7, 7, 7, None, 7]
    assert batch.next_offsets == {("a", 0): 4, ("a", 1): 11, ("b", 1): 5}
    assert records([eof]) == [] and records([eof]).next_offsets == {}
