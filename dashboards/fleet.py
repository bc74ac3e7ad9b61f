"""Fleet overview: every run and environment on one page.

Per-segment rates and shares come from the recording rules in
``deploy/prometheus/rules/recording.yml`` (``run_env:...:rate1m``), so the page stays cheap with
many segments.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import units

from dashboards import _common as c

UID = "rollout-fleet"
TITLE = "Rollout monitor / Fleet overview"

_SEL = c.SEGMENT_SELECTOR
_DRILL_DOWN = (
    db.DashboardLink("Environment drill-down")
    .url("/d/rollout-env/?var-run=${__data.fields.run}&var-env=${__data.fields.env}")
    .keep_time(True)
)


def build() -> dict[str, Any]:
    dashboard = (
        c.base_dashboard(
            UID,
            TITLE,
            "Event rate, reward, failure shares and firing alerts of every run and environment.",
        )
        .with_variable(c.run_variable(multi=True))
        .with_variable(c.env_variable(multi=True))
        .with_row(db.Row("Now"))
        .with_panel(
            c.stat_panel(
                "Event rate",
                "Valid events processed per second over the selected segments (1 m rate).",
                units.EventsPerSecond,
                f"sum(run_env:rollout_monitor_events:rate1m{{{_SEL}}})",
            )
        )
        .with_panel(
            c.stat_panel(
                "Segments",
                "Run x environment segments the monitor holds in memory (all runs).",
                units.Short,
                "sum(rollout_monitor_segments)",
            )
        )
        .with_panel(
            c.stat_panel(
                "Alerts firing",
                "Alerts currently firing on the selected segments, every detector and severity.",
                units.Short,
                f"sum(rollout_monitor_alert_active{{{_SEL}}})",
                thresholds=[(1, "red")],
            )
        )
        .with_panel(
            c.stat_panel(
                "Worst error share",
                "Highest share of failed episodes over the selected segments (1 m). "
                "The error_rate detector pages when its lower bound exceeds 5%.",
                units.PercentUnit,
                f"max(run_env:rollout_monitor_error_share:ratio_rate1m{{{_SEL}}})",
                thresholds=[(0.05, "red")],
            )
        )
        .with_panel(
            c.stat_panel(
                "Worst truncation share",
                "Highest share of truncated episodes over the selected segments (1 m). "
                "truncation_rate warns on a rise and pages at 50%.",
                units.PercentUnit,
                f"max(run_env:rollout_monitor_truncation_share:ratio_rate1m{{{_SEL}}})",
                thresholds=[(0.2, "orange"), (0.5, "red")],
            )
        )
        .with_panel(
            c.stat_panel(
                "Most silent environment",
                "Largest gap, in event time, between an environment's newest event and the "
                "newest event of its run. RolloutEnvironmentSilent fires above 120 s.",
                units.Seconds,
                f"max(run_env:rollout_monitor_last_event_behind_run_seconds:max{{{_SEL}}})",
                thresholds=[(120, "red")],
            )
        )
        .with_row(db.Row("Throughput and reward"))
        .with_panel(
            c.timeseries_panel(
                "Event rate by segment",
                "Valid events processed per second for each run and environment (1 m rate).",
                units.EventsPerSecond,
                [(f"run_env:rollout_monitor_events:rate1m{{{_SEL}}}", "{{run}} / {{env}}")],
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Median reward by segment",
                "Median reward over the last 512 scored events of each segment "
                "(reward: null never enters it).",
                units.NoUnit,
                [
                    (
                        f'max by (run, env) (rollout_monitor_reward{{{_SEL}, quantile="0.5"}})',
                        "{{run}} / {{env}}",
                    )
                ],
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Mean reward by segment (1 m)",
                "Mean reward of the events scored in the last minute: rate of the reward sum "
                "over rate of the scored count.",
                units.NoUnit,
                [(f"run_env:rollout_monitor_reward:mean_rate1m{{{_SEL}}}", "{{run}} / {{env}}")],
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Unscored share by segment",
                "Share of events with reward: null (1 m). They count towards error_rate and "
                "masked_failure, never towards reward statistics.",
                units.PercentUnit,
                [
                    (
                        f"run_env:rollout_monitor_unscored_share:ratio_rate1m{{{_SEL}}}",
                        "{{run}} / {{env}}",
                    )
                ],
                min_value=0,
            )
        )
        .with_row(db.Row("Failures"))
        .with_panel(
            c.timeseries_panel(
                "Error share by segment",
                "Share of episodes with status failed (1 m). Dashed line: the 5% bound of the "
                "error_rate detector, above which a harness problem is likely.",
                units.PercentUnit,
                [
                    (
                        f"run_env:rollout_monitor_error_share:ratio_rate1m{{{_SEL}}}",
                        "{{run}} / {{env}}",
                    )
                ],
                thresholds=[(0.05, "red")],
                min_value=0,
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Truncation share by segment",
                "Share of episodes with status truncated (1 m). Dashed line: 50%, where "
                "truncation_rate pages.",
                units.PercentUnit,
                [
                    (
                        f"run_env:rollout_monitor_truncation_share:ratio_rate1m{{{_SEL}}}",
                        "{{run}} / {{env}}",
                    )
                ],
                thresholds=[(0.5, "red")],
                min_value=0,
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Event-time gap behind the run",
                "Newest event of the run minus newest event of the environment, in event "
                "time. Dashed line: 120 s, where RolloutEnvironmentSilent fires.",
                units.Seconds,
                [
                    (
                        f"run_env:rollout_monitor_last_event_behind_run_seconds:max{{{_SEL}}}",
                        "{{run}} / {{env}}",
                    )
                ],
                thresholds=[(120, "red")],
                min_value=0,
            )
        )
        .with_panel(
            c.timeseries_panel(
                "Alarms raised by detector",
                "Detector alarms (one per detected change) over the selected segments, per "
                "rate interval.",
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
        .with_row(db.Row("Alerts"))
        .with_panel(
            c.table_panel(
                "Firing alerts",
                "Alerts the monitor holds firing, one row per run, environment and detector. "
                "A row links to the environment drill-down.",
                units.Short,
                [
                    (
                        "max by (run, env, detector, severity) ("
                        f"rollout_monitor_alert_active{{{_SEL}}}) == 1",
                        "",
                    )
                ],
                columns={
                    "run": "Run",
                    "env": "Environment",
                    "detector": "Detector",
                    "severity": "Severity",
                },
                span=24,
                links=[_DRILL_DOWN],
            )
        )
    )
    return c.render(dashboard)
