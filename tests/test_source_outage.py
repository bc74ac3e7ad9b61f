"""Both consumer backends through a broker outage, on a private broker (tests/private_kafka.py)
killed and restarted on the same ports and data directory. Without the jars or java the tests
fail and say what is missing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError, Message, Producer
from private_kafka import PrivateKafka, require_kafka_jars

from monitor.source import BACKENDS, make_source

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    require_kafka_jars()
    # A node restarted after a kill registers again only once the controller has given up on
    # its previous session: keep that short.
    restart_fast = {"broker.session.timeout.ms": "2000", "broker.heartbeat.interval.ms": "500"}
    broker = PrivateKafka(tmp_path_factory.mktemp("kafka"), restart_fast).start()
    try:
        yield broker
    finally:
        broker.kill()


def produce(bootstrap: str, topic: str, count: int) -> None:
    failed: list[KafkaError] = []

    def delivered(error: KafkaError | None, _msg: Message) -> None:
        if error is not None:
            failed.append(error)

    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(count):
        producer.produce(topic, value=b"%d" % i, partition=i % 4, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert not failed


@pytest.mark.parametrize("backend", BACKENDS)
def test_source_rides_out_a_broker_outage(broker: PrivateKafka, backend: str) -> None:
    topic = f"outage-{uuid.uuid4().hex[:12]}"
    produce(broker.bootstrap, topic, 100)
    source = make_source(
        backend,  # type: ignore[arg-type]
        broker.bootstrap,
        [topic],
        f"g-{topic}",
        extra_config={
            "reconnect.backoff.max.ms": 1000,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        },
    )
    try:
        got = 0
        deadline = time.monotonic() + 20
        while got < 100:
            assert time.monotonic() < deadline
            got += len(source.poll_batch(500, 0.2))
        assert source.connected

        broker.kill()
        deadline = time.monotonic() + 10
        while source.connected:
            assert time.monotonic() < deadline, "still connected with the broker down"
            assert source.poll_batch(500, 0.2) == []
        for _ in range(5):
            assert source.poll_batch(500, 0.2) == []

        broker.start()
        produce(broker.bootstrap, topic, 100)
        got = 0
        deadline = time.monotonic() + 30
        while got < 100 or not source.connected:
            assert time.monotonic() < deadline, f"{got} messages after the restart"
            got += len(source.poll_batch(500, 0.2))
    finally:
        source.close()
