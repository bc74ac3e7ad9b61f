"""Through the real Alertmanager with the project's routing: one notification per change,
and a resolved notification once the environment is healthy again."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_proc import DaemonProcess, free_listen
from stack import Stack, WebhookReceiver, wait_until
from test_e2e_daemon import produce

from monitor.simulate import Fault, SimulationConfig, generate_messages

pytestmark = pytest.mark.stack


def _ours(notifications: list[dict[str, Any]], run: str) -> list[tuple[str, str]]:
    """(notification status, alert status) of the error_rate alert of this run, in order."""
    out = []
    for note in notifications:
        for alert in note.get("alerts", []):
            labels = alert["labels"]
            if labels.get("run") == run and labels.get("alertname") == "RolloutErrorRate":
                out.append((note["status"], alert["status"]))
    return out


def test_one_notification_per_change_then_resolved(
    stack: Stack,
    kafka_topic: Callable[..., str],
    webhook: WebhookReceiver,
    tmp_path: Path,
) -> None:
    topic = kafka_topic(partitions=2)
    run = f"notify-{uuid.uuid4().hex[:8]}"
    config = SimulationConfig(
        seed=51,
        runs=(run,),
        events=16_000,
        events_per_second=200.0,
        faults=(Fault("error_burst", "code-sandbox", 3_000, 0.5, 6_000),),
    )
    env = {
        "ROLLOUT_MONITOR_KAFKA__BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "ROLLOUT_MONITOR_KAFKA__TOPICS": topic,
        "ROLLOUT_MONITOR_KAFKA__GROUP_ID": "g-" + run,
        "ROLLOUT_MONITOR_KAFKA__DEAD_LETTER_TOPIC": topic + ".dlq",
        "ROLLOUT_MONITOR_ALERTMANAGER__URL": stack.alertmanager_url,
        "ROLLOUT_MONITOR_ALERTMANAGER__RESEND_SECONDS": "1",
        "ROLLOUT_MONITOR_DETECTORS__RESOLVE_AFTER_SECONDS": "10",
        "ROLLOUT_MONITOR_CHECKPOINT__DIRECTORY": str(tmp_path / "ckpt"),
    }
    daemon = DaemonProcess(env, free_listen(), tmp_path / "d.log").start()
    messages = list(generate_messages(config))
    try:
        # The burst first, so the alert fires and is re-posted while the fault lasts.
        produce(stack.kafka_bootstrap, topic, iter(messages[:6_000]))
        webhook.wait_for(lambda ns: ("firing", "firing") in _ours(ns, run), timeout=60)
        # Several re-posts of the same alert reach Alertmanager while the fault lasts.
        sent = daemon.sample("rollout_monitor_alerts_sent_total", {"result": "ok"})
        wait_until(
            lambda: (
                daemon.sample("rollout_monitor_alerts_sent_total", {"result": "ok"}) >= sent + 3
            ),
            timeout=30,
            message="re-posts of the firing alert",
        )
        produce(stack.kafka_bootstrap, topic, iter(messages[6_000:]))
        notes = webhook.wait_for(lambda ns: ("resolved", "resolved") in _ours(ns, run), timeout=60)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    sequence = _ours(notes, run)
    assert sequence.count(("firing", "firing")) == 1, sequence
    assert sequence[-1] == ("resolved", "resolved"), sequence
