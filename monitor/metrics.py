"""Prometheus export: collectors that read the daemon's state at scrape time.

Nothing is exported from the per-event path: the pipeline keeps plain integers and bounded
windows in its own objects, and these collectors build the metric families when Prometheus
scrapes. The full list of names is in ``docs/metrics.md``.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

import detectors
from monitor import __version__
from monitor.alertmanager import AlertmanagerClient
from monitor.pipeline import Pipeline
from monitor.segments import STATUSES, Segment

QUANTILES = (0.1, 0.5, 0.9)
SEGMENT_LABELS = ("run", "env")


class BuildInfoCollector(Collector):
    """``rollout_monitor_build_info{version="0.1.0",python="3.11.7",detectors="compiled"} 1``

    ``detectors`` is ``compiled`` when the detector library runs as its mypyc build
    (``deploy/compile_detectors.py``), ``python`` otherwise (same results, more CPU).
    """

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "rollout_monitor_build_info",
            "Build information of the running daemon.",
            labels=["version", "python", "detectors"],
        )
        build = "compiled" if detectors.COMPILED else "python"
        info.add_metric([__version__, platform.python_version(), build], 1)
        yield info


class SegmentCollector(Collector):
    """Per-segment series: events by status, reward and length summaries, last event time.

    ``rollout_monitor_events_total{run="r",env="math",status="failed"} 12``
    ``rollout_monitor_reward{run="r",env="math",quantile="0.5"} 0.61``
    ``rollout_monitor_last_event_timestamp_seconds{run="r",env="math"} 1.764e+09``
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        segments = self.pipeline.segments.snapshot()
        events = CounterMetricFamily(
            "rollout_monitor_events",
            "Valid events processed, by episode status.",
            labels=[*SEGMENT_LABELS, "status"],
        )
        unscored = CounterMetricFamily(
            "rollout_monitor_unscored_events",
            "Events whose reward is null (not scored).",
            labels=list(SEGMENT_LABELS),
        )
        last_ts = GaugeMetricFamily(
            "rollout_monitor_last_event_timestamp_seconds",
            "Event time (ts) of the newest event of the segment.",
            labels=list(SEGMENT_LABELS),
        )
        reward = _summary(
            "rollout_monitor_reward", "Reward of scored episodes; quantiles over the last 512."
        )
        length = _summary(
            "rollout_monitor_completion_tokens",
            "Completion length in tokens; quantiles over the last 512.",
        )
        for seg in segments:
            labels = [seg.run, seg.env]
            counts = dict(seg.status_counts)
            for status in STATUSES:
                events.add_metric([*labels, status], counts[status])
            unscored.add_metric(labels, seg.unscored)
            last_ts.add_metric(labels, seg.last_ts)
            _add_summary(reward, labels, seg.rewards, seg.reward_count, seg.reward_sum)
            _add_summary(length, labels, seg.lengths, seg.length_count, seg.length_sum)
        yield from (events, unscored, last_ts, reward, length)


def _summary(name: str, documentation: str) -> Metric:
    # SummaryMetricFamily cannot carry quantiles; a plain Metric of type summary can.
    return Metric(name, documentation, "summary")


def _add_summary(
    family: Metric, labels: list[str], window: Sequence[float], count: int, total: float
) -> None:
    values = np.asarray(window[:], dtype=float)
    quantiles = np.quantile(values, QUANTILES) if values.size else [float("nan")] * len(QUANTILES)
    names = dict(zip(SEGMENT_LABELS, labels, strict=True))
    for q, v in zip(QUANTILES, quantiles, strict=True):
        family.add_sample(family.name, {**names, "quantile": str(q)}, float(v))
    family.add_sample(family.name + "_count", names, count)
    family.add_sample(family.name + "_sum", names, total)


