"""The ``rollout-monitor dashboards`` sub-commands (see :mod:`dashboards.push`).

Importing this module needs grafana-client only, not grafana-foundation-sdk.
"""

from __future__ import annotations

from dashboards.push import register

__all__ = ["register"]
