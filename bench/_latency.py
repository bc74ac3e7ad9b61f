"""Event-to-metric latency of the daemon while events arrive at a steady rate.

The daemon (``bench._measure``, kind ``daemon``) consumes a fresh single-partition topic, so
the k-th event produced is the k-th event processed. Its watcher thread records
``(wall time, processed)`` about every millisecond, reading the counter that
``rollout_monitor_events_processed_total`` exports. Meanwhile this process produces at the
given rate with ``ts`` set to the produce wall time and keeps the time of each ``produce``
call. The latency of event k is the first recorded time at which ``processed >= k`` minus
its produce time: from produce to the moment the exported counter includes the event.
When the daemon cannot keep up, the run ends :data:`GRACE_S` after the last produce and the
events not processed by then count with their latency so far: the percentiles are then lower
bounds (``lower_bound``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench._kafka_load import create_topic, produce_steadily, unique_topic

#: Seconds the daemon may take after the last produce to catch up before the run ends.
GRACE_S = 15.0


@dataclass(frozen=True)
class LatencyResult:
    rate: float
    seconds: float
    produced: int
    processed: int
    achieved_rate: float
    warmup_s: float
    p50_s: float
    p99_s: float
    max_s: float
    lower_bound: bool  # the daemon fell behind: unprocessed events count up to the end
    sample_interval_ms: float
    rss_peak_mb: float
    load_start: float
    load_end: float


def latencies(
    produced_at: np.ndarray, sample_times: np.ndarray, sample_counts: np.ndarray
) -> np.ndarray:
    """Latency of each produced event; ``inf`` for events never seen processed.

    >>> latencies(np.array([0.0, 0.1, 0.2]), np.array([0.05, 0.3]), np.array([1, 2]))
    array([0.05, 0.2 ,  inf])
    """
    ks = np.arange(1, len(produced_at) + 1)
    idx = np.searchsorted(sample_counts, ks, side="left")
    seen = idx < len(sample_times)
    result = np.full(len(produced_at), np.inf)
    result[seen] = sample_times[idx[seen]] - produced_at[seen]
    return result


def measure_latency(
    bootstrap: str,
    segments: int,
    rate: float,
    seconds: float,
    spec_base: dict[str, Any],
    env: dict[str, str],
    cwd: Path,
) -> tuple[LatencyResult, str, str]:
    """One latency run on a fresh topic; the result, and the topic and group to delete."""
    topic = unique_topic("bench.latency")
    create_topic(bootstrap, topic, 1)
    total = int(rate * seconds)
    group = unique_topic("bench.latency.group")
    with tempfile.TemporaryDirectory() as tmp:
        samples_path = os.path.join(tmp, "samples.npy")
        spec = {
            **spec_base,
            "kind": "daemon",
            "topic": topic,
            "group": group,
            "target": total,
            "segments": segments,
            "max_seconds": seconds + GRACE_S,
            "latency_samples": samples_path,
        }
        child = subprocess.Popen(
            [sys.executable, "-m", "bench._measure", json.dumps(spec)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_ready(child)
            with _off_core(spec_base.get("cpu")):
                produced_at = produce_steadily(bootstrap, topic, segments, rate, seconds)
            out, _ = child.communicate(timeout=seconds + GRACE_S + 300)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        if child.returncode != 0:
            raise RuntimeError(f"latency daemon exited with {child.returncode}")
        daemon = json.loads(out.strip().splitlines()[-1])
        samples = np.load(samples_path)
    return _summarise(rate, seconds, produced_at, samples, daemon), topic, group


@contextlib.contextmanager
def _off_core(cpu: int | None) -> Iterator[None]:
    """Meanwhile this process (the producer: event generation in Python and librdkafka's
    threads) runs on the other cores than ``cpu``, the daemon's, as a trainer would not share
    the monitor's core; the broker is not pinned."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    others = before - {cpu}
    if not others:
        yield
        return
    os.sched_setaffinity(0, others)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _wait_ready(child: subprocess.Popen[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    assert child.stdout is not None
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            raise RuntimeError("latency daemon exited before it was ready")
        if line.strip() == "READY":
            return
    raise TimeoutError("latency daemon not ready")


def _summarise(
    rate: float,
    seconds: float,
    produced_at: np.ndarray,
    samples: np.ndarray,
    daemon: dict[str, Any],
) -> LatencyResult:
    times, counts = samples[:, 0], samples[:, 1]
    lat = latencies(produced_at, times, counts)
    behind = ~np.isfinite(lat)
    lat[behind] = times[-1] - produced_at[behind]  # at least this much
    warmup = min(2.0, seconds / 5)
    steady = lat[produced_at >= produced_at[0] + warmup]
    span = produced_at[-1] - produced_at[0]
    return LatencyResult(
        rate=rate,
        seconds=seconds,
        produced=len(produced_at),
        processed=int(counts[-1]),
        achieved_rate=len(produced_at) / span if span > 0 else 0.0,
        warmup_s=warmup,
        p50_s=float(np.percentile(steady, 50)),
        p99_s=float(np.percentile(steady, 99)),
        max_s=float(steady.max()),
        lower_bound=bool(behind.any()),
        sample_interval_ms=float(1000 * np.median(np.diff(times))),
        rss_peak_mb=daemon["rss_peak_mb"],
        load_start=daemon["load_start"],
        load_end=daemon["load_end"],
    )
