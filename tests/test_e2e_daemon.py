"""End to end on the real stack: Kafka -> daemon -> Prometheus and Alertmanager -> webhook.

Each test uses its own topic, consumer group and run id, so tests do not see each other's data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from daemon_proc import DaemonProcess, free_listen
from stack import Stack, WebhookReceiver, alerts_in, http_json, wait_until

from monitor.simulate import Fault, SimulationConfig, generate_messages

pytestmark = pytest.mark.stack

# The port the local Prometheus scrapes (deploy/prometheus/prometheus.yml.template).
SCRAPED_LISTEN = f"127.0.0.1:{os.environ.get('DAEMON_PORT', '9108')}"


def produce(bootstrap: str, topic: str, messages: Iterator[tuple[bytes, bytes]]) -> int:
    # Idempotence keeps each partition in production order even when a send is retried.
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True}
    )
    n = 0
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
        n += 1
    assert producer.flush(30) == 0, "producer could not deliver every message"
    return n


@pytest.fixture
def daemon_env(stack: Stack, tmp_path: Path) -> Callable[..., dict[str, str]]:
    def make(topic: str, group: str, **extra: str) -> dict[str, str]:
        env = {
            "ROLLOUT_MONITOR_KAFKA__BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
            "ROLLOUT_MONITOR_KAFKA__TOPICS": topic,
            "ROLLOUT_MONITOR_KAFKA__GROUP_ID": group,
            "ROLLOUT_MONITOR_KAFKA__DEAD_LETTER_TOPIC": topic + ".dlq",
            "ROLLOUT_MONITOR_ALERTMANAGER__URL": stack.alertmanager_url,
            "ROLLOUT_MONITOR_ALERTMANAGER__ALERTS_FILE": str(tmp_path / "alerts.jsonl"),
            "ROLLOUT_MONITOR_PIPELINE__BATCH_MAX_SECONDS": "0.1",
            "ROLLOUT_MONITOR_PIPELINE__COMMIT_EVERY_SECONDS": "1",
        }
        env.update(extra)
        return env

    return make


def _alerts_file(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_fault_on_kafka_pages_through_alertmanager_and_prometheus_scrapes(
    stack: Stack,
    kafka_topic: Callable[..., str],
    daemon_env: Callable[..., dict[str, str]],
    webhook: WebhookReceiver,
    tmp_path: Path,
) -> None:
    topic = kafka_topic(partitions=4)
    run = f"e2e-{uuid.uuid4().hex[:8]}"
    config = SimulationConfig(
        seed=11,
        runs=(run,),
        events=12_000,
        faults=(Fault("error_burst", "code-sandbox", 6_000, 0.4),),
    )
    daemon = DaemonProcess(daemon_env(topic, "g-" + run), SCRAPED_LISTEN, tmp_path / "d.log")
    daemon.start()
    try:
        produce(stack.kafka_bootstrap, topic, generate_messages(config))
        notes = webhook.wait_for(
            lambda ns: [
                a
                for a in alerts_in(ns)
                if a["labels"].get("run") == run and a["status"] == "firing"
            ],
            timeout=60,
        )
        firing = [a for a in alerts_in(notes) if a["labels"].get("run") == run]
        pages = {
            (a["labels"]["detector"], a["labels"]["env"])
            for a in firing
            if a["labels"]["severity"] == "page"
        }
        assert ("error_rate", "code-sandbox") in pages, firing
        assert all(
            a["labels"]["env"] == "code-sandbox"
            for a in firing
            if a["labels"]["severity"] == "page"
        ), firing
        first = firing[0]
        assert first["annotations"]["runbook_url"].endswith("#" + first["labels"]["detector"])
        assert first["labels"]["alertname"].startswith("Rollout")

        query = f'rollout_monitor_events_total{{run="{run}"}}'
        url = f"{stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        series = wait_until(
            lambda: http_json("GET", url)["data"]["result"],
            timeout=30,
            message="Prometheus has scraped the daemon's series",
        )
        assert {s["metric"]["env"] for s in series} == {"math-v2", "code-sandbox", "tool-use"}
    finally:
        assert daemon.stop() == 0, daemon.log_tail()


def test_clean_stream_of_the_same_length_pages_nothing(
    stack: Stack,
    kafka_topic: Callable[..., str],
    daemon_env: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> None:
    topic = kafka_topic(partitions=4)
    run = f"clean-{uuid.uuid4().hex[:8]}"
    config = SimulationConfig(seed=12, runs=(run,), events=12_000)
    daemon = DaemonProcess(daemon_env(topic, "g-" + run), free_listen(), tmp_path / "d.log")
    daemon.start()
    try:
        n = produce(stack.kafka_bootstrap, topic, generate_messages(config))
        wait_until(
            lambda: daemon.sample("rollout_monitor_events_processed_total") >= n,
            timeout=60,
            message="daemon processed the stream",
        )
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert daemon.processed_at_stop() == n
    pages = [a for a in _alerts_file(tmp_path) if a["severity"] == "page"]
    assert pages == []
    active = http_json("GET", f"{stack.alertmanager_url}/api/v2/alerts?filter=run%3D%22{run}%22")
    assert active == []


def test_invalid_message_is_dead_lettered_and_consumption_goes_on(
    stack: Stack,
    kafka_topic: Callable[..., str],
    daemon_env: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> None:
    topic = kafka_topic(partitions=1)
    dlq = kafka_topic(partitions=1, prefix="dlq")
    run = f"dlq-{uuid.uuid4().hex[:8]}"
    env = daemon_env(topic, "g-" + run, ROLLOUT_MONITOR_KAFKA__DEAD_LETTER_TOPIC=dlq)
    daemon = DaemonProcess(env, free_listen(), tmp_path / "d.log").start()
    valid = list(generate_messages(SimulationConfig(seed=3, runs=(run,), events=200)))
    bad = [
        (b"k", b'{"schema_version": 1, "event_id": "x"'),
        (b"k", b'{"schema_version": 5, "event_id": "y"}'),
        (
            b"k",
            json.dumps(
                {
                    "schema_version": 1,
                    "event_id": "z",
                    "ts": 1.0,
                    "run_id": run,
                    "env_id": "e",
                    "status": "completed",
                    "reward": "NaN",
                }
            ).encode(),
        ),
    ]
    try:
        produce(stack.kafka_bootstrap, topic, iter(valid[:100] + bad + valid[100:]))
        wait_until(
            lambda: daemon.sample("rollout_monitor_events_processed_total") >= 200,
            timeout=60,
            message="valid events after the bad ones were processed",
        )
        invalid = daemon.sample("rollout_monitor_invalid_events_total")
        assert invalid == 3
        assert (
            daemon.sample(
                "rollout_monitor_invalid_events_total", {"reason": "unsupported_schema_version"}
            )
            == 1
        )
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    consumer = Consumer(
        {
            "bootstrap.servers": stack.kafka_bootstrap,
            "group.id": "read-" + run,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([dlq])
    got = []
    try:

        def read() -> bool:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg)
            return len(got) >= 3

        wait_until(read, timeout=30, interval=0, message="three dead letters")
    finally:
        consumer.close()
    assert [m.value() for m in got] == [v for _, v in bad]
    headers = [dict(m.headers()) for m in got]
    assert [h["x-rollout-monitor-reason"] for h in headers] == [
        b"invalid_json",
        b"unsupported_schema_version",
        b"wrong_type",
    ]
    assert all(h["x-source-topic"] == topic.encode() for h in headers)
    assert [int(h["x-source-offset"]) for h in headers] == [100, 101, 102]


@pytest.mark.parametrize("backend", ["confluent", "kafka-python"])
def test_sigterm_mid_stream_then_restart_counts_every_event_once(
    stack: Stack,
    kafka_topic: Callable[..., str],
    daemon_env: Callable[..., dict[str, str]],
    tmp_path: Path,
    backend: str,
) -> None:
    topic = kafka_topic(partitions=4)
    run = f"restart-{uuid.uuid4().hex[:8]}"
    messages = list(generate_messages(SimulationConfig(seed=5, runs=(run,), events=60_000)))
    n = produce(stack.kafka_bootstrap, topic, iter(messages))
    truth: dict[str, int] = {}
    for _, value in messages:
        env_id = json.loads(value)["env_id"]
        truth[env_id] = truth.get(env_id, 0) + 1
    env = daemon_env(
        topic,
        "g-" + run,
        ROLLOUT_MONITOR_KAFKA__BACKEND=backend,
        ROLLOUT_MONITOR_PIPELINE__BATCH_MAX_EVENTS="500",
        ROLLOUT_MONITOR_PIPELINE__DEDUP_WINDOW="0",
        ROLLOUT_MONITOR_CHECKPOINT__DIRECTORY=str(tmp_path / "checkpoints"),
    )
    first = DaemonProcess(env, free_listen(), tmp_path / "first.log").start()
    wait_until(
        lambda: daemon_processed(first) >= 5_000, timeout=60, message="first daemon is mid-stream"
    )
    assert first.stop(signal.SIGTERM) == 0, first.log_tail()
    done_first = first.processed_at_stop()
    assert 0 < done_first < n, "the stop must land mid-stream for this test to mean anything"
    second = DaemonProcess(env, free_listen(), tmp_path / "second.log").start()
    try:
        # The second daemon resumes the first one's checkpointed counters.
        wait_until(
            lambda: daemon_processed(second) >= n, timeout=120, message="second daemon caught up"
        )
        counted = {
            env_id: second.sample("rollout_monitor_events_total", {"run": run, "env": env_id})
            for env_id in truth
        }
    finally:
        assert second.stop() == 0, second.log_tail()
    assert second.processed_at_stop() == n
    assert counted == truth


def daemon_processed(daemon: DaemonProcess) -> float:
    return daemon.sample("rollout_monitor_events_processed_total")


def test_promtool_accepts_the_metrics_exposition(
    stack: Stack,
    kafka_topic: Callable[..., str],
    daemon_env: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run deploy/install.sh"
    topic = kafka_topic(partitions=1)
    run = f"lint-{uuid.uuid4().hex[:8]}"
    daemon = DaemonProcess(daemon_env(topic, "g-" + run), free_listen(), tmp_path / "d.log")
    daemon.start()
    try:
        produce(
            stack.kafka_bootstrap,
            topic,
            generate_messages(
                SimulationConfig(
                    seed=9,
                    runs=(run,),
                    events=3000,
                    faults=(Fault("invalid", "math-v2", 100, 0.05),),
                )
            ),
        )
        wait_until(
            lambda: daemon.sample("rollout_monitor_events_processed_total") > 2000, timeout=60
        )
        text = daemon.metrics_text()
    finally:
        assert daemon.stop() == 0
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rollout_monitor_detector_statistic{" in text
