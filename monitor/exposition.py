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
from collections.abc import Sequence

import numpy as np

from monitor.metrics import QUANTILES
from monitor.pipeline import Pipeline
from monitor.segments import STATUSES, Segment


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


_SPECIAL = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}


def _num(value: float) -> str:
    """A sample value as Prometheus text (``repr`` of the float; NaN and infinities spelled
    as the format wants them).

    >>> [_num(v) for v in (0.25, 3, float("nan"), float("-inf"))]
    ['0.25', '3.0', 'NaN', '-Inf']
    """
    text = repr(float(value))
    return _SPECIAL.get(text, text)


class _SegmentLines:
    """The cached label part of each of one segment's lines (up to the value), and its
    threshold lines as one block, rebuilt only when a threshold changes."""

    __slots__ = (
        "_names",
        "bank",
        "detectors",
        "last_ts",
        "lengths",
        "rewards",
        "statistic_prefixes",
        "statuses",
        "threshold_block",
        "thresholds",
        "unscored",
    )

    def __init__(self, prefix: str, segment: Segment) -> None:
        self.statuses = [
            f'rollout_monitor_events_total{{{prefix},status="{status}"}} ' for status in STATUSES
        ]
        self.unscored = f"rollout_monitor_unscored_events_total{{{prefix}}} "
        self.last_ts = f"rollout_monitor_last_event_timestamp_seconds{{{prefix}}} "
        self.rewards = _summary_labels("rollout_monitor_reward", prefix)
        self.lengths = _summary_labels("rollout_monitor_completion_tokens", prefix)
        self.bank = segment.bank
        items = list(segment.bank.detectors.items())
        self.detectors = [detector for _, detector in items]
        self.statistic_prefixes = [
            f'rollout_monitor_detector_statistic{{{prefix},detector="{d}"}} ' for d, _ in items
        ]
        self.thresholds: list[float] = []
        self.threshold_block = ""
        self._names = [(d, prefix) for d, _ in items]

    def threshold_text(self) -> str:
        values = [detector.threshold for detector in self.detectors]
        if values != self.thresholds:
            name = "rollout_monitor_detector_threshold"
            self.threshold_block = "\n".join(
                f'{name}{{{p},detector="{d}"}} {_num(v)}'
                for (d, p), v in zip(self._names, values, strict=True)
            )
            self.thresholds = values
        return self.threshold_block


def _summary_labels(name: str, prefix: str) -> list[str]:
    """Label parts of a summary's quantile, ``_count`` and ``_sum`` lines."""
    return [
        *(f'{name}{{{prefix},quantile="{q}"}} ' for q in QUANTILES),
        f"{name}_count{{{prefix}}} ",
        f"{name}_sum{{{prefix}}} ",
    ]


def _quantile_rows(windows: list[Sequence[float]]) -> list[list[float]]:
    """The :data:`QUANTILES` of each window, as ``np.quantile`` computes them (the reference
    collectors use it), with one numpy call per distinct window length instead of one per
    window: windows are full (512 values) but for new segments."""
    out: list[list[float]] = [[math.nan] * len(QUANTILES)] * len(windows)
    by_length: dict[int, list[int]] = {}
    copies = []
    for i, window in enumerate(windows):
        copy = window[:]  # a copy: the consumer thread keeps writing the window
        copies.append(copy)
        if len(copy):
            by_length.setdefault(len(copy), []).append(i)
    for rows in by_length.values():
        matrix = np.array([copies[i] for i in rows], dtype=float)
        values = np.quantile(matrix, QUANTILES, axis=1).T.tolist()
        for i, row in zip(rows, values, strict=True):
            out[i] = row
    return out


def _header(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def _summary(
    lines: list[str],
    name: str,
    help_text: str,
    rows: list[tuple[list[str], Sequence[float], int, float]],
) -> None:
    _header(lines, name, "summary", help_text)
    quantiles = _quantile_rows([window for _, window, _, _ in rows])
    for (labels, _, count, total), values in zip(rows, quantiles, strict=True):
        lines.extend([label + _num(v) for label, v in zip(labels, values, strict=False)])
        lines.append(labels[-2] + str(count))
        lines.append(labels[-1] + _num(total))


class SegmentExposition:
    """Renders the segment, detector and alert families of a pipeline as exposition text."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._segments: dict[Segment, _SegmentLines] = {}
        self.last_seconds = 0.0  # time the previous render took (exported as collect cost)

    def _lines(self, segment: Segment) -> _SegmentLines:
        cached = self._segments.get(segment)
        if cached is None or cached.bank is not segment.bank:
            if len(self._segments) > 4 * self.pipeline.segments.max_segments:
                self._segments.clear()  # segments come and go on rebalances: stay bounded
            prefix = f'run="{_escape(segment.run)}",env="{_escape(segment.env)}"'
            cached = self._segments[segment] = _SegmentLines(prefix, segment)
        return cached

    def render(self) -> bytes:
        started = time.perf_counter()
        rows = [(self._lines(s), s) for s in self.pipeline.segments.snapshot()]
        lines: list[str] = []
        self._segment_families(lines, rows)
        self._detector_families(lines, rows)
        lines.append("")
        text = "\n".join(lines).encode()
        self.last_seconds = time.perf_counter() - started
        return text

    @staticmethod
    def _segment_families(lines: list[str], rows: list[tuple[_SegmentLines, Segment]]) -> None:
        _header(
            lines,
            "rollout_monitor_events_total",
            "counter",
            "Valid events processed, by episode status.",
        )
        for c, s in rows:
            counts = dict(s.status_counts)
            lines.extend(
                [
                    label + str(counts[status])
                    for label, status in zip(c.statuses, STATUSES, strict=True)
                ]
            )
        _header(
            lines,
            "rollout_monitor_unscored_events_total",
            "counter",
            "Events whose reward is null (not scored).",
        )
        lines.extend([c.unscored + str(s.unscored) for c, s in rows])
        _header(
            lines,
            "rollout_monitor_last_event_timestamp_seconds",
            "gauge",
            "Event time (ts) of the newest event of the segment.",
        )
        lines.extend([c.last_ts + _num(s.last_ts) for c, s in rows])
        _summary(
            lines,
            "rollout_monitor_reward",
            "Reward of scored episodes; quantiles over the last 512.",
            [(c.rewards, s.rewards, s.reward_count, s.reward_sum) for c, s in rows],
        )
        _summary(
            lines,
            "rollout_monitor_completion_tokens",
            "Completion length in tokens; quantiles over the last 512.",
            [(c.lengths, s.lengths, s.length_count, s.length_sum) for c, s in rows],
        )

    def _detector_families(
        self, lines: list[str], rows: list[tuple[_SegmentLines, Segment]]
    ) -> None:
        name = "rollout_monitor_detector_statistic"
        _header(lines, name, "gauge", "Current test statistic of the detector.")
        for c, _ in rows:
            lines.extend(
                [
                    prefix + _num(detector.statistic)
                    for prefix, detector in zip(c.statistic_prefixes, c.detectors, strict=True)
                ]
            )
        name = "rollout_monitor_detector_threshold"
        _header(lines, name, "gauge", "Bound the detector statistic is compared against.")
        lines.extend([c.threshold_text() for c, _ in rows if c.detectors])
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
