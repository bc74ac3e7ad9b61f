"""Crash-safe state on the real broker: kill -9 at random points, handover between two
daemons of one group through the compacted state topic, and a corrupted checkpoint."""

from __future__ import annotations

import json
import random
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_proc import DaemonProcess, free_listen
from stack import Stack, wait_until
from test_e2e_daemon import produce

from monitor.alerts import AlertLog, AlertTracker
from monitor.config import load_settings
from monitor.pipeline import Pipeline
from monitor.simulate import Fault, SimulationConfig, generate_messages

pytestmark = [pytest.mark.stack, pytest.mark.slow]

ENVS = ("math-v2", "code-sandbox", "tool-use", "swe-lite", "web-nav", "sql-gym")


def _env(stack: Stack, topic: str, group: str, tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        "ROLLOUT_MONITOR_KAFKA__BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "ROLLOUT_MONITOR_KAFKA__TOPICS": topic,
        "ROLLOUT_MONITOR_KAFKA__GROUP_ID": group,
        "ROLLOUT_MONITOR_KAFKA__DEAD_LETTER_TOPIC": topic + ".dlq",
        "ROLLOUT_MONITOR_ALERTMANAGER__URL": "",
        "ROLLOUT_MONITOR_ALERTMANAGER__ALERTS_FILE": str(tmp / "alerts.jsonl"),
        "ROLLOUT_MONITOR_CHECKPOINT__DIRECTORY": str(tmp / "checkpoints"),
        "ROLLOUT_MONITOR_PIPELINE__COMMIT_EVERY_SECONDS": "0.5",
        # A killed member's partitions move after this; the broker's minimum.
        "ROLLOUT_MONITOR_KAFKA__SESSION_TIMEOUT_MS": "6000",
    }
    env.update(extra)
    return env


