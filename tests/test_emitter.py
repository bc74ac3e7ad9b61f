"""Tests of the trainer-side producer helpers (monitor.emitter).

The Kafka tests need the broker at 127.0.0.1:$KAFKA_PORT (default 9092; ROLLOUT_MONITOR_TEST_KAFKA
overrides it). When it is not reachable they fail with a message saying so: they are never skipped.
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from monitor.emitter import JsonlWriter, RolloutEmitter, prepare_event
from monitor.events import InvalidEvent, RolloutEvent, decode_event

BOOTSTRAP = os.environ.get(
    "ROLLOUT_MONITOR_TEST_KAFKA", f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
)


def _event(run: str = "run-a", env: str = "math-v2", **extra: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"run_id": run, "env_id": env, "status": "completed", "reward": 0.5}
    ev.update(extra)
    return ev


def require_broker() -> str:
    """The bootstrap address; fails the calling test (not an error, not a skip) without it."""
    host, _, port = BOOTSTRAP.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        pytest.fail(
            f"Kafka broker at {BOOTSTRAP} is not reachable ({exc}); the emitter "
            "tests need a running broker (see deploy/)",
            pytrace=False,
        )
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": BOOTSTRAP}).list_topics(timeout=10)
    except Exception as exc:
        pytest.fail(
            f"Kafka broker at {BOOTSTRAP} does not answer metadata requests: {exc}", pytrace=False
        )
    return BOOTSTRAP


def _create_topic(bootstrap: str, partitions: int) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"test-emitter-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
    )
    futures[topic].result(timeout=30)
    return topic


def _consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Any]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            messages.append(msg)
    finally:
        consumer.close()
    assert len(messages) == count, f"read {len(messages)} of {count} messages from {topic}"
    return messages


def test_emit_to_kafka_and_read_back() -> None:
    broker = require_broker()
    topic = _create_topic(broker, partitions=4)
    segments = [
        ("run-a", "math-v2"),
        ("run-a", "code-sandbox"),
        ("run-b", "math-v2"),
        ("run-b", "tool-use"),
        ("run-c", "swe"),
    ]
    sent: list[dict[str, Any]] = []
    with RolloutEmitter(broker, topic=topic) as emitter:
        for seq in range(6):
            for run, env in segments:
                ev = _event(run, env, episode_id=f"{run}-{env}-{seq}", ts=1000.0 + seq)
                emitter.emit(ev)
                sent.append(ev)
        # a typed event is accepted too
        typed = decode_event(
            json.dumps(
                {
                    "schema_version": 1,
                    "event_id": "typed-1",
                    "ts": 2000.0,
                    "run_id": "run-a",
                    "env_id": "math-v2",
                    "status": "failed",
                    "reward": None,
                    "error": {"type": "SandboxOOM", "where": "sandbox", "message": "killed"},
                }
            )
        )
        emitter.emit(typed)
        assert emitter.sent == len(sent) + 1
    assert emitter.errors == 0 and emitter.last_error is None
    assert emitter.delivered == len(sent) + 1
    assert all("event_id" not in ev for ev in sent)  # the caller's dicts are not modified

    messages = _consume(broker, topic, len(sent) + 1)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    order: dict[bytes, list[str]] = defaultdict(list)
    event_ids = set()
    for msg in messages:
        event = decode_event(msg.value())
        assert msg.key() == f"{event.run_id}|{event.env_id}".encode()
        partitions[msg.key()].add(msg.partition())
        if event.episode_id:
            order[msg.key()].append(event.episode_id)
        assert event.schema_version == 1
        event_ids.add(event.event_id)
    assert len(event_ids) == len(messages)
    assert all(str(uuid.UUID(i)) == i for i in event_ids if i != "typed-1")
    assert all(len(p) == 1 for p in partitions.values()), partitions  # one segment, one partition
    assert len({next(iter(p)) for p in partitions.values()}) > 1  # keys spread over partitions
    for key, episodes in order.items():  # in order within a segment
        run, env = key.decode().split("|")
        assert episodes == [f"{run}-{env}-{seq}" for seq in range(6)]
    typed_msg = next(m for m in messages if decode_event(m.value()).event_id == "typed-1")
    assert decode_event(typed_msg.value()).error is not None


def test_emit_raw_sends_bytes_unchanged() -> None:
    broker = require_broker()
    topic = _create_topic(broker, partitions=1)
    payloads = [b'{"schema_version":1,"event_id":"x"', b"not json", b'{"reward":NaN}']
    with RolloutEmitter(broker, topic=topic, linger_ms=1) as emitter:
        for p in payloads:
            emitter.emit_raw(p, key=b"run|env")
        emitter.emit_raw(b"no key")
    messages = _consume(broker, topic, 4)
    assert [m.value() for m in messages] == [*payloads, b"no key"]
    assert [m.key() for m in messages] == [b"run|env"] * 3 + [None]
    with pytest.raises(InvalidEvent):
        decode_event(messages[0].value())


@pytest.mark.parametrize(
    ("event", "reasons"),
    [
        ({"run_id": "r", "env_id": "e", "reward": 1.0}, {"missing_field"}),
        ({"run_id": "r", "env_id": "e", "status": "done", "reward": 1.0}, {"invalid_value"}),
        (_event(reward="0.5"), {"wrong_type"}),
        (_event(reward=math.nan), {"invalid_value"}),
        (_event(reward=math.inf), {"invalid_value"}),
        (_event(ts=math.nan), {"invalid_value"}),
        (_event(reward_components={"correct": math.nan}), {"invalid_value"}),
        (_event(completion_tokens=-3), {"invalid_value", "wrong_type"}),
        (_event(schema_version=2), {"unsupported_schema_version"}),
        (_event(extra=object()), {"wrong_type"}),
        ("not a dict", {"not_an_object"}),
    ],
)
def test_invalid_events_raise_before_sending(event: Any, reasons: set[str]) -> None:
    # nothing reaches the producer, so no broker is needed for this one
    emitter = RolloutEmitter("127.0.0.1:1", topic="unused", log_level=0)
    with pytest.raises(InvalidEvent) as info:
        emitter.emit(event)
    assert info.value.reason in reasons
    assert emitter.sent == 0
    assert emitter.flush(1.0) == 0


def test_typed_event_with_nan_reward_is_refused() -> None:
    bad = RolloutEvent(
        schema_version=1,
        event_id="a",
        ts=1.0,
        run_id="r",
        env_id="e",
        status="completed",
        reward=math.nan,
    )
    with pytest.raises(InvalidEvent, match="reward"):
        prepare_event(bad)


def test_delivery_errors_are_counted() -> None:
    emitter = RolloutEmitter(
        "127.0.0.1:1", topic="unreachable", message_timeout_ms=500, log_level=0
    )
    emitter.emit(_event())
    emitter.emit_raw(b"x", b"k")
    assert emitter.flush(10.0) == 0
    assert emitter.errors == 2 and emitter.delivered == 0
    assert emitter.last_error is not None and "timed out" in emitter.last_error.lower()


def test_prepare_event_fills_defaults_and_keeps_extras() -> None:
    before = time.time()
    key, value = prepare_event(_event("r1", "env-x", custom_field=3))
    assert key == b"r1|env-x"
    obj = json.loads(value)
    assert obj["schema_version"] == 1 and obj["custom_field"] == 3
    assert uuid.UUID(obj["event_id"]).version == 4
    assert before <= obj["ts"] <= time.time()
    # given values are kept
    _, value = prepare_event(_event(event_id="mine", ts=12.5))
    assert (json.loads(value)["event_id"], json.loads(value)["ts"]) == ("mine", 12.5)


def test_jsonl_writer_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    typed = decode_event(
        b'{"schema_version":1,"event_id":"t","ts":3.0,"run_id":"r",'
        b'"env_id":"e","status":"truncated","stop_reason":"length",'
        b'"reward":0.0}'
    )
    with JsonlWriter(path) as writer:
        writer.emit(_event(ts=1.0, event_id="a"))
        writer.emit(_event("run-b", "tool-use", ts=2.0, event_id="b", num_turns=3))
        writer.emit(typed)
        writer.emit_raw(b'{"broken":\n"newline"}')
        with pytest.raises(InvalidEvent):
            writer.emit(_event(reward=math.nan))
        assert writer.sent == 4
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4
    events = [decode_event(line) for line in lines[:3]]
    assert [e.event_id for e in events] == ["a", "b", "t"]
    assert events[1].num_turns == 3 and events[1].env_id == "tool-use"
    assert events[2] == typed
    assert lines[3] == b'{"broken": "newline"}'
    with pytest.raises(InvalidEvent):
        decode_event(lines[3])


def test_jsonl_writer_on_an_open_stream() -> None:
    buf = io.BytesIO()
    writer = JsonlWriter(buf)
    writer.emit(_event(ts=1.0, event_id="a"))
    writer.close()  # does not close a stream it did not open
    assert not buf.closed
    assert decode_event(buf.getvalue().strip()).event_id == "a"


def test_simulate_to_kafka(capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.simulate import main as simulate_main

    broker = require_broker()
    topic = _create_topic(broker, partitions=3)
    rc = simulate_main(
        [
            "--events",
            "600",
            "--seed",
            "4",
            "--kafka",
            broker,
            "--topic",
            topic,
            "--fault",
            "invalid:math-v2:100:0.5",
        ]
    )
    assert rc == 0
    assert "sent 600 messages" in capsys.readouterr().err
    messages = _consume(broker, topic, 600)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    invalid = 0
    for msg in messages:
        partitions[msg.key()].add(msg.partition())
        try:
            event = decode_event(msg.value())
        except InvalidEvent:
            invalid += 1
            assert msg.key() == b"grpo-7b-demo|math-v2"
            continue
        assert msg.key() == f"{event.run_id}|{event.env_id}".encode()
    assert set(partitions) == {
        b"grpo-7b-demo|math-v2",
        b"grpo-7b-demo|code-sandbox",
        b"grpo-7b-demo|tool-use",
    }
    assert all(len(p) == 1 for p in partitions.values())
    assert 30 < invalid < 150
