"""The local stack works as the monitor and its tests expect (real Kafka, Prometheus,
Alertmanager and webhook receiver, as started by deploy/stack.sh)."""

from __future__ import annotations

import shutil
import subprocess
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from stack import (
    Notifications,
    Stack,
    WebhookReceiver,
    alerts_in,
    http_json,
    http_problem,
    unique_name,
    wait_until,
)

pytestmark = pytest.mark.stack


def run_checker(*command: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(command[0]) is None:
        pytest.fail(f"{command[0]} not found; install it with `make install`", pytrace=False)
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_kafka_produce_consume_roundtrip(stack: Stack, kafka_topic: Callable[..., str]) -> None:
    topic = kafka_topic(partitions=3)
    sent = {f"value-{i}".encode(): f"key-{i % 5}".encode() for i in range(50)}
    delivery_errors: list[object] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            delivery_errors.append(error)

    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "linger.ms": 5})
    for value, key in sent.items():
        producer.produce(topic, value=value, key=key, on_delivery=delivered)
    assert producer.flush(15) == 0
    assert delivery_errors == []

    consumer = Consumer(
        {
            "bootstrap.servers": stack.kafka_bootstrap,
            "group.id": unique_name("test-roundtrip"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: dict[bytes | None, tuple[bytes | None, int | None]] = {}

    def all_received() -> bool:
        for message in consumer.consume(num_messages=100, timeout=0.5):
            assert message.error() is None, message.error()
            received[message.value()] = (message.key(), message.partition())
        return len(received) >= len(sent)

    try:
        consumer.subscribe([topic])
        wait_until(all_received, timeout=30, interval=0, message="all 50 messages consumed")
    finally:
        consumer.close()

    assert {value: key for value, (key, _) in received.items()} == sent
    partitions_of_key: dict[bytes | None, set[int | None]] = {}
    for received_key, partition in received.values():
        partitions_of_key.setdefault(received_key, set()).add(partition)
    assert all(len(partitions) == 1 for partitions in partitions_of_key.values())


def test_monitor_topics_exist(stack: Stack) -> None:
    topics = (
        AdminClient({"bootstrap.servers": stack.kafka_bootstrap}).list_topics(timeout=10).topics
    )
    for name, partitions in {"rl.rollouts": 4, "rl.rollouts.dlq": 1}.items():
        assert name in topics, f"{name} missing; deploy/stack.sh up creates it"
        assert len(topics[name].partitions) == partitions


def test_prometheus_ready_and_scraping_itself(stack: Stack) -> None:
    assert http_problem(f"{stack.prometheus_url}/-/ready") is None
    query = urllib.parse.urlencode({"query": 'up{job="prometheus"}'})

    def up_result() -> list[dict[str, object]]:
        answer = http_json("GET", f"{stack.prometheus_url}/api/v1/query?{query}")
        assert answer["status"] == "success"
        result: list[dict[str, object]] = answer["data"]["result"]
        return result

    result = wait_until(up_result, timeout=20, message="Prometheus has a sample of `up`")
    assert result[0]["value"][1] == "1"  # type: ignore[index]


def test_prometheus_config_is_valid(stack: Stack) -> None:
    checked = run_checker(
        "promtool", "check", "config", str(stack.generated_config("prometheus.yml"))
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alertmanager_config_is_valid(stack: Stack) -> None:
    config = stack.generated_config("alertmanager.yml")
    checked = run_checker("amtool", "check-config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alertmanager_notifies_webhook_firing_then_resolved(
    stack: Stack, webhook: WebhookReceiver
) -> None:
    name = unique_name("StackSmokeTest")
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": name, "run": "stack-test", "env": "smoke", "severity": "info"},
        "annotations": {"summary": "posted by tests/test_stack.py"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
    }
    http_json("POST", f"{stack.alertmanager_url}/api/v2/alerts", [alert])

    def with_status(status: str) -> Callable[[Notifications], bool]:
        def found(notifications: Notifications) -> bool:
            return any(
                a["labels"].get("alertname") == name and a["status"] == status
                for a in alerts_in(notifications)
            )

        return found

    firing = webhook.wait_for(with_status("firing"), timeout=30)
    note = next(n for n in firing if n["groupLabels"].get("alertname") == name)
    assert note["groupLabels"] == {"alertname": name, "run": "stack-test", "env": "smoke"}

    alert["endsAt"] = datetime.now(UTC).isoformat()
    http_json("POST", f"{stack.alertmanager_url}/api/v2/alerts", [alert])
    webhook.wait_for(with_status("resolved"), timeout=30)


def test_webhook_receiver_records_and_clears(webhook: WebhookReceiver) -> None:
    # Alertmanager may still deliver a late notification of another test, so look for ours only.
    ours = {"receiver": unique_name("direct-post"), "alerts": []}
    http_json("POST", f"{webhook.url}/", ours)
    webhook.wait_for(lambda notes: ours in notes, timeout=5)
    webhook.clear()
    assert ours not in webhook.notifications()
