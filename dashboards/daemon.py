"""The daemon's own health: throughput, lag, refused input, batch cost, alert delivery."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import units

from dashboards import _common as c

UID = "rollout-daemon"
TITLE = "Rollout monitor / Daemon health"
#: Prometheus scrape job of the daemon (deploy/prometheus, RolloutMonitorDown).
JOB = "rollout-monitor"

_INST = 'instance=~"$instance"'


def _instance_variable() -> db.QueryVariable:
    return c.label_variable(
        "instance",
        "rollout_monitor_build_info",
        label="Instance",
        description="Daemon instances (host:port of their /metrics).",
        multi=True,
    )


def _rate(metric: str, by: str = "instance") -> str:
    return f"sum by ({by}) (rate({metric}{{{_INST}}}[$__rate_interval]))"


def _quantile(q: float, histogram: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (le) "
        f"(rate({histogram}_bucket{{{_INST}}}[$__rate_interval])))"
    )


def _row_status(dashboard: db.Dashboard) -> db.Dashboard:
    return (
        dashboard.with_row(db.Row("Status"))
        .with_panel(
            c.stat_panel(
                "Instances up",
                f'Daemon targets Prometheus scrapes successfully (job="{JOB}").',
                units.Short,
                f'sum(up{{job="{JOB}", {_INST}}})',
            )
        )
        .with_panel(
            c.stat_panel(
                "Instances ready",
                "Instances with partitions assigned and the broker reachable.",
                units.Short,
                f"sum(rollout_monitor_ready{{{_INST}}})",
            )
        )
        .with_panel(
            c.stat_panel(
                "Event rate",
                "Valid events processed per second, all instances.",
                units.EventsPerSecond,
                f"sum(rate(rollout_monitor_events_processed_total{{{_INST}}}[$__rate_interval]))",
            )
        )
        .with_panel(
            c.stat_panel(
                "Consumer lag",
                "Messages behind the high watermark, summed over partitions.",
                units.Short,
                f"sum(rollout_monitor_consumer_lag_messages{{{_INST}}})",
                thresholds=[(10_000, "orange")],
            )
        )
        .with_panel(
            c.stat_panel(
                "Queued alerts",
                "Alert transitions waiting for delivery to Alertmanager.",
                units.Short,
                f"sum(rollout_monitor_alert_queue_size{{{_INST}}})",
                thresholds=[(100, "orange")],
            )
        )
        .with_panel(
            c.table_panel(
                "Build",
                "Version of the daemon and of Python, per instance.",
                units.Short,
                [(f"rollout_monitor_build_info{{{_INST}}}", "")],
                columns={"instance": "Instance", "version": "Version", "python": "Python"},
                span=4,
                height=4,
            )
        )
    )


def _row_throughput(dashboard: db.Dashboard) -> db.Dashboard:
    return (
        dashboard.with_row(db.Row("Throughput and lag"))
        .with_panel(
            c.timeseries_panel(
                "Events processed",
                "Valid events processed per second, per instance.",
                units.EventsPerSecond,
                [(_rate("rollout_monitor_events_processed_total"), "{{instance}}")],
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Consumer lag by partition",
                "High watermark minus committed position, per topic partition.",
                units.Short,
                [
                    (
                        "sum by (topic, partition) "
                        f"(rollout_monitor_consumer_lag_messages{{{_INST}}})",
                        "{{topic}} [{{partition}}]",
                    )
                ],
                min_value=0,
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Batch duration",
                "Wall time to process one micro-batch: median and p99 over the rate interval.",
                units.Seconds,
                [
                    (_quantile(0.5, "rollout_monitor_batch_duration_seconds"), "p50"),
                    (_quantile(0.99, "rollout_monitor_batch_duration_seconds"), "p99"),
                ],
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Batches processed",
                "Micro-batches processed per second, per instance.",
                units.OpsPerSecond,
                [(_rate("rollout_monitor_batches_total"), "{{instance}}")],
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Event age when processed",
                "Wall clock minus event ts when the event was processed: median and p99. "
                "Meaningful for live streams; replays show the age of the files.",
                units.Seconds,
                [
                    (_quantile(0.5, "rollout_monitor_event_age_seconds"), "p50"),
                    (_quantile(0.99, "rollout_monitor_event_age_seconds"), "p99"),
                ],
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Segments",
                "Run x environment segments held in memory, and events per second routed to "
                "the overflow segment once the cap is reached.",
                units.Short,
                [
                    (
                        f"sum by (instance) (rollout_monitor_segments{{{_INST}}})",
                        "segments {{instance}}",
                    ),
                    (
                        _rate("rollout_monitor_segment_overflow_events_total"),
                        "overflow events/s {{instance}}",
                    ),
                ],
            )
        )
    )


def _row_input(dashboard: db.Dashboard) -> db.Dashboard:
    return (
        dashboard.with_row(db.Row("Refused and repeated input"))
        .with_panel(
            c.timeseries_panel(
                "Invalid events by reason",
                "Messages refused and dead-lettered per second, by reason.",
                units.MessagesPerSecond,
                [(_rate("rollout_monitor_invalid_events_total", "reason"), "{{reason}}")],
                span=8,
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Dead-letter produce failures",
                "Refused messages the dead-letter producer failed to write, per second. "
                "Anything above 0 loses input for good.",
                units.MessagesPerSecond,
                [(_rate("rollout_monitor_dead_letter_failures_total"), "{{instance}}")],
                span=8,
                thresholds=[(0.001, "red")],
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Duplicate events dropped",
                "Events dropped per second as repeats of a recent event_id.",
                units.EventsPerSecond,
                [(_rate("rollout_monitor_duplicate_events_total"), "{{instance}}")],
                span=8,
            )
        )
    )


def _row_delivery(dashboard: db.Dashboard) -> db.Dashboard:
    return (
        dashboard.with_row(db.Row("Scrape cost and alert delivery"))
        .with_panel(
            c.timeseries_panel(
                "Scrape cost",
                "Time the daemon spent collecting its metrics for the previous scrape, and "
                "the scrape duration Prometheus measured.",
                units.Seconds,
                [
                    (
                        f"rollout_monitor_collect_duration_seconds{{{_INST}}}",
                        "collect {{instance}}",
                    ),
                    (f'scrape_duration_seconds{{job="{JOB}", {_INST}}}', "scrape {{instance}}"),
                ],
                span=8,
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Alert posts by result",
                "Posts to Alertmanager per second, ok and error.",
                units.RequestsPerSecond,
                [(_rate("rollout_monitor_alerts_sent_total", "result"), "{{result}}")],
                span=8,
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Alert queue",
                "Alerts waiting for delivery, and alerts dropped per second because the queue "
                "was full.",
                units.Short,
                [
                    (
                        f"sum by (instance) (rollout_monitor_alert_queue_size{{{_INST}}})",
                        "queued {{instance}}",
                    ),
                    (_rate("rollout_monitor_alert_queue_dropped_total"), "dropped/s {{instance}}"),
                ],
                span=8,
            )
        )
    )


def build() -> dict[str, Any]:
    dashboard = c.base_dashboard(
        UID,
        TITLE,
        "Health of the rollout monitor daemon: throughput, consumer lag, refused input, "
        "batch and scrape cost, alert delivery.",
    ).with_variable(_instance_variable())
    dashboard = _row_delivery(_row_input(_row_throughput(_row_status(dashboard))))
    return c.render(dashboard)
