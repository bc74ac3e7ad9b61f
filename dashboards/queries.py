"""The PromQL a dashboard runs, with its variables filled in, for tests against Prometheus.

Dashboards match every template variable with ``=~``, so substituting a regex (``.*`` by
default) for each variable gives an expression Prometheus can run as is. Grafana's built-in
interval variables become a fixed range.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_BUILTIN_INTERVALS = ("__rate_interval", "__interval", "__range")


def _user_variables(dashboard_json: Mapping[str, Any]) -> set[str]:
    return {
        v["name"]
        for v in dashboard_json.get("templating", {}).get("list", [])
        if v.get("type") != "datasource"
    }


def substitute(expr: str, variables: set[str], *, matcher: str = ".*", interval: str = "1m") -> str:
    """Replace dashboard variables by ``matcher`` and interval variables by ``interval``.

    >>> substitute('rate(x{run=~"$run"}[$__rate_interval])', {"run"})
    'rate(x{run=~".*"}[1m])'
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in _BUILTIN_INTERVALS:
            return interval
        if name in variables:
            return matcher
        return match.group(0)

    return _VARIABLE.sub(replace, expr)


def _panels(dashboard_json: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = []
    for panel in dashboard_json.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def all_panel_queries(
    dashboard_json: Mapping[str, Any], *, matcher: str = ".*", interval: str = "1m"
) -> list[tuple[str, str, str]]:
    """``(dashboard uid, panel title, expr)`` for every panel target and annotation query.

    Annotation queries are listed with the title ``annotation: <name>``.
    """
    uid = str(dashboard_json["uid"])
    variables = _user_variables(dashboard_json)
    found: list[tuple[str, str, str]] = []
    for panel in _panels(dashboard_json):
        for target in panel.get("targets", []):
            if target.get("expr"):
                expr = substitute(target["expr"], variables, matcher=matcher, interval=interval)
                found.append((uid, str(panel["title"]), expr))
    for annotation in dashboard_json.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            expr = substitute(annotation["expr"], variables, matcher=matcher, interval=interval)
            found.append((uid, f"annotation: {annotation['name']}", expr))
    return found


_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def template_variable_queries(
    dashboard_json: Mapping[str, Any], *, matcher: str = ".*"
) -> list[tuple[str, str, str, str]]:
    """``(dashboard uid, variable, series selector, label)`` of each ``label_values`` variable.

    The selector has the other variables substituted, ready for Prometheus'
    ``/api/v1/label/<label>/values?match[]=<selector>``.
    """
    uid = str(dashboard_json["uid"])
    variables = _user_variables(dashboard_json)
    found: list[tuple[str, str, str, str]] = []
    for variable in dashboard_json.get("templating", {}).get("list", []):
        raw = variable.get("query")
        text = raw.get("query") if isinstance(raw, Mapping) else raw
        match = _LABEL_VALUES.match(text or "") if variable.get("type") == "query" else None
        if match:
            selector = substitute(match["selector"], variables, matcher=matcher)
            found.append((uid, str(variable["name"]), selector, match["label"]))
    return found
