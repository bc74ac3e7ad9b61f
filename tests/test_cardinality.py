"""Runaway or hostile ``env_id`` values: segments, exported series and memory stay bounded.

A million distinct environments go through a pipeline capped at 1,000 segments; the overflow
segment takes the rest, the exposition keeps at most the cap's worth of series and the
process memory stops growing once the cap and the duplicate window are full. The same with
100,000 distinct environments through the daemon on the real broker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from daemon_proc import DaemonProcess
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from stack import Stack, wait_until

from monitor.alerts import AlertLog, AlertTracker
from monitor.config import DetectorSettings, PipelineSettings
from monitor.metrics import build_registry
from monitor.pipeline import Pipeline
from monitor.source import RawMessage

MiB = 1 << 20
CAP = 1000
DISTINCT_ENVS = 1_000_000
BATCH = 5000
TEMPLATE = (
    b'{"schema_version":1,"event_id":"c-%d","ts":%d.5,"run_id":"card","env_id":"env-%d",'
    b'"status":"completed","reward":0.5,"completion_tokens":100}'
)
#: RSS growth allowed for a million distinct environments: 1,001 segments with their detector
#: banks (about 75 KiB each) and the 100,000-id duplicate window. Measured: 90 MiB.
RSS_BOUND = 256 * MiB
#: RSS growth allowed over the second half of the stream, when the cap and the duplicate
#: window are already full. Measured: 0 MiB.
PLATEAU_BOUND = 32 * MiB


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def distinct_env_batches(n: int) -> Iterator[list[RawMessage]]:
    for start in range(0, n, BATCH):
        yield [
            RawMessage(TEMPLATE % (i, 1_764_000_000 + i // 1000, i), None, "card", 0, i, None)
            for i in range(start, min(n, start + BATCH))
        ]


def samples_by_segment(exposition: str) -> tuple[int, dict[tuple[str, str], int]]:
    """Samples without segment labels, and the sample count of each (run, env)."""
    unlabelled = 0
    per_segment: dict[tuple[str, str], int] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if "env" in sample.labels:
                key = (sample.labels["run"], sample.labels["env"])
                per_segment[key] = per_segment.get(key, 0) + 1
            else:
                unlabelled += 1
    return unlabelled, per_segment


def series_per_segment() -> int:
    """How many samples one segment exports (the same for every segment)."""
    pipeline = Pipeline(
        PipelineSettings(max_segments=CAP),
        DetectorSettings(),
        AlertTracker(60.0, "docs/detectors.md", [AlertLog()]),
    )
    registry = build_registry(pipeline)
    for batch in distinct_env_batches(50):
        pipeline.process_messages(batch)
    _, per_segment = samples_by_segment(generate_latest(registry).decode())
    assert len(per_segment) == 50
    assert len(set(per_segment.values())) == 1, per_segment
    return next(iter(per_segment.values()))


def test_every_segment_exports_the_same_number_of_series() -> None:
    assert 10 < series_per_segment() < 200


@pytest.mark.slow
def test_a_million_distinct_envs_keep_series_and_memory_bounded() -> None:
    pipeline = Pipeline(
        PipelineSettings(max_segments=CAP),
        DetectorSettings(),
        AlertTracker(60.0, "docs/detectors.md", [AlertLog()]),
    )
    registry = build_registry(pipeline)
    before = rss_bytes()
    halfway = 0
    for batch in distinct_env_batches(DISTINCT_ENVS):
        pipeline.process_messages(batch)
        if batch[0].offset == DISTINCT_ENVS // 2:
            halfway = rss_bytes()
    after = rss_bytes()

    assert pipeline.counters.processed == DISTINCT_ENVS
    assert len(pipeline.segments) == CAP + 1, "the cap plus the partition's overflow segment"
    assert pipeline.segments.overflow_events == DISTINCT_ENVS - CAP

    exposition = generate_latest(registry).decode()
    unlabelled, per_segment = samples_by_segment(exposition)
    assert len(per_segment) == CAP + 1
    overflow = [key for key in per_segment if key[0] == "_overflow"]
    assert len(overflow) == 1, overflow
    bound = unlabelled + (CAP + 1) * series_per_segment()
    total = unlabelled + sum(per_segment.values())
    print(
        f"{DISTINCT_ENVS} envs: {total} samples ({len(exposition) / MiB:.1f} MiB exposition), "
        f"RSS growth {(after - before) / MiB:.0f} MiB, second half {(after - halfway) / MiB:.0f}"
        " MiB"
    )
    assert total <= bound
    assert after - before < RSS_BOUND, f"RSS grew {(after - before) / MiB:.0f} MiB"
    assert after - halfway < PLATEAU_BOUND, f"RSS grew {(after - halfway) / MiB:.0f} MiB"


def test_long_identifiers_are_refused_so_they_cannot_inflate_the_exposition() -> None:
    pipeline = Pipeline(
        PipelineSettings(max_segments=4, dedup_window=1000),
        DetectorSettings(),
        AlertTracker(60.0, "docs/detectors.md", [AlertLog()]),
    )
    registry = build_registry(pipeline)
    long = 256 * 1024
    batch = [
        RawMessage(
            TEMPLATE.replace(b"env-%d", b"%s") % (i, 1_764_000_000, b"%d" % i + b"e" * long),
            None,
            "card",
            0,
            i,
            None,
        )
        for i in range(4)
    ]
    pipeline.process_messages(batch)
    assert pipeline.counters.processed == 0
    assert pipeline.counters.invalid["invalid_value"] == 4
    size = len(generate_latest(registry))
    assert size < 64 * 1024, f"exposition is {size} bytes"


# -- the daemon on the broker --------------------------------------------------------------

DAEMON_ENVS = 100_000


@pytest.mark.stack
@pytest.mark.slow
def test_daemon_caps_segments_for_100k_distinct_envs_on_the_broker(
    stack: Stack, kafka_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = kafka_topic(partitions=4)
    run = f"card-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "linger.ms": 20})
    for i in range(DAEMON_ENVS):
        value = TEMPLATE.replace(b'"card"', b'"' + run.encode() + b'"') % (
            i,
            1_764_000_000 + i // 1000,
            i,
        )
        while True:
            try:
                producer.produce(topic, value=value, key=b"%d" % i)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    env = {
        "ROLLOUT_MONITOR_KAFKA__BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "ROLLOUT_MONITOR_KAFKA__TOPICS": topic,
        "ROLLOUT_MONITOR_KAFKA__GROUP_ID": "g-" + run,
        "ROLLOUT_MONITOR_KAFKA__DEAD_LETTER_TOPIC": topic + ".dlq",
        "ROLLOUT_MONITOR_ALERTMANAGER__URL": "",
        "ROLLOUT_MONITOR_PIPELINE__MAX_SEGMENTS": str(CAP),
    }
    daemon = DaemonProcess(env, "127.0.0.1:9112", tmp_path / "daemon.log").start()
    try:
        wait_until(
            lambda: daemon.sample("rollout_monitor_events_processed_total") >= DAEMON_ENVS,
            timeout=180,
            interval=1.0,
            message=f"daemon processed {DAEMON_ENVS} events",
        )
        segments = daemon.sample("rollout_monitor_segments")
        overflow = daemon.sample("rollout_monitor_segment_overflow_events_total")
        unlabelled, per_segment = samples_by_segment(daemon.metrics_text())
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    partitions = 4
    assert CAP < segments <= CAP + partitions, "the cap plus one overflow segment per partition"
    assert overflow == DAEMON_ENVS - CAP
    assert len(per_segment) == segments
    assert max(per_segment.values()) == series_per_segment()
    total = unlabelled + sum(per_segment.values())
    assert total <= unlabelled + (CAP + partitions) * series_per_segment()
