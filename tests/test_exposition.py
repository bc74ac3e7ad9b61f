"""The fast per-segment exposition carries exactly the samples of the reference collectors."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from detectors.alarm import Alarm
from monitor.alerts import AlertLog, AlertTracker
from monitor.config import DetectorSettings, PipelineSettings
from monitor.exposition import SegmentExposition
from monitor.metrics import build_registry
from monitor.pipeline import Pipeline


@dataclass
class Msg:
    value: bytes
    topic: str = "t"
    partition: int = 0


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            value = s.value
            out[(s.name, tuple(sorted(s.labels.items())))] = "nan" if math.isnan(value) else value
    return out


def test_fast_exposition_equals_the_collectors() -> None:
    pipeline = Pipeline(
        PipelineSettings(max_segments=50), DetectorSettings(), AlertTracker(60, "d", [AlertLog()])
    )
    events = []
    for i in range(3000):
        env = f"env-{i % 7}" if i % 11 else 'we"ird\\env\nname'
        events.append(
            {
                "schema_version": 1,
                "event_id": f"e{i}",
                "ts": 1.0 + i,
                "run_id": "r",
                "env_id": env,
                "status": "failed" if i % 13 == 0 else "completed",
                "reward": None if i % 13 == 0 else float(i % 3) / 2,
                "completion_tokens": 100 + i % 50,
            }
        )
    pipeline.process_messages([Msg(json.dumps(e).encode()) for e in events])
    pipeline.tracker.on_alarm("r", "env-1", Alarm("error_rate", "page", 0.2, 0.05, "x"), 5, 5.0)
    full = build_registry(pipeline)
    core = build_registry(pipeline, per_segment=False)
    exposition = SegmentExposition(pipeline)
    first = exposition.render()
    fast = generate_latest(core) + first
    reference = _samples(generate_latest(full).decode())
    rendered = _samples(fast.decode())
    reference = {
        k: v for k, v in reference.items() if k[0] != "rollout_monitor_collect_duration_seconds"
    }
    rendered = {
        k: v for k, v in rendered.items() if k[0] != "rollout_monitor_collect_duration_seconds"
    }
    assert rendered == reference
    assert len(rendered) > 8 * 16 * 2
    # The texts kept for the next scrapes (reused once a batch has ended) say the same.
    pipeline.end_batch()  # (also resolves the alert above: the alert families change)
    for _ in range(2):
        kept = exposition.render()
        assert kept == SegmentExposition(pipeline).render()
    assert exposition.last_rendered == 0
    alerts = b"# HELP rollout_monitor_alarms_total"
    assert kept.split(alerts)[0] == first.split(alerts)[0]
