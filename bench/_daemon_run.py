"""The ``daemon`` kind of :mod:`bench._measure`: ``monitor.daemon.Daemon.run()`` itself.

That is the code path of ``rollout-monitor run``: source, pipeline with the default detector
set, dead-letter producer, metrics registry and HTTP server, checkpoints and offset commits.
Alertmanager delivery is off (the benchmark must not post to the shared stack's one) and the
checkpoint directory is a temporary one. A watcher thread reads the pipeline's ``processed``
counter, the number ``rollout_monitor_events_processed_total`` exports, until the target or
the time cap; then it holds back further batches, scrapes ``/metrics`` over HTTP from the
idle daemon and stops it.

The scrapes, in order (``Spec.scrapes`` of them): the first after consuming (cold: it builds
every segment's kept text); one after an empty batch (every segment read again); then, but
the last two, each after fresh events that reach every segment, fed through the held-back
source in batches of the daemon's size (:data:`FED_PER_SEGMENT` events a segment on average
a batch; every segment read again, its state just pushed out of the CPU caches, as on a busy
daemon); the last two after an empty batch each (every segment read again, then idle: every
segment's text reused).
"""

from __future__ import annotations

import http.client
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from bench._measure import Result, Spec, Stopwatch, peak_rss_mb, time_scrapes

#: Seconds between two reads of the processed counter (throughput runs).
WATCH_INTERVAL_S = 0.01
#: Seconds between two reads of the processed counter (latency runs).
LATENCY_INTERVAL_S = 0.001
#: Events per segment, on average, of a batch fed between two scrapes, at most the daemon's
#: batch size (20,000: 20 at 1,000 segments; at 10,000 segments several batches are fed, until
#: every segment got an event).
FED_PER_SEGMENT = 20
#: Seed of the fed events' generator (the loaded topics use others: the ids differ).
FED_SEED = 1_000_003


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


def settings_for(spec: Spec, state_dir: str, **pipeline: Any) -> Any:
    """The daemon's settings for ``spec``: defaults, except where the benchmark needs more."""
    from monitor.config import AlertmanagerSettings, HttpSettings, PipelineSettings, Settings

    optional: dict[str, Any] = {}
    if "checkpoint" in Settings.model_fields:
        checkpoint = {"directory": state_dir}
        if spec.checkpoint_store is not None:
            checkpoint["store"] = spec.checkpoint_store
        optional["checkpoint"] = checkpoint
    return Settings(
        **optional,
        kafka=_kafka_settings_class(spec.librdkafka)(
            backend=spec.backend,
            bootstrap_servers=spec.bootstrap or "127.0.0.1:9092",
            topics=(spec.topic or "rl.rollouts",),
            group_id=spec.group or "rollout-monitor",
            dead_letter_topic=(spec.topic or "rl.rollouts") + ".dlq",
        ),
        pipeline=PipelineSettings(
            max_segments=max(1000, spec.segments),
            batch_max_events=spec.batch_max_events,
            **pipeline,
        ),
        alertmanager=AlertmanagerSettings(url=None),
        http=HttpSettings(listen="127.0.0.1:0"),
    )


def _http_get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
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


