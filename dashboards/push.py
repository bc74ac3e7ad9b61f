"""Push the committed dashboards to Grafana, and post alarms to it as annotations.

``rollout-monitor dashboards push [--config FILE]`` creates or overwrites every dashboard of
``dashboards/json`` (matched by uid) through Grafana's HTTP API with grafana-client. Where
Grafana is and how to log in come from the ``grafana`` settings section (``ROLLOUT_MONITOR_
GRAFANA__URL``, ``__TOKEN`` or ``__USERNAME`` + ``__PASSWORD``, ``__ORG_ID``, ...; see
``monitor.config.GrafanaSettings``); ``--url``, ``--folder``, ``--org-id`` and ``--token``
override them. :func:`register` adds it (and ``dashboards generate``) to the CLI; each
handler is the parser default ``func(args) -> int``, returning the exit status.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import niquests
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaException

from dashboards import ALARM_TAG, JSON_DIR, load_committed
from monitor.config import ConfigError, GrafanaSettings, load_settings, with_overrides

__all__ = [
    "ALARM_TAG",
    "annotate_alarm",
    "connect",
    "connect_with",
    "ensure_folder",
    "push_dashboards",
    "register",
]
COMMIT_MESSAGE = "rollout-monitor dashboards push"


def connect(
    url: str,
    credential: str | tuple[str, str] | None,
    *,
    timeout: float = 10.0,
    org_id: int | None = None,
    verify: bool | str = True,
) -> GrafanaApi:
    """A client for the Grafana at ``url`` (a sub-path such as ``/grafana`` is kept).

    ``credential`` is a service-account token (sent as ``Bearer``) or ``(user, password)``
    (basic auth); ``org_id`` is sent as ``X-Grafana-Org-Id``; ``verify`` is whether to check
    the server's TLS certificate, or the path of a CA bundle to check it against.
    """
    parts = urlsplit(url)
    prefix = parts.path.strip("/")
    return GrafanaApi(
        auth=credential,
        host=parts.hostname or "localhost",
        port=parts.port,
        url_path_prefix=prefix + "/" if prefix else "",
        protocol=parts.scheme or "http",
        verify=verify,
        timeout=timeout,
        organization_id=org_id,
    )


def connect_with(settings: GrafanaSettings) -> GrafanaApi:
    """A client configured by the ``grafana`` settings section."""
    return connect(
        settings.url,
        settings.credential(),
        timeout=settings.timeout_seconds,
        org_id=settings.org_id,
        verify=settings.tls_verify(),
    )


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


def grafana_settings(args: argparse.Namespace) -> GrafanaSettings:
    """The ``grafana`` settings (environment, ``--config`` file) with the flags applied."""
    settings = load_settings(args.config).grafana
    overrides: dict[str, object] = {}
    if args.url is not None:
        overrides["url"] = args.url
    if args.folder is not None:
        overrides["folder"] = args.folder
    if args.org_id is not None:
        overrides["org_id"] = args.org_id
    if args.token is not None:
        overrides.update(token=args.token, username=None, password=None)
    return with_overrides(settings, "grafana", **overrides) if overrides else settings


def run_push(args: argparse.Namespace) -> int:
    """Handler of ``dashboards push``."""
    try:
        settings = grafana_settings(args)
    except ConfigError as exc:
        print(f"dashboards push: {exc}", file=sys.stderr)
        return 2
    if not settings.has_credentials:
        print(
            "dashboards push: no Grafana credentials: set ROLLOUT_MONITOR_GRAFANA__TOKEN (or "
            "__USERNAME and __PASSWORD), or [grafana] in the --config file",
            file=sys.stderr,
        )
        return 2
    dashboards = load_committed(args.dir)
    if not dashboards:
        print(f"dashboards push: no dashboard JSON in {args.dir}", file=sys.stderr)
        return 2
    api = connect_with(settings)
    try:
        folder_uid = ensure_folder(api, settings.folder) if settings.folder else None
        replies = push_dashboards(api, dashboards, folder_uid)
    except GrafanaException as exc:
        print(f"dashboards push: Grafana refused: {exc}", file=sys.stderr)
        return 1
    except niquests.exceptions.RequestException as exc:
        print(f"dashboards push: cannot reach Grafana at {settings.url}: {exc}", file=sys.stderr)
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
        description=(
            "Create or overwrite every dashboard of the JSON folder, matched by uid. Grafana's "
            "URL and credentials come from the grafana settings: ROLLOUT_MONITOR_GRAFANA__URL, "
            "ROLLOUT_MONITOR_GRAFANA__TOKEN (a service-account token) or "
            "ROLLOUT_MONITOR_GRAFANA__USERNAME and __PASSWORD, __ORG_ID, __TIMEOUT_SECONDS, "
            "__VERIFY_TLS, __CA_FILE, __FOLDER, or the [grafana] table of --config. "
            "The flags below override them."
        ),
    )
    push.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    push.add_argument("--url", help="Grafana base URL, e.g. http://127.0.0.1:3000")
    push.add_argument(
        "--token",
        help=(
            "service-account token; visible to every local user in the process list, so "
            "prefer ROLLOUT_MONITOR_GRAFANA__TOKEN or the --config file"
        ),
    )
    push.add_argument("--org-id", type=int, help="organisation id (X-Grafana-Org-Id)")
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
