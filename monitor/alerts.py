"""From detector alarms to alerts: one alert per change, resolved after a healthy span.

An :class:`AlertTracker` turns the alarms of a segment's detectors into alert transitions
(``firing`` once per change, ``resolved`` when the detector is no longer active and the segment
has gone ``resolve_after_seconds`` of event time without another alarm). Transitions go to
sinks: the Alertmanager client (``monitor.alertmanager``) and an optional JSON-lines file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any, Protocol

from detectors.alarm import Alarm

SEVERITY_RANK = {"info": 0, "warning": 1, "page": 2}


def alertname(detector_id: str) -> str:
    """``reward_shift`` -> ``RolloutRewardShift``."""
    return "Rollout" + "".join(part.capitalize() for part in detector_id.split("_"))


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: a detector's change on one segment, firing or resolved."""

    status: str  # "firing" | "resolved"
    alertname: str
    detector: str
    severity: str
    run: str
    env: str
    summary: str
    description: str
    runbook_url: str
    value: float
    threshold: float
    direction: str
    event_index: int
    event_ts: float
    fired_event_index: int = -1

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.run, self.env, self.detector, self.severity)

    def labels(self) -> dict[str, str]:
        return {
            "alertname": self.alertname,
            "detector": self.detector,
            "severity": self.severity,
            "run": self.run,
            "env": self.env,
        }

    def annotations(self) -> dict[str, str]:
        return {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": self.runbook_url,
        }

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


class AlertSink(Protocol):
    """Receives alert transitions. Must not block the consumer."""

    def submit(self, alert: Alert) -> None: ...


@dataclass(slots=True)
class _Active:
    alert: Alert
    last_alarm_ts: float
    alarms: int = 1


class AlertTracker:
    """Maps alarms to alerts, one per (run, env, detector, severity) change.

    Parameters
    ----------
    resolve_after_seconds
        Event-time span without a new alarm (and with the detector inactive) after which
        the alert resolves.
    runbook_base_url
        The detector docs; the runbook is ``{runbook_base_url}#{detector_id}``.
    sinks
        Receivers of the transitions.
    """

    def __init__(
        self,
        resolve_after_seconds: float,
        runbook_base_url: str,
        sinks: Iterable[AlertSink] = (),
    ) -> None:
        self.resolve_after_seconds = resolve_after_seconds
        self.runbook_base_url = runbook_base_url
        self.sinks = list(sinks)
        self._active: dict[tuple[str, str, str, str], _Active] = {}
        self.alarms_total: dict[tuple[str, str, str, str], int] = {}
        self.fired_total = 0
        self.resolved_total = 0

    def on_alarm(self, run: str, env: str, alarm: Alarm, event_index: int, ts: float) -> None:
        """Record one alarm; a new alert fires unless one is active for the same change."""
        key = (run, env, alarm.detector, alarm.severity)
        self.alarms_total[key] = self.alarms_total.get(key, 0) + 1
        active = self._active.get(key)
        if active is not None:
            active.last_alarm_ts = max(active.last_alarm_ts, ts)
            active.alarms += 1
            return
        alert = Alert(
            status="firing",
            alertname=alertname(alarm.detector),
            detector=alarm.detector,
            severity=alarm.severity,
            run=run,
            env=env,
            summary=f"{env} ({run}): {alarm.summary}",
            description=(
                f"Detector {alarm.detector} on run {run}, environment {env}: {alarm.summary} "
                f"(statistic {alarm.value:.4g}, threshold {alarm.threshold:.4g}"
                f"{', direction ' + alarm.direction if alarm.direction else ''}; "
                f"event #{event_index} at ts {ts:.3f})."
            ),
            runbook_url=f"{self.runbook_base_url}#{alarm.detector}",
            value=alarm.value,
            threshold=alarm.threshold,
            direction=alarm.direction,
            event_index=event_index,
            event_ts=ts,
            fired_event_index=event_index,
        )
        self._active[key] = _Active(alert=alert, last_alarm_ts=ts)
        self.fired_total += 1
        self._emit(alert)

    def sweep(
        self,
        segment_ts: Callable[[str, str], float],
        detector_active: Callable[[str, str, str], bool],
        event_index: int,
    ) -> None:
        """Resolve alerts whose segment has been healthy for the resolve span (event time)."""
        for key, active in list(self._active.items()):
            run, env, detector, _ = key
            now_ts = segment_ts(run, env)
            if now_ts - active.last_alarm_ts < self.resolve_after_seconds:
                continue
            if detector_active(run, env, detector):
                continue
            del self._active[key]
            self.resolved_total += 1
            self._emit(
                replace(active.alert, status="resolved", event_index=event_index, event_ts=now_ts)
            )

    def active(self) -> list[Alert]:
        return [a.alert for a in list(self._active.values())]

    # -- checkpoints: the alerts of a partition's segments travel with its state ---------------
    def export(self, segments: set[tuple[str, str]]) -> dict[str, Any]:
        """Active alerts and alarm counts of these (run, env) segments."""
        return {
            "active": {
                k: (a.alert, a.last_alarm_ts, a.alarms)
                for k, a in self._active.items()
                if k[:2] in segments
            },
            "alarms_total": {k: n for k, n in self.alarms_total.items() if k[:2] in segments},
        }

    def restore(self, exported: dict[str, Any]) -> None:
        """Adopt alerts exported by :meth:`export` (a checkpoint); nothing is re-sent here:
        the delivery client re-sends firing alerts it is told about at the next transition."""
        for key, (alert, last_ts, alarms) in exported.get("active", {}).items():
            self._active[key] = _Active(alert=alert, last_alarm_ts=last_ts, alarms=alarms)
            for sink in self.sinks:
                adopt = getattr(sink, "adopt", None)
                if adopt is not None:
                    adopt(alert)
        self.alarms_total.update(exported.get("alarms_total", {}))

    def forget(self, segments: set[tuple[str, str]]) -> None:
        """Drop the alerts of segments another consumer now owns, without resolving them."""
        for key in [k for k in self._active if k[:2] in segments]:
            del self._active[key]
        for key in [k for k in self.alarms_total if k[:2] in segments]:
            del self.alarms_total[key]
        for sink in self.sinks:
            forget = getattr(sink, "forget", None)
            if forget is not None:
                forget(segments)

    def _emit(self, alert: Alert) -> None:
        for sink in self.sinks:
            sink.submit(alert)


class AlertsFile:
    """Writes every alert transition as one JSON object a line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = path.open("a", encoding="utf-8")

    def submit(self, alert: Alert) -> None:
        if self._fh is None:
            return
        self._fh.write(json.dumps(alert.to_record(), sort_keys=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class AlertLog:
    """Keeps transitions in memory (for the replay summary and tests)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def submit(self, alert: Alert) -> None:
        self.alerts.append(alert)
