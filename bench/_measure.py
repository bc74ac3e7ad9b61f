"""One measured configuration, run in a process of its own: ``python -m bench._measure SPEC``.

SPEC is a JSON object (see :class:`Spec`); the result is printed as one JSON line on standard
output. A fresh process per configuration and run keeps peak RSS (``VmHWM``) separate.

Kinds:

``ceiling``
    confluent-kafka batched ``consume`` plus msgspec typed decode into ``RolloutEvent``,
    nothing else.
``daemon``
    ``monitor.daemon.Daemon.run()`` itself (the code path of ``rollout-monitor run``: source,
    pipeline with the default detector set, dead-letter producer, metrics registry and HTTP
    server, commits). A watcher thread reads the pipeline's ``processed`` counter, the
    number ``rollout_monitor_events_processed_total`` exports, and stops the daemon once
    every event is processed; then ``/metrics`` is scraped over HTTP from the daemon.
``naive``
    :mod:`bench.naive`.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
import numpy as np

#: Seconds between two reads of the processed counter (throughput runs).
WATCH_INTERVAL_S = 0.01
#: Seconds between two reads of the processed counter (latency runs).
LATENCY_INTERVAL_S = 0.001


@dataclass(frozen=True)
class Spec:
    kind: str
    bootstrap: str
    topic: str
    group: str
    target: int
    segments: int
    backend: str = "confluent"
    timeout_s: float = 900.0
    batch_max_events: int = 5000
    scrapes: int = 5
    latency_samples: str | None = None  # a path: record (time, processed) pairs there
    cpu: int | None = None  # pin the process (and the client's threads) to this core
    librdkafka: dict[str, Any] = field(default_factory=dict)  # extra consumer settings


@dataclass
class Result:
    kind: str
    backend: str
    events: int
    seconds: float
    events_per_s: float
    rss_start_mb: float
    rss_peak_mb: float
    load_start: float
    load_end: float
    segments_seen: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


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


def run_ceiling(spec: Spec) -> Result:
    from confluent_kafka import Consumer

    from monitor.events import RolloutEvent

    rss_start, load_start = rss_mb(), os.getloadavg()[0]
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
    started = 0.0
    deadline = time.monotonic() + spec.timeout_s
    while count < spec.target and time.monotonic() < deadline:
        messages = consumer.consume(spec.batch_max_events, 0.2)
        if messages and not count:
            started = time.perf_counter()
        for message in messages:
            value = message.value()
            if message.error() is None and value is not None:
                decoder.decode(value)
                count += 1
    seconds = time.perf_counter() - started
    consumer.close()
    return Result(
        "ceiling",
        "confluent",
        count,
        seconds,
        count / seconds,
        rss_start,
        peak_rss_mb(),
        load_start,
        os.getloadavg()[0],
    )


def run_naive(spec: Spec) -> Result:
    from prometheus_client import CollectorRegistry, generate_latest

    from bench.naive import consume

    rss_start, load_start = rss_mb(), os.getloadavg()[0]
    registry = CollectorRegistry()
    run = consume(spec.bootstrap, spec.topic, spec.group, spec.target, registry)
    scrape, _ = _time_scrapes(lambda: generate_latest(registry), spec.scrapes)
    return Result(
        "naive",
        "kafka-python",
        run.events,
        run.seconds,
        run.events / run.seconds,
        rss_start,
        peak_rss_mb(),
        load_start,
        os.getloadavg()[0],
        run.segments,
        {**scrape, "drifts": run.drifts},
    )


def _time_scrapes(scrape: Callable[[], bytes], count: int) -> tuple[dict[str, Any], bytes]:
    times, body = [], b""
    for _ in range(count):
        t0 = time.perf_counter()
        body = scrape()
        times.append(time.perf_counter() - t0)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    summary = {
        "scrape_ms": 1000 * statistics.median(times),
        "scrape_ms_all": [round(1000 * t, 2) for t in times],
        "scrape_bytes": len(body),
        "scrape_series": series,
    }
    return summary, body


def _http_get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status}")
        return body
    finally:
        conn.close()


def _exported_processed(body: bytes) -> float:
    for line in body.splitlines():
        if line.startswith(b"rollout_monitor_events_processed_total "):
            return float(line.split()[1])
    raise RuntimeError("rollout_monitor_events_processed_total not in the scrape")


class _Watcher(threading.Thread):
    """Watches the daemon's processed counter; stops the daemon when the target is reached."""

    def __init__(self, daemon: Any, spec: Spec) -> None:
        super().__init__(name="bench-watcher", daemon=True)
        self.daemon_ = daemon
        self.spec = spec
        self.first: tuple[float, int] | None = None
        self.last: tuple[float, int] = (0.0, 0)
        self.samples: list[tuple[float, int]] = []
        self.rss_consumed_mb = 0.0
        self.segments = 0
        self.counts: dict[str, Any] = {}
        self.scrape: dict[str, Any] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._watch()
            # Read before the stop: the revoke at close drops the partitions' state.
            pipeline = self.daemon_.pipeline
            self.segments = len(pipeline.segments)
            self.counts = {
                "invalid": sum(pipeline.counters.invalid.values()),
                "duplicates": pipeline.counters.duplicates,
                "batches": pipeline.counters.batches,
                "detectors": sorted(
                    next(iter(pipeline.segments.snapshot())).bank.detectors
                    if len(pipeline.segments)
                    else []
                ),
            }
            self.rss_consumed_mb = peak_rss_mb()
            self.scrape = self._scrape()
        except BaseException as exc:
            self.error = exc
        finally:
            self.daemon_.stop()

    def _watch(self) -> None:
        spec = self.spec
        interval = LATENCY_INTERVAL_S if spec.latency_samples else WATCH_INTERVAL_S
        deadline = time.monotonic() + spec.timeout_s
        while self.daemon_.pipeline is None:
            time.sleep(0.001)
        counters = self.daemon_.pipeline.counters
        record = self.samples.append if spec.latency_samples else None
        announced = False
        while time.monotonic() < deadline:
            if not announced and self._ready():
                print("READY", flush=True)  # the latency run starts producing now
                announced = True
            processed = counters.processed
            now = time.perf_counter()
            if record is not None:
                record((time.time(), processed))
            if processed and self.first is None:
                self.first = (now, processed)
            self.last = (now, processed)
            if processed >= spec.target:
                return
            time.sleep(interval)
        raise TimeoutError(f"{self.last[1]} of {spec.target} events processed in time")

    def _ready(self) -> bool:
        return self.daemon_.http is not None and self.daemon_.readiness()[0]

    def _scrape(self) -> dict[str, Any]:
        port = self.daemon_.http.port
        result, body = _time_scrapes(lambda: _http_get(port, "/metrics"), self.spec.scrapes)
        result["exported_processed"] = _exported_processed(body)
        return result


