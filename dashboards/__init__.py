"""Grafana dashboards of the rollout monitor, generated as code.

``python -m dashboards.generate`` builds them with grafana-foundation-sdk (a development
dependency) and writes ``dashboards/json/*.json``, which are committed; ``--check`` fails when
the committed files are stale. Pushing (``rollout-monitor dashboards push``) and file
provisioning (``deploy/grafana``) read the committed JSON, so neither needs the SDK.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dashboards.queries import all_panel_queries, template_variable_queries

#: Where the generated dashboards are committed.
JSON_DIR = Path(__file__).resolve().parent / "json"
#: Tag of the Grafana annotations ``dashboards.push.annotate_alarm`` posts; the environment
#: drill-down shows the annotations carrying it.
ALARM_TAG = "rollout-monitor"

__all__ = [
    "ALARM_TAG",
    "JSON_DIR",
    "all_panel_queries",
    "load_committed",
    "template_variable_queries",
]


def load_committed(directory: Path = JSON_DIR) -> dict[str, dict[str, Any]]:
    """The committed dashboards, by file stem."""
    return {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("*.json"))
    }
