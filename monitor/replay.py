"""The embedded mode: the same pipeline and detectors over JSONL and Parquet files, no Kafka.

Files are read in the order given, as one concatenated stream; ``event_index`` in the alerts is
the 0-based position of the event in that stream (blank lines do not count). Invalid lines and
rows are counted and reported, never fatal. Time-based behaviour runs on event time, so a
replay raises the same alerts as the live run did.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import polars as pl

from monitor.alerts import Alert, AlertLog, AlertsFile, AlertSink, AlertTracker
from monitor.config import Settings
from monitor.events import InvalidEvent, RolloutEvent, event_from_mapping
from monitor.pipeline import Pipeline
from monitor.segments import Segment

PARQUET_SUFFIXES = {".parquet", ".pq"}


@dataclass
class ReplayResult:
    """What a replay saw: the pipeline (segments, counters) and every alert transition."""

    pipeline: Pipeline
    alerts: list[Alert] = field(default_factory=list)

    @property
    def invalid(self) -> int:
        return sum(self.pipeline.counters.invalid.values())


def _jsonl_records(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield line


def _clean_row(row: dict[str, Any]) -> dict[str, Any]:
    # Parquet stores maps as structs over the union of keys: a null there means "absent".
    for key in ("metrics", "reward_components"):
        value = row.get(key)
        if isinstance(value, dict):
            row[key] = {k: v for k, v in value.items() if v is not None}
    for key in ("error", "timings"):
        value = row.get(key)
        if isinstance(value, dict) and all(v is None for v in value.values()):
            row[key] = None
    return row


def _parquet_records(path: Path) -> Iterator[RolloutEvent | InvalidEvent]:
    frame = pl.read_parquet(path)
    for row in frame.iter_rows(named=True):
        try:
            yield event_from_mapping(_clean_row(row))
        except InvalidEvent as exc:
            yield exc


def iter_records(paths: Sequence[Path]) -> Iterator[bytes | RolloutEvent | InvalidEvent]:
    """Raw JSON lines (JSONL) and validated events (Parquet), in input order."""
    for path in paths:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            yield from _parquet_records(path)
        else:
            yield from _jsonl_records(path)


def count_records(paths: Sequence[Path]) -> int:
    """Number of records, for the progress bar (cheap: Parquet metadata, a line count)."""
    total = 0
    for path in paths:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            total += pl.scan_parquet(path).select(pl.len()).collect().item()
        else:
            with path.open("rb") as fh:
                total += sum(1 for line in fh if line.strip())
    return total


def replay(
    paths: Sequence[Path],
    settings: Settings,
    alerts_out: Path | None = None,
    progress: bool = False,
) -> ReplayResult:
    """Run the pipeline over the files; return the segments and the alert transitions."""
    log = AlertLog()
    sinks: list[AlertSink] = [log]
    alerts_file = AlertsFile(alerts_out) if alerts_out is not None else None
    if alerts_file is not None:
        alerts_file.path.write_text("")
        sinks.append(alerts_file)
    tracker = AlertTracker(
        settings.detectors.resolve_after_seconds, settings.alertmanager.runbook_base_url, sinks
    )
    pipeline = Pipeline(settings.pipeline, settings.detectors, tracker)
    batch = settings.pipeline.batch_max_events
    records = iter_records(paths)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count_records(paths), unit="ev", file=sys.stderr, mininterval=0.5)
    try:
        for n, record in enumerate(records, start=1):
            if isinstance(record, bytes):
                pipeline.process_bytes(record)
            elif isinstance(record, InvalidEvent):
                pipeline.refuse(record.reason, record.detail)
            else:
                pipeline.process_event(record)
            if n % batch == 0:
                pipeline.end_batch()
                if bar is not None:
                    bar.update(batch)
        pipeline.end_batch()
    finally:
        if bar is not None:
            bar.close()
        if alerts_file is not None:
            alerts_file.close()
    return ReplayResult(pipeline=pipeline, alerts=log.alerts)


def print_summary(result: ReplayResult, out: TextIO | None = None) -> None:
    """Segments and alerts as plain-text tables (to standard output by default)."""
    out = out or sys.stdout
    counters = result.pipeline.counters
    out.write(
        f"processed {counters.processed} events, {result.invalid} invalid, "
        f"{counters.duplicates} duplicates, {len(result.pipeline.segments)} segments\n\n"
    )
    fired: dict[tuple[str, str], int] = {}
    for alert in result.alerts:
        if alert.status == "firing":
            fired[(alert.run, alert.env)] = fired.get((alert.run, alert.env), 0) + 1
    rows: list[Sequence[str]] = [
        ("run", "env", "events", "failed", "truncated", "mean reward", "alerts")
    ]
    for seg in result.pipeline.segments.snapshot():
        mean = seg.reward_sum / seg.reward_count if seg.reward_count else float("nan")
        rows.append(
            (
                seg.run,
                seg.env,
                str(seg.events),
                _share(seg, "failed"),
                _share(seg, "truncated"),
                f"{mean:.3f}",
                str(fired.get((seg.run, seg.env), 0)),
            )
        )
    _table(rows, out)
    if counters.invalid and result.invalid:
        out.write("\ninvalid input by reason: ")
        out.write(", ".join(f"{k}={v}" for k, v in counters.invalid.items() if v) + "\n")
    out.write("\n")
    if not result.alerts:
        out.write("no alerts\n")
        return
    rows = [("status", "detector", "severity", "run", "env", "event_index", "summary")]
    for a in result.alerts:
        rows.append((a.status, a.detector, a.severity, a.run, a.env, str(a.event_index), a.summary))
    _table(rows, out)


def _share(seg: Segment, status: str) -> str:
    return f"{seg.status_counts[status] / seg.events:.1%}" if seg.events else "-"


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
        if i == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")
