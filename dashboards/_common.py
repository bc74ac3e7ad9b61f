"""Building blocks shared by the dashboards: datasource, variables, panels, serialisation.

The dashboards are built with grafana-foundation-sdk; its builders lay panels out on the grid.
The one thing its models do not carry, the fields of a Prometheus annotation query
(``titleFormat``, ``tagKeys``, ``step``), is added by a small subclass of its model rather than
by editing the output. Panel ids are assigned in layout order after the dashboard is built, so
adding a panel renumbers only the panels after it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as prometheus_models

#: Every dashboard points its panels at the datasource picked in this variable.
DATASOURCE_VARIABLE = "datasource"
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${" + DATASOURCE_VARIABLE + "}")
#: Shared by the three dashboards: the dashboard links list them by this tag.
DASHBOARD_TAG = "rollout-monitor"
#: The metric whose label values define the runs and environments.
SEGMENT_METRIC = "rollout_monitor_events_total"
#: Selector every per-segment query carries; the variables are regex matchers.
SEGMENT_SELECTOR = 'run=~"$run", env=~"$env"'

Threshold = tuple[float, str]


def base_dashboard(uid: str, title: str, description: str) -> db.Dashboard:
    """A dashboard with the project's defaults: tag, links, refresh, time range."""
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([DASHBOARD_TAG])
        .editable()
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .link(
            db.DashboardLink("Rollout monitor")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags([DASHBOARD_TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .with_variable(datasource_variable())
    )


def datasource_variable() -> db.DatasourceVariable:
    return (
        db.DatasourceVariable(DATASOURCE_VARIABLE)
        .label("Data source")
        .type("prometheus")
        .description("The Prometheus that scrapes the rollout monitor.")
    )


def label_variable(
    name: str, metric_selector: str, *, label: str, description: str, multi: bool
) -> db.QueryVariable:
    """A ``label_values`` variable; with ``multi`` it also offers All, which matches ``.*``."""
    variable = (
        db.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(f"label_values({metric_selector}, {name})")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(multi)
    )
    if multi:
        variable = variable.all_value(".*")
    return variable


def run_variable(*, multi: bool) -> db.QueryVariable:
    return label_variable(
        "run",
        SEGMENT_METRIC,
        label="Run",
        description="Training run (run_id).",
        multi=multi,
    )


def env_variable(*, multi: bool) -> db.QueryVariable:
    return label_variable(
        "env",
        SEGMENT_METRIC + '{run=~"$run"}',
        label="Environment",
        description="Environment (env_id) of the selected runs.",
        multi=multi,
    )


def query(
    expr: str, legend: str = "", *, ref_id: str = "A", instant: bool = False
) -> prometheus.Dataquery:
    """A PromQL target; an instant query is returned as a table frame."""
    target = prometheus.Dataquery().expr(expr).ref_id(ref_id).legend_format(legend or "__auto")
    if instant:
        target = target.instant().format(prometheus_models.PromQueryFormat.TABLE)
    else:
        target = target.range()
    return target


def _targets(
    exprs: Sequence[tuple[str, str]], *, instant: bool = False
) -> list[cogbuilder.Builder[Any]]:
    return [
        query(expr, legend, ref_id=chr(ord("A") + i), instant=instant)
        for i, (expr, legend) in enumerate(exprs)
    ]


def _thresholds(steps: Sequence[Threshold]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps(
            [dm.Threshold(value=None, color="green")]
            + [dm.Threshold(value=value, color=color) for value, color in steps]
        )
    )


def timeseries_panel(
    title: str,
    description: str,
    unit: str,
    exprs: Sequence[tuple[str, str]],
    *,
    span: int = 12,
    height: int = 8,
    thresholds: Sequence[Threshold] = (),
    min_value: float | None = None,
    max_value: float | None = None,
    bars: bool = False,
) -> timeseries.Panel:
    """A time series of one or more range queries; thresholds are drawn as dashed lines."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(_targets(exprs))
        .span(span)
        .height(height)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    )
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80)
    if thresholds:
        panel = panel.thresholds(_thresholds(thresholds)).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
        )
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    return panel


def quantile_band_panel(
    title: str, description: str, unit: str, metric: str, *, span: int = 12
) -> timeseries.Panel:
    """p10-p90 band with the median, from the quantile series of a summary."""
    selector = SEGMENT_SELECTOR
    exprs = [
        (f'max by (run, env) ({metric}{{{selector}, quantile="0.9"}})', "p90"),
        (f'max by (run, env) ({metric}{{{selector}, quantile="0.5"}})', "p50"),
        (f'max by (run, env) ({metric}{{{selector}, quantile="0.1"}})', "p10"),
    ]
    return (
        timeseries_panel(title, description, unit, exprs, span=span)
        .fill_opacity(0)
        .override_by_name(
            "p90",
            [
                dm.DynamicConfigValue(id_val="custom.fillBelowTo", value="p10"),
                dm.DynamicConfigValue(id_val="custom.fillOpacity", value=20),
                dm.DynamicConfigValue(id_val="custom.lineWidth", value=0),
            ],
        )
        .override_by_name("p10", [dm.DynamicConfigValue(id_val="custom.lineWidth", value=0)])
        .override_by_name("p50", [dm.DynamicConfigValue(id_val="custom.lineWidth", value=2)])
    )


def stat_panel(
    title: str,
    description: str,
    unit: str,
    expr: str,
    *,
    span: int = 4,
    height: int = 4,
    thresholds: Sequence[Threshold] = (),
    legend: str = "",
) -> stat.Panel:
    """One number: the last value of an instant query, green below the first threshold."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .with_target(query(expr, legend).instant())
        .span(span)
        .height(height)
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        # Always explicit: Grafana's default turns a value red above 80, whatever the unit.
        .thresholds(_thresholds(thresholds))
    )


def table_panel(
    title: str,
    description: str,
    unit: str,
    exprs: Sequence[tuple[str, str]],
    *,
    columns: dict[str, str],
    span: int = 12,
    height: int = 8,
    links: Sequence[db.DashboardLink] = (),
) -> table.Panel:
    """Instant queries merged into one table; ``columns`` renames fields, others are hidden.

    ``columns`` maps a field of the merged frame (a label, or ``Value #A`` for the value of
    query A) to its header; the order of ``columns`` is the order of the table.
    """
    shown = list(columns)
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(_targets(exprs, instant=True))
        .span(span)
        .height(height)
        .show_header(True)
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="filterFieldsByName",
                options={"include": {"names": shown}},
            )
        )
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize",
                options={
                    "indexByName": {name: i for i, name in enumerate(shown)},
                    "renameByName": dict(columns),
                },
            )
        )
    )
    if links:
        panel = panel.data_links(list(links))
    return panel