class Watcher(threading.Thread):
    """Watches the processed counter; scrapes, then stops the daemon when the run is over."""

    def __init__(self, daemon: Any, spec: Spec) -> None:
        super().__init__(name="bench-watcher", daemon=True)
        self.daemon_ = daemon
        self.spec = spec
        self.watch = Stopwatch(spec.target, spec.max_seconds)
        self.processed = 0
        self.samples: list[tuple[float, int]] = []
        self.found: dict[str, Any] = {}
        self.error: BaseException | None = None
        self._feeds: Iterator[Any] | None = None  # batches the held-back source hands out
        self._fed: list[int] = []  # events fed before each scrape that follows a feed

    def run(self) -> None:
        try:
            self._watch()
            self._hold_back_batches()
            self.found = {**self._state(), "rss_after_consume_mb": peak_rss_mb()}
            self.found.update(self._scrape())
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
        while True:
            if not announced and self._ready():
                print("READY", flush=True)  # the latency run starts producing now
                announced = True
            self.processed = processed = counters.processed
            if record is not None:
                record((time.time(), processed))
            if self.watch.done(processed):
                return
            if not processed and time.monotonic() > deadline:
                raise TimeoutError(f"the daemon processed nothing from {spec.topic}")
            time.sleep(interval)

    def _hold_back_batches(self, quiet_s: float = 0.5) -> None:
        """From now on the source returns empty batches, as on a drained topic.

        A run stopped by the time cap leaves the daemon busy with the rest of the topic;
        holding back further batches lets ``/metrics`` be scraped on an idle daemon, as it
        is on one that keeps up. Returns once the processed count has been still for
        ``quiet_s`` (the batch in flight is done).
        """
        source = self.daemon_.source

        def drained(max_messages: int, timeout_s: float) -> list[Any]:
            if self._feeds is not None:
                batch = next(self._feeds, None)
                if batch is not None:
                    return batch
                self._feeds = None
            time.sleep(timeout_s)
            return []

        source.poll_batch = drained  # shadows the method on this instance only
        counters = self.daemon_.pipeline.counters
        last, still_since = counters.processed, time.monotonic()
        while time.monotonic() - still_since < quiet_s:
            time.sleep(0.05)
            if counters.processed != last:
                last, still_since = counters.processed, time.monotonic()

    def _ready(self) -> bool:
        return self.daemon_.http is not None and self.daemon_.readiness()[0]

    def _state(self) -> dict[str, Any]:
        # Read before the stop: the revoke at close drops the partitions' state.
        pipeline = self.daemon_.pipeline
        segments = pipeline.segments.snapshot()
        return {
            "segments": len(segments),
            "overflow_events": pipeline.segments.overflow_events,
            "invalid": sum(pipeline.counters.invalid.values()),
            "duplicates": pipeline.counters.duplicates,
            "batches": pipeline.counters.batches,
            "alarms": sum(pipeline.tracker.alarms_total.values()),
            "detectors": sorted(segments[0].bank.detectors) if segments else [],
        }

    def _scrape(self) -> dict[str, Any]:
        port = self.daemon_.http.port
        # The segment exposition behind /metrics (the HTTP server's ``extra`` is its bound
        # ``chunks``): how many segments each render read afresh tells the scrapes apart.
        exposition = self.daemon_.http.extra.__self__
        counters = self.daemon_.pipeline.counters

        def batch_ends() -> None:
            # A kept text read while a batch may have been in progress is read again once
            # a batch has ended (monitor.exposition): wait for one, so that the second scrape
            # reads every segment again and the later ones reuse them all.
            seen = counters.batches
            while counters.batches == seen:
                time.sleep(0.01)

        calls = 0

        def between() -> None:
            nonlocal calls
            calls += 1
            if 3 <= calls < self.spec.scrapes - 1:
                self._feed()
            batch_ends()

        result, body = time_scrapes(
            lambda: _http_get(port, "/metrics"),
            self.spec.scrapes,
            lambda: int(exposition.last_rendered),
            between,
        )
        result["exported_processed"] = _exported_processed(body)
        result["scrape_fed_batches"] = len(self._fed)
        return result

    def _feed(self) -> None:
        """Hand the daemon fresh events until every segment it holds got some, in batches of
        its batch size made as it polls (each event on its segment's partition, no offsets
        to commit), and wait until they are processed."""
        from bench._events import EventFactory
        from monitor.source import Batch, RawMessage

        segments = self.daemon_.pipeline.segments.snapshot()
        where = {(s.run, s.env): s.partition for s in segments}
        factory = EventFactory(self.spec.segments, seed=FED_SEED + len(self._fed))
        size = min(
            FED_PER_SEGMENT * self.spec.segments,
            self.daemon_.settings.pipeline.batch_max_events,
        )
        fed = [0, False]  # events handed out; whether every segment got some

        def batches() -> Iterator[Any]:
            missing = set(where)
            while missing:
                batch = Batch()
                for key, value in factory.messages(size, np.full(size, time.time())):
                    run, _, env = key.decode().partition("|")
                    partition = where.get((run, env))
                    if partition is not None:
                        missing.discard((run, env))
                        batch.append(RawMessage(value, key, partition[0], partition[1], 0, None))
                fed[0] += len(batch)
                yield batch
            fed[1] = True

        start = self.daemon_.pipeline.counters.processed
        self._feeds = batches()
        deadline = time.monotonic() + 300.0
        while not fed[1] or self.daemon_.pipeline.counters.processed < start + fed[0]:
            if time.monotonic() > deadline:
                raise TimeoutError("the daemon did not process the fed events within 300 s")
            time.sleep(0.005)
        self._fed.append(fed[0])


def run_daemon(spec: Spec) -> Result:
    from monitor.daemon import Daemon

    with tempfile.TemporaryDirectory(prefix="bench-state-") as state_dir:
        daemon = Daemon(settings_for(spec, state_dir))
        watcher = Watcher(daemon, spec)
        watcher.start()
        daemon.run()
        watcher.join()
    if watcher.error is not None:
        raise watcher.error
    if spec.latency_samples:
        np.save(spec.latency_samples, np.array(watcher.samples, dtype=float))
    checkpoint = getattr(daemon.settings, "checkpoint", None)
    extra = {**watcher.found, "checkpoint_store": getattr(checkpoint, "store", None)}
    segments = extra.pop("segments")
    return watcher.watch.result("daemon", spec.backend, watcher.processed, segments, extra)
