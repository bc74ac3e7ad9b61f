"""The pipeline: invalid input refused with a reason, duplicates dropped, segments capped,
alarms mapped to alerts, and the metrics read at scrape time."""

from __future__ import annotations

from dataclasses import dataclass

from events_factory import encode, failing, healthy_stream, make_event
from prometheus_client import generate_latest

from monitor.alerts import AlertLog, AlertTracker
from monitor.config import DetectorSettings, PipelineSettings
from monitor.metrics import ConsumerState, build_registry
from monitor.pipeline import Pipeline


@dataclass
class Msg:
    value: bytes | None
    topic: str = "rl.rollouts"
    partition: int = 0


class ListSink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, str, str]] = []

    def send(self, msg: Msg, reason: str, detail: str) -> None:
        self.sent.append((msg.value, reason, detail))


def _pipeline(max_segments: int = 100) -> tuple[Pipeline, AlertLog, ListSink]:
    log, sink = AlertLog(), ListSink()
    tracker = AlertTracker(60.0, "docs/detectors.md", [log])
    pipeline = Pipeline(
        PipelineSettings(max_segments=max_segments, dedup_window=1000),
        DetectorSettings(),
        tracker,
        sink,
    )
    return pipeline, log, sink


def test_invalid_messages_are_refused_counted_and_processing_continues() -> None:
    pipeline, _, sink = _pipeline()
    batch = [Msg(b"{not json"), Msg(None), *map(Msg, encode(healthy_stream(5)))]
    batch.append(Msg(b'{"schema_version": 9}'))
    pipeline.process_messages(batch)
    assert pipeline.counters.processed == 5
    assert pipeline.counters.invalid["invalid_json"] == 2
    assert pipeline.counters.invalid["unsupported_schema_version"] == 1
    assert [s[1] for s in sink.sent] == [
        "invalid_json",
        "invalid_json",
        "unsupported_schema_version",
    ]
    assert sink.sent[0][0] == b"{not json", "the original bytes go to the dead-letter sink"


def test_duplicate_event_ids_are_dropped_and_counted() -> None:
    pipeline, _, _ = _pipeline()
    events = encode(healthy_stream(50))
    pipeline.process_messages([Msg(v) for v in events + events[:10]])
    assert pipeline.counters.processed == 50
    assert pipeline.counters.duplicates == 10
    seg = pipeline.segments.lookup("run-a", "math-v2")
    assert seg is not None and seg.events == 50


def test_segment_cap_routes_overflow_to_one_segment_per_partition() -> None:
    pipeline, _, _ = _pipeline(max_segments=3)
    events = [make_event(i, env_id=f"env-{i}") for i in range(20)]
    pipeline.process_messages([Msg(v) for v in encode(events)])
    assert len(pipeline.segments) == 4  # three real segments and the overflow segment
    overflow = pipeline.segments.lookup("_overflow", "_overflow-rl.rollouts-0")
    assert overflow is not None and overflow.events == 17
    assert pipeline.segments.overflow_events == 17
    more = [make_event(100 + i, env_id=f"more-{i}") for i in range(5)]
    pipeline.process_messages([Msg(v, partition=1) for v in encode(more)])
    assert len(pipeline.segments) == 5, "the cap holds; partition 1 gets its own overflow"


def test_partition_snapshot_restores_exact_state() -> None:
    import pickle

    pipeline, _, _ = _pipeline()
    stream = encode(healthy_stream(4000))
    pipeline.process_messages([Msg(v, partition=2) for v in stream[:2000]])
    snapshot = pickle.loads(pickle.dumps(pipeline.snapshot(("rl.rollouts", 2))))
    pipeline.process_messages([Msg(v, partition=2) for v in stream[2000:]])
    other, _, _ = _pipeline()
    other.restore(("rl.rollouts", 2), snapshot)
    other.process_messages([Msg(v, partition=2) for v in stream[2000:]])
    a = pipeline.segments.lookup("run-a", "math-v2")
    b = other.segments.lookup("run-a", "math-v2")
    assert a is not None and b is not None
    assert (a.events, a.reward_sum, a.status_counts) == (b.events, b.reward_sum, b.status_counts)
    assert a.bank.detectors["reward_shift"].statistic == b.bank.detectors["reward_shift"].statistic
    assert other.counters.processed == pipeline.counters.processed == 4000
    other.drop(("rl.rollouts", 2))
    assert len(other.segments) == 0 and other.counters.processed == 0