def _truth(messages: list[tuple[bytes, bytes]]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for _, value in messages:
        event = json.loads(value)
        key = (event["run_id"], event["env_id"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def _segment_counts(daemon: DaemonProcess, segments: list[tuple[str, str]]) -> dict[Any, float]:
    return {
        (run, env): daemon.sample("rollout_monitor_events_total", {"run": run, "env": env})
        for run, env in segments
    }


def _firing(records: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """Alerts identified by segment, detector, severity and the event time that raised them."""
    return {
        (a["run"], a["env"], a["detector"], a["severity"], a["event_ts"])
        for a in records
        if a["status"] == "firing"
    }


def _reference_alerts(messages: list[tuple[bytes, bytes]]) -> set[tuple[Any, ...]]:
    """The alarms of an uninterrupted run: the same pipeline over the same stream, no Kafka.

    A segment's events sit on one partition in production order, so each segment sees the
    same sequence here as in the daemon."""
    settings = load_settings()
    log = AlertLog()
    tracker = AlertTracker(
        settings.detectors.resolve_after_seconds, settings.alertmanager.runbook_base_url, [log]
    )
    pipeline = Pipeline(settings.pipeline, settings.detectors, tracker)
    for _, value in messages:
        pipeline.process_bytes(value)
    pipeline.end_batch()
    return _firing([a.to_record() for a in log.alerts])


def test_kill_9_at_20_random_points_keeps_counts_and_alarms_exact(
    stack: Stack, kafka_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = kafka_topic(partitions=4)
    run = f"kill9-{uuid.uuid4().hex[:8]}"
    config = SimulationConfig(
        seed=41,
        runs=(run,),
        envs=ENVS,
        events=1_000_000,
        events_per_second=2000.0,
        faults=(
            Fault("error_burst", "code-sandbox", 300_000, 0.3, 420_000),
            Fault("truncation", "tool-use", 600_000, 0.6, 700_000),
            Fault("reward_drop", "math-v2", 800_000, 0.8),
        ),
    )
    messages = list(generate_messages(config))
    n = produce(stack.kafka_bootstrap, topic, iter(messages))
    truth = _truth(messages)
    env = _env(stack, topic, "g-" + run, tmp_path)
    rng = random.Random(7)
    kill_points = sorted(rng.sample(range(20_000, n - 20_000), 20))
    log_path = tmp_path / "daemon.log"
    for point in kill_points:
        daemon = DaemonProcess(env, free_listen(), log_path).start()
        wait_until(
            lambda d=daemon, p=point: d.sample("rollout_monitor_events_processed_total") >= p,
            timeout=120,
            interval=0.05,
            message=f"daemon reached event {point}",
        )
        daemon.stop(signal.SIGKILL)
    final = DaemonProcess(env, free_listen(), log_path).start()
    try:
        wait_until(
            lambda: final.sample("rollout_monitor_events_processed_total") >= n,
            timeout=180,
            message="the last daemon caught up",
        )
        counts = _segment_counts(final, list(truth))
        processed = final.sample("rollout_monitor_events_processed_total")
    finally:
        final.stop()
    assert processed == n, "no event counted twice, none skipped"
    assert counts == truth
    records = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    got = _firing(records)
    expected = _reference_alerts(messages)
    assert expected, "the stream must raise alarms for the comparison to mean anything"
    assert got == expected
    assert log_path.read_text().count("resuming from checkpoints") >= 20


def test_partitions_move_to_the_other_daemon_with_their_state(
    stack: Stack, kafka_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = kafka_topic(partitions=4)
    run = f"handover-{uuid.uuid4().hex[:8]}"
    messages = list(
        generate_messages(SimulationConfig(seed=43, runs=(run,), envs=ENVS, events=120_000))
    )
    truth = _truth(messages)
    half = len(messages) // 2
    # State travels through Kafka (a compacted topic), not a shared disk: separate folders.
    state_topic = f"state-{uuid.uuid4().hex[:8]}"
    common = {
        "ROLLOUT_MONITOR_CHECKPOINT__STORE": "kafka",
        "ROLLOUT_MONITOR_CHECKPOINT__TOPIC": state_topic,
    }
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    a = DaemonProcess(
        _env(stack, topic, "g-" + run, a_dir, **common), free_listen(), a_dir / "d.log"
    ).start()
    b = DaemonProcess(
        _env(stack, topic, "g-" + run, b_dir, **common), free_listen(), b_dir / "d.log"
    ).start()
    try:
        wait_until(
            lambda: (
                a.sample("rollout_monitor_assigned_partitions") == 2
                and b.sample("rollout_monitor_assigned_partitions") == 2
            ),
            timeout=60,
            message="the two daemons split the four partitions",
        )
        produce(stack.kafka_bootstrap, topic, iter(messages[:half]))
        wait_until(
            lambda: (
                a.sample("rollout_monitor_events_processed_total")
                + b.sample("rollout_monitor_events_processed_total")
                >= half
            ),
            timeout=120,
            message="both daemons processed the first half",
        )
        # Keys (run|env) hash to partitions, so with six keys one daemon can own partitions
        # that received none of them: the daemon that leaves is one that owns segments.
        owned = {
            daemon: {
                (s["run"], s["env"])
                for s in daemon.sample_labels("rollout_monitor_last_event_timestamp_seconds")
            }
            for daemon in (a, b)
        }
        leaving, staying = (a, b) if owned[a] else (b, a)
        assert owned[leaving], "one daemon must own some segments for the handover to mean anything"
        assert leaving.stop() == 0, leaving.log_tail()
        produce(stack.kafka_bootstrap, topic, iter(messages[half:]))
        wait_until(
            lambda: staying.sample("rollout_monitor_events_processed_total") >= len(messages),
            timeout=120,
            message="the remaining daemon processed everything, with the other's counts taken over",
        )
        counts = _segment_counts(staying, list(truth))
        staying_log = staying.log_path
    finally:
        a.stop()
        b.stop()
    assert counts == truth
    assert "resuming from checkpoints" in staying_log.read_text()


def test_corrupted_checkpoint_is_reported_and_the_partition_starts_fresh(
    stack: Stack, kafka_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = kafka_topic(partitions=1)
    run = f"corrupt-{uuid.uuid4().hex[:8]}"
    messages = list(generate_messages(SimulationConfig(seed=44, runs=(run,), events=4_000)))
    produce(stack.kafka_bootstrap, topic, iter(messages[:2_000]))
    env = _env(stack, topic, "g-" + run, tmp_path)
    log_path = tmp_path / "d.log"
    first = DaemonProcess(env, free_listen(), log_path).start()
    wait_until(lambda: first.sample("rollout_monitor_events_processed_total") >= 2_000, timeout=60)
    assert first.stop() == 0
    (checkpoint,) = (tmp_path / "checkpoints").glob("*.ckpt")
    blob = bytearray(checkpoint.read_bytes())
    blob[-5] ^= 0xFF
    checkpoint.write_bytes(bytes(blob))
    produce(stack.kafka_bootstrap, topic, iter(messages[2_000:]))
    second = DaemonProcess(env, free_listen(), log_path).start()
    try:
        wait_until(
            lambda: second.sample("rollout_monitor_events_processed_total") >= 2_000,
            timeout=60,
            message="the new events after the committed offset were processed",
        )
        processed = second.sample("rollout_monitor_events_processed_total")
        failures = second.sample("rollout_monitor_checkpoint_load_failures_total")
    finally:
        assert second.stop() == 0, second.log_tail()
    assert processed == 2_000, "fresh state from the committed offset: only the new events"
    assert failures == 1
    assert "checksum mismatch" in log_path.read_text()