def _kafka_settings_class(librdkafka: dict[str, Any]) -> Any:
    """``KafkaSettings``, or a subclass adding ``librdkafka`` to the client configuration.

    The daemon passes ``client_config()`` to its consumer (and dead-letter producer); the
    subclass is how the benchmark tries consumer settings the daemon does not expose.
    """
    from monitor.config import KafkaSettings

    if not librdkafka:
        return KafkaSettings
    added = {key: str(value) for key, value in librdkafka.items()}

    class TunedKafkaSettings(KafkaSettings):
        def client_config(self) -> dict[str, str]:
            return {**super().client_config(), **added}

    return TunedKafkaSettings


def _settings(spec: Spec, state_dir: str) -> Any:
    from monitor.config import (
        AlertmanagerSettings,
        HttpSettings,
        PipelineSettings,
        Settings,
    )

    optional: dict[str, Any] = {}
    if "checkpoint" in Settings.model_fields:
        # Keep the default store, but out of the working directory.
        optional["checkpoint"] = {"directory": state_dir}
    return Settings(
        **optional,
        kafka=_kafka_settings_class(spec.librdkafka)(
            backend=spec.backend,
            bootstrap_servers=spec.bootstrap,
            topics=(spec.topic,),
            group_id=spec.group,
            dead_letter_topic=spec.topic + ".dlq",
        ),
        pipeline=PipelineSettings(
            max_segments=max(1000, spec.segments), batch_max_events=spec.batch_max_events
        ),
        # No Alertmanager: the benchmark must not post to the shared stack's one.
        alertmanager=AlertmanagerSettings(url=None),
        http=HttpSettings(listen="127.0.0.1:0"),
    )


def run_daemon(spec: Spec) -> Result:
    from monitor.daemon import Daemon

    rss_start, load_start = rss_mb(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-state-") as state_dir:
        daemon = Daemon(_settings(spec, state_dir))
        watcher = _Watcher(daemon, spec)
        watcher.start()
        daemon.run()
        watcher.join()
    if watcher.error is not None:
        raise watcher.error
    if watcher.first is None:
        raise RuntimeError(f"the daemon processed nothing from {spec.topic}")
    (t0, n0), (t1, n1) = watcher.first, watcher.last
    seconds = t1 - t0
    pipeline = daemon.pipeline
    assert pipeline is not None
    extra = {
        **watcher.scrape,
        "rss_after_consume_mb": watcher.rss_consumed_mb,
        "overflow_events": pipeline.segments.overflow_events,
        "checkpoint_store": getattr(getattr(daemon.settings, "checkpoint", None), "store", None),
        "alarms": sum(pipeline.tracker.alarms_total.values()),
        **watcher.counts,
    }
    if spec.latency_samples:
        np.save(spec.latency_samples, np.array(watcher.samples, dtype=float))
    return Result(
        "daemon",
        spec.backend,
        n1,
        seconds,
        (n1 - n0) / seconds if seconds else 0.0,
        rss_start,
        peak_rss_mb(),
        load_start,
        os.getloadavg()[0],
        watcher.segments,
        extra,
    )


RUNNERS = {"ceiling": run_ceiling, "daemon": run_daemon, "naive": run_naive}


def main(argv: list[str]) -> int:
    spec = Spec(**json.loads(argv[0]))
    if spec.cpu is not None:
        os.sched_setaffinity(0, {spec.cpu})
    result = RUNNERS[spec.kind](spec)
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
