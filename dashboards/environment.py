"""Environment drill-down: one run and environment, and what its detectors see.

Run and environment are single choices here (the fleet overview compares segments). Alarms are
drawn as annotations from increases of ``rollout_monitor_alarms_total``; alarms posted to Grafana
by :func:`dashboards.push.annotate_alarm` show as a second annotation source. Panels for policy
staleness and group statistics wait for the metrics that would feed them.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import units

from dashboards import ALARM_TAG
from dashboards import _common as c

UID = "rollout-env"
TITLE = "Rollout monitor / Environment drill-down"

_SEL = c.SEGMENT_SELECTOR
_DET = _SEL + ', detector=~"$detector"'


def _detector_variable() -> db.QueryVariable:
    return c.label_variable(
        "detector",
        "rollout_monitor_detector_statistic{" + _SEL + "}",
        label="Detector",
        description="Detectors of the selected segment.",
        multi=True,
    )


def _mean(metric: str) -> str:
    return (
        f"sum by (run, env) (rate({metric}_sum{{{_SEL}}}[$__rate_interval]))"
        f" / sum by (run, env) (rate({metric}_count{{{_SEL}}}[$__rate_interval]))"
    )


def _rows_reward_length(dashboard: db.Dashboard) -> db.Dashboard:
    return (
        dashboard.with_row(db.Row("Reward and length"))
        .with_panel(
            c.quantile_band_panel(
                "Reward quantiles",
                "p10-p90 band and median of the reward over the last 512 scored events.",
                units.NoUnit,
                "rollout_monitor_reward",
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Mean reward (1 m)",
                "Mean reward of the events scored in the last minute, from the summary's "
                "cumulative sum and count.",
                units.NoUnit,
                [(f"run_env:rollout_monitor_reward:mean_rate1m{{{_SEL}}}", "mean")],
            )
        )
        .with_panel(
            c.quantile_band_panel(
                "Completion length quantiles",
                "p10-p90 band and median of completion_tokens over the last 512 events.",
                units.Short,
                "rollout_monitor_completion_tokens",
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Mean completion length",
                "Mean completion_tokens per event over the rate interval.",
                units.Short,
                [(_mean("rollout_monitor_completion_tokens"), "mean")],
            )
        )
    )


def _row_rates(dashboard: db.Dashboard) -> db.Dashboard:
    return (
        dashboard.with_row(db.Row("Rates"))
        .with_panel(
            c.timeseries_panel(
                "Events by status",
                "Valid events per second by episode status (1 m rate).",
                units.EventsPerSecond,
                [
                    (
                        f"sum by (status) (run_env_status:rollout_monitor_events:rate1m{{{_SEL}}})",
                        "{{status}}",
                    )
                ],
                span=6,
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Error share",
                "Share of failed episodes (1 m). Dashed line: 5%, the bound of error_rate.",
                units.PercentUnit,
                [(f"run_env:rollout_monitor_error_share:ratio_rate1m{{{_SEL}}}", "failed")],
                span=6,
                thresholds=[(0.05, "red")],
                min_value=0,
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Truncation share",
                "Share of truncated episodes (1 m). Dashed line: 50%, where truncation_rate pages.",
                units.PercentUnit,
                [
                    (
                        f"run_env:rollout_monitor_truncation_share:ratio_rate1m{{{_SEL}}}",
                        "truncated",
                    )
                ],
                span=6,
                thresholds=[(0.5, "red")],
                min_value=0,
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Unscored share",
                "Share of events with reward: null (1 m).",
                units.PercentUnit,
                [
                    (
                        f"run_env:rollout_monitor_unscored_share:ratio_rate1m{{{_SEL}}}",
                        "unscored",
                    )
                ],
                span=6,
                min_value=0,
            )
        )
    )


def _row_detectors(dashboard: db.Dashboard) -> db.Dashboard:
    return (
        dashboard.with_row(db.Row("Detectors"))
        .with_panel(
            c.timeseries_panel(
                "Statistic relative to threshold",
                "Each detector's statistic divided by its threshold: at 1 (dashed) the "
                "statistic sits on the bound it is compared against.",
                units.NoUnit,
                [
                    (
                        f"max by (detector) (rollout_monitor_detector_statistic{{{_DET}}})"
                        f" / max by (detector) (rollout_monitor_detector_threshold{{{_DET}}})",
                        "{{detector}}",
                    )
                ],
                thresholds=[(1, "red")],
            )
        )
        .with_panel(
            c.table_panel(
                "Detectors now",
                "Current statistic and threshold of each detector, and whether its alert is "
                "firing (1).",
                units.Short,
                [
                    (f"max by (detector) (rollout_monitor_detector_statistic{{{_DET}}})", ""),
                    (f"max by (detector) (rollout_monitor_detector_threshold{{{_DET}}})", ""),
                    (f"max by (detector) (rollout_monitor_alert_active{{{_DET}}})", ""),
                ],
                columns={
                    "detector": "Detector",
                    "Value #A": "Statistic",
                    "Value #B": "Threshold",
                    "Value #C": "Firing",
                },
            )
        )
        .with_panel(
            c.timeseries_panel(
                "$detector: statistic and threshold",
                "The detector's test statistic (solid) against the bound it is compared "
                "with (dashed), in the statistic's own units.",
                units.Short,
                [
                    (f"max(rollout_monitor_detector_statistic{{{_DET}}})", "statistic"),
                    (f"max(rollout_monitor_detector_threshold{{{_DET}}})", "threshold"),
                ],
                span=8,
            )
            .repeat("detector")
            .repeat_direction("h")
            .override_by_name(
                "threshold",
                [
                    dm.DynamicConfigValue(
                        id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
                    ),
                    dm.DynamicConfigValue(
                        id_val="color", value={"mode": "fixed", "fixedColor": "red"}
                    ),
                ],
            )
        )
        .with_row(db.Row("Alarms and alerts"))
        .with_panel(
            c.timeseries_panel(
                "Alarms raised",
                "Alarms (one per detected change) by detector and severity, per rate interval.",
                units.Short,
                [
                    (
                        "sum by (detector, severity) (increase("
                        f"rollout_monitor_alarms_total{{{_SEL}}}[$__rate_interval]))",
                        "{{detector}} ({{severity}})",
                    )
                ],
                bars=True,
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Alert state",
                "1 while the alert of a detector is firing, 0 after it resolved.",
                units.Short,
                [
                    (
                        f"max by (detector, severity) (rollout_monitor_alert_active{{{_SEL}}})",
                        "{{detector}} ({{severity}})",
                    )
                ],
                min_value=0,
                max_value=1,
            )
        )
    )


def build() -> dict[str, Any]:
    dashboard = (
        c.base_dashboard(
            UID,
            TITLE,
            "Reward and length quantiles, failure shares and detector statistics of one "
            "environment of one run, with its alarms as annotations.",
        )
        .with_variable(c.run_variable(multi=False))
        .with_variable(c.env_variable(multi=False))
        .with_variable(_detector_variable())
        .annotation(
            c.PrometheusAnnotation(
                "Alerts firing",
                # A region per firing span. increase() of rollout_monitor_alarms_total would miss
                # a segment's first alarm: a counter series that appears at 1 has no increase.
                "max by (run, env, detector, severity) "
                f"(rollout_monitor_alert_active{{{_SEL}}}) == 1",
                title_format="{{detector}} ({{severity}})",
                tag_keys="detector,severity",
                step="15s",
                color="red",
            )
        )
        .annotation(
            c.grafana_tag_annotation(
                "Alarms posted to Grafana",
                [ALARM_TAG, "run:$run", "env:$env"],
                color="orange",
            )
        )
    )
    dashboard = _row_detectors(_row_rates(_rows_reward_length(dashboard)))
    return c.render(dashboard)