def test_error_burst_fires_one_alert_for_the_right_segment() -> None:
    pipeline, log, _ = _pipeline()
    events = healthy_stream(3000)
    for i in range(1500, 3000):
        if i % 3 == 0:
            events[i] = failing(events[i])
    other = healthy_stream(3000, seed=1, env_id="code")
    stream = [e for pair in zip(events, other, strict=True) for e in pair]
    pipeline.process_messages([Msg(v) for v in encode(stream)])
    fired = [a for a in log.alerts if a.status == "firing" and a.detector == "error_rate"]
    assert len(fired) == 1, fired
    assert fired[0].env == "math-v2" and fired[0].severity == "page"
    assert fired[0].event_index > 2 * 1500, "the alarm comes after the onset"


def test_clean_stream_raises_no_page() -> None:
    pipeline, log, _ = _pipeline()
    pipeline.process_messages([Msg(v) for v in encode(healthy_stream(20000, seed=3))])
    pages = [a for a in log.alerts if a.severity == "page"]
    assert pages == []


def test_metrics_are_read_from_state_at_scrape_time() -> None:
    pipeline, _, _ = _pipeline()
    events = healthy_stream(100)
    events[5] = failing(events[5])
    pipeline.process_messages([Msg(v) for v in encode(events)] + [Msg(b"x")])
    registry = build_registry(
        pipeline, ConsumerState(lag=lambda: {("rl.rollouts", 0): 42}, ready=lambda: True)
    )
    seg = {"run": "run-a", "env": "math-v2"}
    get = registry.get_sample_value
    assert get("rollout_monitor_events_total", {**seg, "status": "completed"}) == 99
    assert get("rollout_monitor_events_total", {**seg, "status": "failed"}) == 1
    assert get("rollout_monitor_unscored_events_total", seg) == 1
    assert get("rollout_monitor_invalid_events_total", {"reason": "invalid_json"}) == 1
    assert get("rollout_monitor_events_processed_total") == 100
    assert get("rollout_monitor_reward_count", seg) == 99
    assert get("rollout_monitor_last_event_timestamp_seconds", seg) == events[-1]["ts"]
    assert (
        get("rollout_monitor_consumer_lag_messages", {"topic": "rl.rollouts", "partition": "0"})
        == 42
    )
    assert get("rollout_monitor_ready") == 1
    assert get("rollout_monitor_batch_duration_seconds_count") == 1
    for detector in (
        "error_rate",
        "reward_shift",
        "length_anomaly",
        "truncation_rate",
        "masked_failure",
    ):
        assert get("rollout_monitor_detector_threshold", {**seg, "detector": detector}) is not None
    q50 = get("rollout_monitor_completion_tokens", {**seg, "quantile": "0.5"})
    assert q50 is not None and 300 < q50 < 1000
    text = generate_latest(registry).decode()
    assert "task_id" not in text and "group_id" not in text
    assert get("rollout_monitor_collect_duration_seconds") is not None


def test_released_batch_gives_the_same_results_and_frees_each_message_once_routed() -> None:
    import weakref

    events = healthy_stream(3000)
    for i in range(1500, 3000, 3):
        events[i] = failing(events[i])
    values = [b"{not json", *encode(events)]
    kept, kept_log, kept_sink = _pipeline()
    kept.process_messages([Msg(v) for v in values])
    released, released_log, released_sink = _pipeline()
    batch = [Msg(v) for v in values]
    refs = [weakref.ref(m) for m in batch]
    alive_while_routing: list[int] = []
    state = released.partition_state(("rl.rollouts", 0))
    dedup = state.dedup

    class Spy:  # the pipeline asks dedup about each partition run's valid events at once
        def seen_many(self, event_ids: list[str]) -> list[bool]:
            alive_while_routing.append(sum(r() is not None for r in refs))
            return dedup.seen_many(event_ids)

    state.dedup = Spy()  # type: ignore[assignment]
    released.process_messages(batch, release=True)
    assert batch == [None] * len(values)
    # one run (one partition), asked once all its messages were decoded and freed
    assert alive_while_routing == [0], "decoded messages are freed before the batch ends"
    assert released.counters.processed == kept.counters.processed == 3000
    assert released_sink.sent == kept_sink.sent
    assert [(a.detector, a.status, a.event_index) for a in released_log.alerts] == [
        (a.detector, a.status, a.event_index) for a in kept_log.alerts
    ]
    assert any(a.detector == "error_rate" for a in released_log.alerts)
