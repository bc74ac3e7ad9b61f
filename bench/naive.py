"""The baseline: the monitor a user would write by hand in an afternoon.

One loop over a kafka-python consumer; every event is parsed with ``json.loads``, runs two
river ADWIN detectors (reward, completion length) and a river DDM (failures as a binary
stream) kept per segment in dicts, and updates prometheus_client metrics with
``.labels(...).inc()`` / ``.observe()``. The benchmark measures how many events per second
it gets through, on the same topic as the monitor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaConsumer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from river import drift


@dataclass
class SegmentDetectors:
    reward: drift.ADWIN = field(default_factory=drift.ADWIN)
    length: drift.ADWIN = field(default_factory=drift.ADWIN)
    failures: drift.binary.DDM = field(default_factory=drift.binary.DDM)


class NaiveMetrics:
    """Plain prometheus_client metrics, updated for every event."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["run", "env"]
        self.events = Counter(
            "naive_events", "Events by status.", [*labels, "status"], registry=registry
        )
        self.reward = Histogram("naive_reward", "Reward.", labels, registry=registry)
        self.length = Histogram(
            "naive_completion_tokens",
            "Completion length.",
            labels,
            buckets=(64, 128, 256, 512, 1024, 2048, 4096, 8192),
            registry=registry,
        )
        self.last_ts = Gauge(
            "naive_last_event_timestamp_seconds", "Last ts.", labels, registry=registry
        )
        self.drifts = Counter(
            "naive_drifts", "Drifts detected.", [*labels, "detector"], registry=registry
        )


@dataclass
class NaiveRun:
    events: int
    segments: int
    drifts: int


def consume(
    bootstrap: str,
    topic: str,
    group: str,
    registry: CollectorRegistry,
    done: Callable[[int], bool],
) -> NaiveRun:
    """Process events until ``done(number processed)`` says so."""
    metrics = NaiveMetrics(registry)
    detectors: dict[tuple[str, str], SegmentDetectors] = {}
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    count = drifts = 0
    for message in consumer:
        event = json.loads(message.value)
        run, env = event["run_id"], event["env_id"]
        seg = detectors.get((run, env))
        if seg is None:
            seg = detectors[(run, env)] = SegmentDetectors()
        metrics.events.labels(run, env, event["status"]).inc()
        metrics.last_ts.labels(run, env).set(event["ts"])
        seg.failures.update(event["status"] == "failed")
        if seg.failures.drift_detected:
            drifts += 1
            metrics.drifts.labels(run, env, "failures").inc()
        if event["reward"] is not None:
            metrics.reward.labels(run, env).observe(event["reward"])
            seg.reward.update(event["reward"])
            if seg.reward.drift_detected:
                drifts += 1
                metrics.drifts.labels(run, env, "reward").inc()
        if event.get("completion_tokens") is not None:
            metrics.length.labels(run, env).observe(event["completion_tokens"])
            seg.length.update(event["completion_tokens"])
            if seg.length.drift_detected:
                drifts += 1
                metrics.drifts.labels(run, env, "length").inc()
        count += 1
        if done(count):
            break
    consumer.close()
    return NaiveRun(count, len(detectors), drifts)
