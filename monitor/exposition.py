"""The per-segment part of ``/metrics``, written as text directly.

With 1,000 segments the per-segment families hold about 46,000 samples; prometheus_client's
``generate_latest`` spends about 20 µs on each (label escaping and formatting per sample), a
second per scrape on this machine, and holds the GIL meanwhile, stalling consumption. Here
each segment's label prefix is escaped once and cached, values are formatted with ``repr``,
and the text is joined once. The output is the same exposition as the collectors in
``monitor.metrics`` produce (a test parses both and compares the samples); those collectors
remain the registry API (``get_sample_value``) and the reference.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from monitor.metrics import QUANTILES
from monitor.pipeline import Pipeline
from monitor.segments import STATUSES, Segment


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _num(value: float) -> str:
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _quantiles(window: list[float]) -> list[float]:
    """Linear-interpolation quantiles, as numpy's default method computes them."""
    values = sorted(window)
    n = len(values)
    if n == 0:
        return [math.nan] * len(QUANTILES)
    out = []
    for q in QUANTILES:
        pos = (n - 1) * q
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        out.append(values[lo] + (values[hi] - values[lo]) * (pos - lo))
    return out


def _header(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


class SegmentExposition:
    """Renders the segment, detector and alert families of a pipeline as exposition text."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._labels: dict[tuple[str, str], str] = {}
        self.last_seconds = 0.0  # time the previous render took (exported as collect cost)

    def _prefix(self, segment: Segment) -> str:
        key = (segment.run, segment.env)
        prefix = self._labels.get(key)
        if prefix is None:
            prefix = f'run="{_escape(segment.run)}",env="{_escape(segment.env)}"'
            if len(self._labels) > 4 * self.pipeline.segments.max_segments:
                self._labels.clear()  # segments come and go on rebalances: stay bounded
            self._labels[key] = prefix
        return prefix

    def render(self) -> bytes:
        started = time.perf_counter()
        segments = self.pipeline.segments.snapshot()
        prefixes = [(self._prefix(s), s) for s in segments]
        lines: list[str] = []
        self._segment_families(lines, prefixes)
        self._detector_families(lines, prefixes)
        lines.append("")
        text = "\n".join(lines).encode()
        self.last_seconds = time.perf_counter() - started
        return text

    def _segment_families(self, lines: list[str], prefixes: list[tuple[str, Segment]]) -> None:
        name = "rollout_monitor_events_total"
        _header(lines, name, "counter", "Valid events processed, by episode status.")
        for p, s in prefixes:
            counts = dict(s.status_counts)
            lines.extend(
                f'{name}{{{p},status="{status}"}} {_num(counts[status])}' for status in STATUSES
            )
        name = "rollout_monitor_unscored_events_total"
        _header(lines, name, "counter", "Events whose reward is null (not scored).")
        lines.extend(f"{name}{{{p}}} {_num(s.unscored)}" for p, s in prefixes)
        name = "rollout_monitor_last_event_timestamp_seconds"
        _header(lines, name, "gauge", "Event time (ts) of the newest event of the segment.")
        lines.extend(f"{name}{{{p}}} {_num(s.last_ts)}" for p, s in prefixes)
        self._summary(
            lines,
            "rollout_monitor_reward",
            "Reward of scored episodes; quantiles over the last 512.",
            ((p, s.rewards, s.reward_count, s.reward_sum) for p, s in prefixes),
        )
        self._summary(
            lines,
            "rollout_monitor_completion_tokens",
            "Completion length in tokens; quantiles over the last 512.",
            ((p, s.lengths, s.length_count, s.length_sum) for p, s in prefixes),
        )

    @staticmethod
    def _summary(
        lines: list[str],
        name: str,
        help_text: str,
        rows: Iterable[tuple[str, list[float], int, float]],
    ) -> None:
        _header(lines, name, "summary", help_text)
        for p, window, count, total in rows:
            for q, v in zip(QUANTILES, _quantiles(window[:]), strict=True):
                lines.append(f'{name}{{{p},quantile="{q}"}} {_num(v)}')
            lines.append(f"{name}_count{{{p}}} {_num(count)}")
            lines.append(f"{name}_sum{{{p}}} {_num(total)}")

    def _detector_families(self, lines: list[str], prefixes: list[tuple[str, Segment]]) -> None:
        rows = [
            (p, detector_id, detector)
            for p, s in prefixes
            for detector_id, detector in list(s.bank.detectors.items())
        ]
        name = "rollout_monitor_detector_statistic"
        _header(lines, name, "gauge", "Current test statistic of the detector.")
        lines.extend(f'{name}{{{p},detector="{d}"}} {_num(det.statistic)}' for p, d, det in rows)
        name = "rollout_monitor_detector_threshold"
        _header(lines, name, "gauge", "Bound the detector statistic is compared against.")
        lines.extend(f'{name}{{{p},detector="{d}"}} {_num(det.threshold)}' for p, d, det in rows)
        tracker = self.pipeline.tracker
        name = "rollout_monitor_alarms_total"
        _header(lines, name, "counter", "Alarms raised by detectors (one per detected change).")
        for (run, env, detector, severity), n in list(tracker.alarms_total.items()):
            labels = f'run="{_escape(run)}",env="{_escape(env)}"'
            lines.append(
                f'{name}{{{labels},detector="{detector}",severity="{severity}"}} {_num(n)}'
            )
        name = "rollout_monitor_alert_active"
        _header(lines, name, "gauge", "1 while the alert of that detector is firing.")
        for a in tracker.active():
            labels = f'run="{_escape(a.run)}",env="{_escape(a.env)}"'
            lines.append(f'{name}{{{labels},detector="{a.detector}",severity="{a.severity}"}} 1.0')