class _PrometheusAnnotationQuery(dm.AnnotationQuery):
    """An annotation query on a Prometheus datasource, with the fields the SDK model lacks."""

    def __init__(
        self, name: str, expr: str, *, title_format: str, tag_keys: str, step: str, color: str
    ) -> None:
        super().__init__(
            name=name, datasource=DATASOURCE, enable=True, hide=False, icon_color=color, expr=expr
        )
        self.title_format = title_format
        self.tag_keys = tag_keys
        self.step = step

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload.update(
            {
                "titleFormat": self.title_format,
                "tagKeys": self.tag_keys,
                "step": self.step,
                "useValueForTime": False,
                "textFormat": "",
            }
        )
        return payload


class PrometheusAnnotation(cogbuilder.Builder[dm.AnnotationQuery]):
    """Builder of a Prometheus annotation: one marker per step where ``expr`` has a series."""

    def __init__(
        self,
        name: str,
        expr: str,
        *,
        title_format: str,
        tag_keys: str,
        step: str = "1m",
        color: str = "red",
    ) -> None:
        self._internal = _PrometheusAnnotationQuery(
            name, expr, title_format=title_format, tag_keys=tag_keys, step=step, color=color
        )

    def build(self) -> dm.AnnotationQuery:
        return self._internal


def grafana_tag_annotation(name: str, tags: list[str], color: str) -> db.AnnotationQuery:
    """Annotations stored in Grafana itself (posted by ``annotate_alarm``), matched by tag."""
    return (
        db.AnnotationQuery()
        .name(name)
        .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .enable(True)
        .hide(False)
        .icon_color(color)
        .type("tags")
        .target(db.AnnotationTarget().type("tags").tags(tags).match_any(False).limit(100))
    )


def render(dashboard: db.Dashboard) -> dict[str, Any]:
    """Build the dashboard, number its panels and return it as plain JSON data."""
    model = dashboard.build()
    next_id = 1
    for panel in model.panels or []:
        panel.id_val = next_id
        next_id += 1
        for child in getattr(panel, "panels", None) or []:
            child.id_val = next_id
            next_id += 1
    data: dict[str, Any] = json.loads(json.dumps(model, cls=JSONEncoder))
    return data


def dumps(dashboard_json: dict[str, Any]) -> str:
    """The committed form of a dashboard: sorted keys, two-space indent, final newline."""
    return json.dumps(dashboard_json, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
