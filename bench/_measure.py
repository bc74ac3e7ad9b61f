"""One measured configuration, run in a process of its own: ``python -m bench._measure SPEC``.

SPEC is a JSON object (see :class:`Spec`); the result is printed as the last line of standard
output, as JSON. A fresh process per configuration and run keeps peak RSS (``VmHWM``) apart.

Kinds:

``ceiling``
    confluent-kafka batched ``consume`` plus msgspec typed decode into ``RolloutEvent``,
    nothing else.
``daemon``
    ``monitor.daemon.Daemon.run()`` itself, see :mod:`bench._daemon_run`.
``naive``
    :mod:`bench.naive`.
``state``
    No Kafka: a ``Pipeline`` fed ``target`` generated events over ``segments`` segments in
    memory, to see how its state grows with the number of segments.

Every kind counts events from the first one consumed and stops at ``target`` events or after
``max_seconds``, whichever comes first (``complete`` says which).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
import numpy as np


@dataclass(frozen=True)
class Spec:
    kind: str
    target: int
    segments: int
    bootstrap: str = ""
    topic: str = ""
    group: str = ""
    backend: str = "confluent"
    max_seconds: float | None = None  # stop measuring after this long, complete or not
    timeout_s: float = 900.0  # give up (an error) when the first event takes longer
    # the daemon's default (monitor.config.PipelineSettings, not imported here: the ceiling
    # and naive processes stay free of the daemon's modules); a test keeps the two equal
    batch_max_events: int = 20_000
    scrapes: int = 5
    latency_samples: str | None = None  # a path: record (time, processed) pairs there
    cpu: int | None = None  # pin the process (and the client's threads) to this core
    librdkafka: dict[str, Any] = field(default_factory=dict)  # extra consumer settings
    checkpoint_store: str | None = None  # None: the daemon's default


@dataclass
class Result:
    kind: str
    backend: str
    events: int
    seconds: float
    events_per_s: float
    complete: bool
    rss_start_mb: float
    rss_peak_mb: float
    load_start: float
    load_end: float
    segments_seen: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # CPU time of the whole process (all threads) while measuring


class Stopwatch:
    """Counts events from the first one and says when to stop: target reached or time up."""

    def __init__(self, target: int, max_seconds: float | None) -> None:
        self.target = target
        self.max_seconds = max_seconds
        self.started: float | None = None
        self.base = 0  # events counted when the clock started
        self.elapsed = 0.0
        self.cpu_started = 0.0
        self.cpu = 0.0
        self.rss_start = rss_mb()
        self.load_start = os.getloadavg()[0]

    def done(self, count: int) -> bool:
        now = time.perf_counter()
        if self.started is None:
            if not count:
                return False
            self.started, self.base = now, count
            self.cpu_started = time.process_time()
        self.elapsed = now - self.started
        self.cpu = time.process_time() - self.cpu_started
        return count >= self.target or (
            self.max_seconds is not None and self.elapsed >= self.max_seconds
        )

    def result(self, kind: str, backend: str, count: int, segments: int = 0,
               extra: dict[str, Any] | None = None) -> Result:  # fmt: skip
        rate = (count - self.base) / self.elapsed if self.elapsed > 0 else 0.0
        return Result(kind, backend, count, self.elapsed, rate, count >= self.target,
                      self.rss_start, peak_rss_mb(), self.load_start, os.getloadavg()[0],
                      segments, extra or {}, self.cpu)  # fmt: skip


def _status_mb(name: str) -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{name} not in /proc/self/status")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    return _status_mb("VmHWM")


def time_scrapes(
    scrape: Callable[[], bytes],
    count: int,
    segments_read: Callable[[], int] | None = None,
    between: Callable[[], None] | None = None,
) -> tuple[dict[str, Any], bytes]:
    """Times and the size of ``count`` scrapes; the last exposition too.

    With ``segments_read`` (how many segments the daemon's last render read afresh; the
    others reused their kept text) the scrapes are told apart: the first one after consuming
    (``scrape_cold_ms``: it also builds every segment's kept text), later ones that read
    every segment again (``scrape_ms``: the cost when every segment changed since the last
    scrape, as on a busy daemon) and later ones that read none (``scrape_idle_ms``). Without
    it (the naive baseline) ``scrape_ms`` is the median of all. ``between`` runs before each
    scrape, untimed.
    """
    times: list[float] = []
    read: list[int] = []
    body = b""
    for _ in range(count):
        if between is not None:
            between()
        t0 = time.perf_counter()
        body = scrape()
        times.append(time.perf_counter() - t0)
        if segments_read is not None:
            read.append(segments_read())
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    summary: dict[str, Any] = {
        "scrape_ms_all": [round(1000 * t, 2) for t in times],
        "scrape_segments_read": read or None,
        "scrape_bytes": len(body),
        "scrape_series": series,
    }
    if not read:
        summary["scrape_ms"] = 1000 * statistics.median(times)
        return summary, body
    every = [t for t, n in zip(times[1:], read[1:], strict=True) if n == read[0] and n > 0]
    idle = [t for t, n in zip(times[1:], read[1:], strict=True) if n == 0]
    summary["scrape_cold_ms"] = 1000 * times[0]
    summary["scrape_ms"] = 1000 * statistics.median(every) if every else None
    summary["scrape_idle_ms"] = 1000 * statistics.median(idle) if idle else None
    return summary, body


def run_ceiling(spec: Spec) -> Result:
    from confluent_kafka import Consumer

    from monitor.events import RolloutEvent

    watch = Stopwatch(spec.target, spec.max_seconds)
    decoder = msgspec.json.Decoder(RolloutEvent)
    consumer = Consumer(
        {
            "bootstrap.servers": spec.bootstrap,
            "group.id": spec.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **spec.librdkafka,
        }
    )
    consumer.subscribe([spec.topic])
    count = 0
    deadline = time.monotonic() + spec.timeout_s
    while not watch.done(count):
        if not count and time.monotonic() > deadline:
            raise TimeoutError(f"nothing consumed from {spec.topic}")
        for message in consumer.consume(spec.batch_max_events, 0.2):
            value = message.value()
            if message.error() is None and value is not None:
                decoder.decode(value)
                count += 1
    consumer.close()
    return watch.result("ceiling", "confluent", count)


def run_naive(spec: Spec) -> Result:
    from prometheus_client import CollectorRegistry, generate_latest

    from bench.naive import consume

    watch = Stopwatch(spec.target, spec.max_seconds)
    registry = CollectorRegistry()
    run = consume(spec.bootstrap, spec.topic, spec.group, registry, watch.done)
    scrape, _ = time_scrapes(lambda: generate_latest(registry), spec.scrapes)
    return watch.result("naive", "kafka-python", run.events, run.segments,
                        {**scrape, "drifts": run.drifts})  # fmt: skip


#: Messages per batch of the state probe: small, so that what a batch holds while it is
#: processed (about 2 KB a message, raw and decoded; RSS keeps the high mark) stays out of
#: the state measured; the daemon's batches are 20 times larger.
STATE_BATCH = 1000


def run_state(spec: Spec) -> Result:
    """Feed a Pipeline in memory; RSS before and after (no Kafka, no dedup window)."""
    from bench._daemon_run import settings_for
    from bench._events import EventFactory
    from monitor.alerts import AlertTracker
    from monitor.pipeline import Pipeline
    from monitor.source.base import RawMessage

    settings = settings_for(spec, state_dir="", dedup_window=0)
    tracker = AlertTracker(
        settings.detectors.resolve_after_seconds, settings.alertmanager.runbook_base_url, []
    )
    pipeline = Pipeline(settings.pipeline, settings.detectors, tracker, None)
    factory = EventFactory(spec.segments, seed=7)
    gc.collect()
    before = rss_mb()
    busy, offset = 0.0, 0
    while offset < spec.target:
        n = min(STATE_BATCH, spec.target - offset)
        ts = 1_764_000_000.0 + (offset + np.arange(n)) / 10_000
        batch = [RawMessage(v, k, "state", 0, offset + i, None)
                 for i, (k, v) in enumerate(factory.messages(n, ts))]  # fmt: skip
        t0 = time.perf_counter()
        pipeline.process_messages(batch)
        busy += time.perf_counter() - t0
        offset += n
    del batch
    gc.collect()
    grown = rss_mb() - before
    segments = len(pipeline.segments)
    return Result("state", "none", offset, busy, offset / busy, True, before, peak_rss_mb(),
                  os.getloadavg()[0], os.getloadavg()[0], segments,
                  {"state_mb": grown, "kb_per_segment": 1024 * grown / segments})  # fmt: skip


def main(argv: list[str]) -> int:
    spec = Spec(**json.loads(argv[0]))
    if spec.cpu is not None:
        os.sched_setaffinity(0, {spec.cpu})
    if spec.kind == "daemon":
        from bench._daemon_run import run_daemon

        result = run_daemon(spec)
    else:
        runners = {"ceiling": run_ceiling, "naive": run_naive, "state": run_state}
        result = runners[spec.kind](spec)
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