class DetectorCollector(Collector):
    """Detector statistics against thresholds, alarms raised and alerts firing.

    ``rollout_monitor_detector_statistic{run="r",env="math",detector="error_rate"} 0.003``
    ``rollout_monitor_detector_threshold{run="r",env="math",detector="error_rate"} 0.05``
    ``rollout_monitor_alarms_total{run="r",env="math",detector="error_rate",severity="page"} 1``
    ``rollout_monitor_alert_active{run="r",env="math",detector="error_rate",severity="page"} 1``
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        statistic = GaugeMetricFamily(
            "rollout_monitor_detector_statistic",
            "Current test statistic of the detector.",
            labels=[*SEGMENT_LABELS, "detector"],
        )
        threshold = GaugeMetricFamily(
            "rollout_monitor_detector_threshold",
            "Bound the detector statistic is compared against.",
            labels=[*SEGMENT_LABELS, "detector"],
        )
        for seg in self.pipeline.segments.snapshot():
            _add_detectors(statistic, threshold, seg)
        alarms = CounterMetricFamily(
            "rollout_monitor_alarms",
            "Alarms raised by detectors (one per detected change).",
            labels=[*SEGMENT_LABELS, "detector", "severity"],
        )
        tracker = self.pipeline.tracker
        for (run, env, detector, severity), n in list(tracker.alarms_total.items()):
            alarms.add_metric([run, env, detector, severity], n)
        active = GaugeMetricFamily(
            "rollout_monitor_alert_active",
            "1 while the alert of that detector is firing.",
            labels=[*SEGMENT_LABELS, "detector", "severity"],
        )
        for alert in tracker.active():
            active.add_metric([alert.run, alert.env, alert.detector, alert.severity], 1)
        yield from (statistic, threshold, alarms, active)


def _add_detectors(
    statistic: GaugeMetricFamily, threshold: GaugeMetricFamily, seg: Segment
) -> None:
    for detector_id, detector in list(seg.bank.detectors.items()):
        labels = [seg.run, seg.env, detector_id]
        statistic.add_metric(labels, float(detector.statistic))
        threshold.add_metric(labels, float(detector.threshold))


@dataclass
class ConsumerState:
    """What the daemon knows about its Kafka consumer, read at scrape time."""

    lag: Callable[[], Mapping[tuple[str, int], int]] = dict
    ready: Callable[[], bool] = lambda: False
    dead_letter_failures: Callable[[], int] = lambda: 0
    assigned_partitions: Callable[[], int] = lambda: 0
    checkpoint_load_failures: Callable[[], int] = lambda: 0
    checkpoints_saved: Callable[[], int] = lambda: 0


class PipelineCollector(Collector):
    """Daemon-wide counters: throughput, invalid input, duplicates, batches, lag, readiness.

    ``rollout_monitor_invalid_events_total{reason="invalid_json"} 3``
    ``rollout_monitor_consumer_lag_messages{topic="rl.rollouts",partition="0"} 120``
    """

    def __init__(self, pipeline: Pipeline, consumer: ConsumerState | None = None) -> None:
        self.pipeline = pipeline
        self.consumer = consumer or ConsumerState()

    def collect(self) -> Iterator[Metric]:
        c = self.pipeline.counters
        yield CounterMetricFamily(
            "rollout_monitor_events_processed", "Valid events processed.", value=c.processed
        )
        yield CounterMetricFamily(
            "rollout_monitor_duplicate_events",
            "Events dropped as repeats of a recent event_id.",
            value=c.duplicates,
        )
        yield CounterMetricFamily(
            "rollout_monitor_batches", "Micro-batches processed.", value=c.batches
        )
        invalid = CounterMetricFamily(
            "rollout_monitor_invalid_events",
            "Messages refused and dead-lettered, by reason.",
            labels=["reason"],
        )
        for reason, n in list(c.invalid.items()):
            invalid.add_metric([reason], n)
        yield invalid
        yield CounterMetricFamily(
            "rollout_monitor_dead_letter_failures",
            "Dead-letter produce failures.",
            value=self.consumer.dead_letter_failures(),
        )
        yield GaugeMetricFamily(
            "rollout_monitor_segments",
            "Segments held in memory.",
            value=len(self.pipeline.segments),
        )
        yield CounterMetricFamily(
            "rollout_monitor_segment_overflow_events",
            "Events routed to the overflow segment because the segment cap was reached.",
            value=self.pipeline.segments.overflow_events,
        )
        lag = GaugeMetricFamily(
            "rollout_monitor_consumer_lag_messages",
            "High watermark minus consumer position, per partition.",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in sorted(self.consumer.lag().items()):
            lag.add_metric([topic, str(partition)], n)
        yield lag
        yield GaugeMetricFamily(
            "rollout_monitor_assigned_partitions",
            "Kafka partitions this daemon owns.",
            value=self.consumer.assigned_partitions(),
        )
        yield CounterMetricFamily(
            "rollout_monitor_checkpoints_saved",
            "Partition checkpoints written.",
            value=self.consumer.checkpoints_saved(),
        )
        yield CounterMetricFamily(
            "rollout_monitor_checkpoint_load_failures",
            "Checkpoints refused on load (corrupted, other version); the partition started fresh.",
            value=self.consumer.checkpoint_load_failures(),
        )
        yield GaugeMetricFamily(
            "rollout_monitor_ready",
            "1 when partitions are assigned and the broker is reachable.",
            value=1 if self.consumer.ready() else 0,
        )
        yield from c.batch_duration.collect()
        yield from c.event_age.collect()


class AlertDeliveryCollector(Collector):
    """Alertmanager delivery: posts by result, queue depth, drops.

    ``rollout_monitor_alerts_sent_total{result="ok"} 4``
    """

    def __init__(self, client: AlertmanagerClient) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        sent = CounterMetricFamily(
            "rollout_monitor_alerts_sent", "Posts to Alertmanager by result.", labels=["result"]
        )
        sent.add_metric(["ok"], self.client.sent_ok)
        sent.add_metric(["error"], self.client.sent_error)
        yield sent
        yield GaugeMetricFamily(
            "rollout_monitor_alert_queue_size",
            "Alert transitions waiting for delivery.",
            value=self.client.queue_depth,
        )
        yield CounterMetricFamily(
            "rollout_monitor_alert_queue_dropped",
            "Alert transitions dropped because the delivery queue was full.",
            value=self.client.dropped,
        )
        yield CounterMetricFamily(
            "rollout_monitor_alerts_rejected",
            "Alert transitions Alertmanager refused (HTTP 400 or 422; logged, not retried).",
            value=self.client.rejected,
        )


class CollectCostCollector(Collector):
    """Time this scrape spent in the other collectors (registered last, so it runs last).

    ``rollout_monitor_collect_duration_seconds 0.004``
    """

    def __init__(self, extra: Callable[[], float] = lambda: 0.0) -> None:
        self.seconds = 0.0
        self.extra = extra  # cost spent outside the registry (the previous segment render)

    def timed(self, inner: Collector) -> Collector:
        """Wrap ``inner`` so that its collect time is added to this scrape's total."""
        return _Timed(inner, self)

    def collect(self) -> Iterator[Metric]:
        spent, self.seconds = self.seconds + self.extra(), 0.0
        yield GaugeMetricFamily(
            "rollout_monitor_collect_duration_seconds",
            "Time the current scrape spent collecting the other metrics.",
            value=spent,
        )


class _Timed(Collector):
    def __init__(self, inner: Collector, cost: CollectCostCollector) -> None:
        self.inner = inner
        self.cost = cost

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        families = list(self.inner.collect())
        self.cost.seconds += time.perf_counter() - started
        yield from families


def build_registry(
    pipeline: Pipeline,
    consumer: ConsumerState | None = None,
    alert_client: AlertmanagerClient | None = None,
    per_segment: bool = True,
    extra_cost: Callable[[], float] = lambda: 0.0,
) -> CollectorRegistry:
    """A fresh registry with every collector of the daemon.

    ``per_segment=False`` leaves out the per-segment families, which the HTTP endpoint
    renders with ``monitor.exposition.SegmentExposition`` instead (same samples, faster).
    """
    registry = CollectorRegistry(auto_describe=False)
    cost = CollectCostCollector(extra_cost)
    collectors: list[Collector] = [BuildInfoCollector(), PipelineCollector(pipeline, consumer)]
    if per_segment:
        collectors += [SegmentCollector(pipeline), DetectorCollector(pipeline)]
    if alert_client is not None:
        collectors.append(AlertDeliveryCollector(alert_client))
    for collector in collectors:
        registry.register(cost.timed(collector))
    registry.register(cost)
    return registry
