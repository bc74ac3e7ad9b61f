"""The alarm a failure-mode detector raises: one per detected change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["page", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("page", "warning", "info")


@dataclass(frozen=True, slots=True)
class Alarm:
    """A detected change on one segment.

    ``value`` and ``threshold`` are the detector statistic and the bound it crossed;
    ``direction`` is ``"up"``, ``"down"`` or ``""`` where a direction means nothing.
    """

    detector: str
    severity: Severity
    value: float
    threshold: float
    summary: str
    direction: str = ""
