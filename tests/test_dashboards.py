"""Dashboards as code: generated JSON, panel hygiene, variables, push to Grafana.

The queries themselves run against a real Prometheus in tests/test_dashboards_stack.py.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.models import units

from dashboards import JSON_DIR, all_panel_queries, generate, load_committed, push
from dashboards.queries import template_variable_queries

REPO = Path(__file__).resolve().parent.parent
UIDS = {
    "fleet-overview": "rollout-fleet",
    "environment": "rollout-env",
    "daemon-health": "rollout-daemon",
}
KNOWN_UNITS = {
    value
    for name, value in vars(units).items()
    if isinstance(value, str) and not name.startswith("_")
}


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return generate.build_all()


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows left out, panels of collapsed rows included)."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def documented_metrics() -> set[str]:
    text = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `(rollout_monitor_\w+)`", text, flags=re.MULTILINE))


def recorded_series() -> set[str]:
    text = (REPO / "deploy" / "prometheus" / "rules" / "recording.yml").read_text("utf-8")
    return set(re.findall(r"^\s*- record: (\S+)", text, flags=re.MULTILINE))


# -- generated JSON --------------------------------------------------------------------------


def test_committed_json_is_what_the_code_generates() -> None:
    expected = generate.rendered()
    committed = {p.name: p.read_text(encoding="utf-8") for p in JSON_DIR.glob("*.json")}
    assert sorted(committed) == sorted(expected), "run: python -m dashboards.generate"
    for name, text in expected.items():
        assert committed[name] == text, f"{name} is stale: run python -m dashboards.generate"


def test_check_mode_exit_status(tmp_path: Path) -> None:
    def check(directory: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dashboards.generate", "--check", "--output", str(directory)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )

    assert check(JSON_DIR).returncode == 0
    for path in JSON_DIR.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text("utf-8"), encoding="utf-8")
    stale = tmp_path / "environment.json"
    stale.write_text(stale.read_text("utf-8").replace("Reward quantiles", "Rewards"), "utf-8")
    (tmp_path / "obsolete.json").write_text("{}", encoding="utf-8")
    result = check(tmp_path)
    assert result.returncode == 1
    assert "environment.json" in result.stderr and "obsolete.json" in result.stderr
    assert "fleet-overview.json" not in result.stderr


def test_write_replaces_stale_files(tmp_path: Path) -> None:
    (tmp_path / "obsolete.json").write_text("{}", encoding="utf-8")
    generate.write(tmp_path)
    assert generate.stale_files(tmp_path) == []
    assert not (tmp_path / "obsolete.json").exists()


def test_uids_are_stable(dashboards: dict[str, dict[str, Any]]) -> None:
    assert {stem: d["uid"] for stem, d in dashboards.items()} == UIDS
    assert {stem: d["uid"] for stem, d in load_committed().items()} == UIDS


# -- panels ----------------------------------------------------------------------------------


def test_every_panel_has_a_known_unit_and_a_description(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for stem, dashboard in dashboards.items():
        for panel in panels(dashboard):
            where = f"{stem}: {panel['title']!r}"
            assert panel.get("description", "").strip(), f"{where} has no description"
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
            assert unit in KNOWN_UNITS, f"{where} has unit {unit!r}"


def test_panels_query_the_datasource_variable(dashboards: dict[str, dict[str, Any]]) -> None:
    for stem, dashboard in dashboards.items():
        for panel in panels(dashboard):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, stem
            assert panel["targets"], f"{stem}: {panel['title']!r} has no query"


def test_panel_ids_unique_and_layout_in_grid(dashboards: dict[str, dict[str, Any]]) -> None:
    for stem, dashboard in dashboards.items():
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)) and 0 not in ids, stem
        titles = [p["title"] for p in panels(dashboard)]
        assert len(titles) == len(set(titles)), f"{stem}: duplicate panel titles"
        for panel in dashboard["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (stem, panel["title"])


def test_only_documented_metrics_and_recorded_series(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    documented = documented_metrics()
    recorded = recorded_series()
    assert documented, "no metric found in docs/metrics.md"
    for stem, dashboard in dashboards.items():
        for _, title, expr in all_panel_queries(dashboard):
            raw = re.sub(r"\b\w+:\w+:\w+\b", "", expr)
            for name in re.findall(r"\brollout_monitor_\w+", raw):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in documented or base in documented, f"{stem} {title!r}: {name}"
            for name in re.findall(r"\b\w+:\w+:\w+\b", expr):
                assert name in recorded, f"{stem} {title!r}: {name} is not a recording rule"


def test_recording_rules_use_documented_metrics() -> None:
    text = (REPO / "deploy" / "prometheus" / "rules" / "recording.yml").read_text("utf-8")
    documented = documented_metrics()
    for line in text.splitlines():
        if line.lstrip().startswith(("#", "- record:")):
            continue
        for name in re.findall(r"\brollout_monitor_\w+", re.sub(r"\b\w+:\w+:\w+\b", "", line)):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in documented or base in documented, name


# -- variables and queries -------------------------------------------------------------------


def test_datasource_and_template_variables(dashboards: dict[str, dict[str, Any]]) -> None:
    for stem, dashboard in dashboards.items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", stem
        assert variables["datasource"]["query"] == "prometheus", stem
    for stem in ("fleet-overview", "environment"):
        variables = {v["name"]: v for v in dashboards[stem]["templating"]["list"]}
        assert variables["run"]["query"] == "label_values(rollout_monitor_events_total, run)"
        assert variables["env"]["query"] == (
            'label_values(rollout_monitor_events_total{run=~"$run"}, env)'
        )
        for name in ("run", "env"):
            assert variables[name]["datasource"]["uid"] == "${datasource}"
            if variables[name]["includeAll"]:
                assert variables[name]["allValue"] == ".*"


def test_variables_are_only_used_as_regex_matchers(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for stem, dashboard in dashboards.items():
        exprs = [t["expr"] for p in panels(dashboard) for t in p["targets"]]
        exprs += [a["expr"] for a in dashboard["annotations"].get("list", []) if "expr" in a]
        for expr in exprs:
            bare = re.sub(r'=~"\$\w+"', "", expr).replace("$__rate_interval", "")
            assert "$" not in bare, f"{stem}: a variable outside a =~ matcher in {expr}"


def test_all_panel_queries_substitutes_variables(dashboards: dict[str, dict[str, Any]]) -> None:
    for stem, dashboard in dashboards.items():
        queries = all_panel_queries(dashboard)
        targets = sum(len(p["targets"]) for p in panels(dashboard))
        annotations = sum(1 for a in dashboard["annotations"].get("list", []) if "expr" in a)
        assert len(queries) == targets + annotations, stem
        for uid, _, expr in queries:
            assert uid == UIDS[stem]
            assert "$" not in expr, expr
    fleet = all_panel_queries(dashboards["fleet-overview"], matcher="r1")
    assert any('run=~"r1", env=~"r1"' in expr for _, _, expr in fleet)
    env = dict((title, expr) for _, title, expr in all_panel_queries(dashboards["environment"]))
    assert "rollout_monitor_alert_active" in env["annotation: Alerts firing"]


def test_template_variable_queries(dashboards: dict[str, dict[str, Any]]) -> None:
    found = {
        (uid, name): (selector, label)
        for d in dashboards.values()
        for uid, name, selector, label in template_variable_queries(d)
    }
    assert found[("rollout-fleet", "run")] == ("rollout_monitor_events_total", "run")
    assert found[("rollout-env", "env")] == ('rollout_monitor_events_total{run=~".*"}', "env")
    assert found[("rollout-daemon", "instance")] == ("rollout_monitor_build_info", "instance")


def test_drill_down_draws_alarms_as_annotations(dashboards: dict[str, dict[str, Any]]) -> None:
    annotations = {a["name"]: a for a in dashboards["environment"]["annotations"]["list"]}
    alarms = annotations["Alerts firing"]
    # Firing spans from the gauge: a counter's first alarm would have no increase to show.
    assert "(rollout_monitor_alert_active{" in alarms["expr"] and alarms["expr"].endswith("== 1")
    assert alarms["datasource"]["uid"] == "${datasource}"
    assert alarms["titleFormat"] and alarms["tagKeys"] == "detector,severity"
    posted = annotations["Alarms posted to Grafana"]
    assert push.ALARM_TAG in posted["target"]["tags"]


# -- provisioning ----------------------------------------------------------------------------


def test_provisioning_points_at_prometheus_and_the_json_folder() -> None:
    base = REPO / "deploy" / "grafana" / "provisioning"
    datasource = (base / "datasources" / "prometheus.yml").read_text("utf-8")
    assert re.search(r"^\s+type: prometheus$", datasource, flags=re.MULTILINE)
    assert re.search(r"^\s+url: http://127\.0\.0\.1:9090$", datasource, flags=re.MULTILINE)
    provider = (base / "dashboards" / "rollout-monitor.yml").read_text("utf-8")
    assert re.search(r"^\s+type: file$", provider, flags=re.MULTILINE)
    path = re.search(r"^\s+path: (\S+)$", provider, flags=re.MULTILINE)
    assert path is not None
    local = Path(path.group(1).replace("${ROLLOUT_MONITOR_REPO}", str(REPO)))
    assert local == JSON_DIR and sorted(local.glob("*.json"))


# -- push to a recording fake of Grafana's HTTP API ------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGrafana:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    folders: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana(url="")

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            fake.requests.append(
                Recorded(self.command, self.path, dict(self.headers.items()), body)
            )
            return body

        def _reply(self, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._record()
            self._reply(fake.folders if self.path.startswith("/api/folders") else {})

        def do_POST(self) -> None:
            body = self._record()
            if self.path == "/api/folders":
                self._reply({"id": 7, "uid": body["uid"], "title": body["title"]})
            elif self.path == "/api/dashboards/db":
                uid = body["dashboard"]["uid"]
                self._reply({"status": "success", "uid": uid, "version": 1, "url": f"/d/{uid}"})
            else:
                self._reply({"id": 1, "message": "Annotation added"})

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def parse_cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rollout-monitor")
    push.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_push_creates_folder_and_overwrites_each_dashboard(grafana: FakeGrafana) -> None:
    args = parse_cli(
        ["dashboards", "push", "--url", grafana.url, "--token", "s3cret", "--folder", "RL envs"]
    )
    assert args.func(args) == 0

    calls = [(r.method, r.path.split("?")[0]) for r in grafana.requests]
    assert (
        calls
        == [("GET", "/api/folders"), ("POST", "/api/folders")]
        + [("POST", "/api/dashboards/db")] * 3
    )
    assert all(r.headers.get("Authorization") == "Bearer s3cret" for r in grafana.requests)
    assert grafana.requests[1].body == {"title": "RL envs", "uid": "rl-envs"}
    committed = {d["uid"]: d for d in load_committed().values()}
    pushed = [r.body for r in grafana.requests[2:]]
    assert sorted(b["dashboard"]["uid"] for b in pushed) == sorted(committed)
    for body in pushed:
        assert body["overwrite"] is True and body["folderUid"] == "rl-envs"
        dashboard = dict(body["dashboard"])
        assert dashboard.pop("id") is None
        assert dashboard == committed[dashboard["uid"]]


def test_push_reuses_an_existing_folder(grafana: FakeGrafana) -> None:
    grafana.folders.append({"id": 3, "uid": "abc", "title": "RL envs"})
    args = parse_cli(
        ["dashboards", "push", "--url", grafana.url, "--token", "t", "--folder", "RL envs"]
    )
    assert args.func(args) == 0
    assert not any(r.method == "POST" and r.path == "/api/folders" for r in grafana.requests)
    assert {r.body["folderUid"] for r in grafana.requests if r.path == "/api/dashboards/db"} == {
        "abc"
    }


def test_push_without_folder_or_token(
    grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    args = parse_cli(["dashboards", "push", "--url", grafana.url])
    assert args.func(args) == 2 and grafana.requests == []
    args = parse_cli(["dashboards", "push", "--url", grafana.url, "--token", "t"])
    assert args.func(args) == 0
    bodies = [r.body for r in grafana.requests]
    assert len(bodies) == 3 and all("folderUid" not in b for b in bodies)


def test_annotate_alarm_posts_a_tagged_annotation(grafana: FakeGrafana) -> None:
    api = push.connect(grafana.url, "s3cret")
    alarm = {
        "status": "firing",
        "alertname": "RolloutErrorRate",
        "detector": "error_rate",
        "severity": "page",
        "run": "r1",
        "env": "math",
        "summary": "math (r1): failure share 12%",
        "description": "Detector error_rate on run r1, environment math.",
        "runbook_url": "docs/detectors.md#error_rate",
        "event_ts": 1700000000.25,
    }
    push.annotate_alarm(api, alarm, dashboard_uid="rollout-env")
    (request,) = grafana.requests
    assert (request.method, request.path) == ("POST", "/api/annotations")
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert request.body["time"] == 1700000000250
    assert request.body["dashboardUID"] == "rollout-env"
    assert request.body["tags"] == [
        "rollout-monitor",
        "detector:error_rate",
        "severity:page",
        "run:r1",
        "env:math",
    ]
    assert request.body["text"].startswith("math (r1): failure share 12%\n")
    with pytest.raises(ValueError, match="detector"):
        push.annotate_alarm(api, {"run": "r1"})
