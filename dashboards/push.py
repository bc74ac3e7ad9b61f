"""Push the committed dashboards to Grafana, and post alarms to it as annotations.

``rollout-monitor dashboards push --url URL --token TOKEN [--folder NAME]`` creates or
overwrites every dashboard of ``dashboards/json`` (matched by uid) through Grafana's HTTP API
with grafana-client. :func:`register` adds it (and ``dashboards generate``) to the CLI; each
handler is the parser default ``func(args) -> int``, returning the exit status.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaException

from dashboards import ALARM_TAG, JSON_DIR, load_committed

__all__ = [
    "ALARM_TAG",
    "annotate_alarm",
    "connect",
    "ensure_folder",
    "push_dashboards",
    "register",
]
COMMIT_MESSAGE = "rollout-monitor dashboards push"


def connect(url: str, token: str, *, timeout: float = 10.0) -> GrafanaApi:
    """A client for the Grafana at ``url``, authenticating with a service-account token."""
    return GrafanaApi.from_url(url=url, credential=token, timeout=timeout)


def folder_uid_for(title: str) -> str:
    """The uid a folder created by :func:`ensure_folder` gets: its title, slugged."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return slug[:40] or "rollout-monitor"


def ensure_folder(api: GrafanaApi, title: str) -> str:
    """The uid of the folder named ``title``, created if there is none."""
    for folder in api.folder.get_all_folders():
        if folder.get("title") == title:
            return str(folder["uid"])
    created = api.folder.create_folder(title, uid=folder_uid_for(title))
    return str(created["uid"])


def push_dashboards(
    api: GrafanaApi, dashboards: Mapping[str, Mapping[str, Any]], folder_uid: str | None = None
) -> list[dict[str, Any]]:
    """Create or overwrite each dashboard (matched by uid); Grafana's replies, in order."""
    replies = []
    for dashboard in dashboards.values():
        payload: dict[str, Any] = {
            # Without an id Grafana matches on uid, so the push works on any instance.
            "dashboard": {**dashboard, "id": None},
            "overwrite": True,
            "message": COMMIT_MESSAGE,
        }
        if folder_uid is not None:
            payload["folderUid"] = folder_uid
        replies.append(api.dashboard.update_dashboard(payload))
    return replies


def annotate_alarm(
    api: GrafanaApi, alarm: Mapping[str, Any], *, dashboard_uid: str | None = None
) -> Any:
    """Post one alarm as a Grafana annotation, tagged so the drill-down dashboard shows it.

    ``alarm`` is a record of the alerts file (``monitor.alerts.Alert.to_record()``) or any
    mapping with at least ``detector``; ``severity``, ``run``, ``env``, ``summary``,
    ``description``, ``runbook_url`` and ``event_ts`` (seconds) are used when present. The
    annotation is placed at ``event_ts``, or now without one. Without ``dashboard_uid`` it is
    an organisation annotation, shown wherever its tags are queried.
    """
    if not alarm.get("detector"):
        raise ValueError("alarm needs a 'detector'")
    tags = [ALARM_TAG] + [
        f"{key}:{alarm[key]}" for key in ("detector", "severity", "run", "env") if alarm.get(key)
    ]
    text = str(alarm.get("summary") or f"{alarm['detector']} alarm")
    if alarm.get("description"):
        text += f"\n{alarm['description']}"
    if alarm.get("runbook_url"):
        text += f"\n{alarm['runbook_url']}"
    event_ts = alarm.get("event_ts")
    millis = int(float(event_ts) * 1000) if event_ts is not None else int(time.time() * 1000)
    return api.annotations.add_annotation(
        dashboard_uid=dashboard_uid, time_from=millis, tags=tags, text=text
    )


def run_push(args: argparse.Namespace) -> int:
    """Handler of ``dashboards push``."""
    if not args.token:
        print("dashboards push: give --token or set GRAFANA_TOKEN", file=sys.stderr)
        return 2
    dashboards = load_committed(args.dir)
    if not dashboards:
        print(f"dashboards push: no dashboard JSON in {args.dir}", file=sys.stderr)
        return 2
    api = connect(args.url, args.token)
    try:
        folder_uid = ensure_folder(api, args.folder) if args.folder else None
        replies = push_dashboards(api, dashboards, folder_uid)
    except GrafanaException as exc:
        print(f"dashboards push: Grafana refused: {exc}", file=sys.stderr)
        return 1
    for name, reply in zip(dashboards, replies, strict=True):
        print(f"pushed {name}: uid={reply.get('uid')} version={reply.get('version')}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    """Handler of ``dashboards generate``; needs grafana-foundation-sdk (a test dependency)."""
    from dashboards import generate

    return generate.main(["--check"] if args.check else [])


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``dashboards push`` and ``dashboards generate`` to a CLI's subcommands."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dashboards", help="Grafana dashboards generated as code"
    )
    commands = parser.add_subparsers(dest="dashboards_command", metavar="COMMAND", required=True)
    push = commands.add_parser(
        "push",
        help="create or update the dashboards in a Grafana",
        description="Create or overwrite every dashboard of the JSON folder, matched by uid.",
    )
    push.add_argument("--url", required=True, help="Grafana base URL, e.g. http://127.0.0.1:3000")
    push.add_argument(
        "--token",
        default=os.environ.get("GRAFANA_TOKEN"),
        help="service-account token (default: $GRAFANA_TOKEN)",
    )
    push.add_argument("--folder", help="folder title, created when missing (default: General)")
    push.add_argument(
        "--dir", type=Path, default=JSON_DIR, help="dashboard JSON folder (default: %(default)s)"
    )
    push.set_defaults(func=run_push)
    generate = commands.add_parser(
        "generate",
        help="write dashboards/json from the code (python -m dashboards.generate)",
    )
    generate.add_argument("--check", action="store_true", help="fail if the JSON is stale")
    generate.set_defaults(func=run_generate)
    return parser
