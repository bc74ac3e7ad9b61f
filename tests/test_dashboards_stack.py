"""Every dashboard expression and template variable, run against the real Prometheus.

The real daemon consumes a simulated stream (two runs x two environments, an error burst and
malformed messages) from the real broker and serves its metrics on the port Prometheus scrapes
(``DAEMON_PORT``, default 9108); the stream keeps flowing while the queries run, so rates and
increases are not empty. Prometheus: ``PROMETHEUS_URL`` (default
``http://127.0.0.1:$PROMETHEUS_PORT``, 9090), which must load deploy/prometheus/rules/*.yml for
the recorded series. A synthetic exposition built from docs/metrics.md is also checked, so the
metric reference and the dashboards cannot drift apart.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from daemon_proc import DaemonProcess
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector
from stack import Stack

from dashboards import all_panel_queries, load_committed, template_variable_queries
from detectors import DETECTORS as DETECTOR_CLASSES
from monitor.simulate import Fault, SimulationConfig, generate_messages

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_URL = os.environ.get("PROMETHEUS_URL") or (
    f"http://127.0.0.1:{os.environ.get('PROMETHEUS_PORT', '9090')}"
)
DAEMON_PORT = int(os.environ.get("DAEMON_PORT", "9108"))
#: Seconds to wait for scrapes and rule evaluations (the local stack does both every second).
WAIT_SECONDS = float(os.environ.get("DASHBOARD_QUERY_TIMEOUT", "90"))

RUNS = ("sim-run-a", "sim-run-b")
ENVS = ("math", "code")
DETECTORS = {"error_rate": "page", "reward_shift": "warning"}
#: Runs of the real daemon's stream, unique per test session so earlier data cannot count.
REAL_RUNS = tuple(f"dash-{x}-{uuid.uuid4().hex[:6]}" for x in ("a", "b"))
LABEL_VALUES: dict[str, tuple[str, ...]] = {
    "run": RUNS,
    "env": ENVS,
    "status": ("completed", "truncated", "failed", "aborted"),
    "reason": ("invalid_json", "missing_field"),
    "detector": tuple(DETECTORS),
    "topic": ("rl.rollouts",),
    "partition": ("0", "1"),
    "result": ("ok", "error"),
    "version": ("0.0.0+synthetic",),  # replaced by a token per test run
    "python": ("3.11",),
}
#: Counters that would fire an alert rule at once if they grew: they stay at 0.
STILL_COUNTERS = {
    "rollout_monitor_dead_letter_failures_total",
    "rollout_monitor_segment_overflow_events_total",
    "rollout_monitor_alert_queue_dropped_total",
}
#: Counters that grow slowly, so their shares stay under the alert thresholds.
SLOW_COUNTERS = {"rollout_monitor_invalid_events_total"}
QUANTILES = ("0.1", "0.5", "0.9")
BUCKETS = ("0.001", "0.01", "0.1", "1.0", "+Inf")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: str
    labels: tuple[str, ...]


def documented_metrics() -> list[MetricSpec]:
    """The rows of the table in docs/metrics.md."""
    specs = []
    text = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    for row in re.findall(r"^\| `(rollout_monitor_\w+)` \|([^|]*)\|([^|]*)\|", text, re.M):
        name, kind, labels = row
        labels = re.sub(r"\([^)]*\)", "", labels)
        names = tuple(n for n in re.findall(r"`(\w+)`", labels) if n != "quantile")
        specs.append(MetricSpec(name, kind.strip(), names))
    return specs


def label_sets(labels: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Every combination of the simulated values; severity follows the detector."""
    free = [name for name in labels if name != "severity"]
    for combo in itertools.product(*(LABEL_VALUES[name] for name in free)):
        values = dict(zip(free, combo, strict=True))
        if "severity" in labels:
            values["severity"] = DETECTORS[values["detector"]]
        yield tuple(values[name] for name in labels)


class SyntheticDaemon(Collector):
    """Samples for every documented metric; counters grow with the time since start."""

    def __init__(self, specs: Iterable[MetricSpec], version: str) -> None:
        self.specs = list(specs)
        self.version = version
        self.started = time.time()

    def collect(self) -> Iterator[Metric]:
        elapsed = time.time() - self.started + 1.0
        for spec in self.specs:
            yield self._family(spec, elapsed)

    def _family(self, spec: MetricSpec, elapsed: float) -> Metric:
        doc = f"Synthetic {spec.name}."
        labels = list(spec.labels)
        if spec.name == "rollout_monitor_build_info":
            info = GaugeMetricFamily(spec.name, doc, labels=["version", "python", "detectors"])
            info.add_metric([self.version, "3.11", "compiled"], 1.0)
            return info
        if spec.type == "counter":
            counter = CounterMetricFamily(spec.name, doc, labels=labels)
            for i, values in enumerate(label_sets(spec.labels)):
                counter.add_metric(list(values), elapsed * self._counter_rate(spec, values, i))
            return counter
        if spec.type == "gauge":
            gauge = GaugeMetricFamily(spec.name, doc, labels=labels)
            for i, values in enumerate(label_sets(spec.labels)):
                gauge.add_metric(
                    list(values), self._gauge_value(spec, dict(zip(labels, values, strict=True)), i)
                )
            return gauge
        if spec.type == "summary":
            summary = Metric(spec.name, doc, "summary")
            for values in label_sets(spec.labels):
                base = dict(zip(labels, values, strict=True))
                for q in QUANTILES:
                    summary.add_sample(spec.name, {**base, "quantile": q}, float(q) * 100)
                summary.add_sample(spec.name + "_sum", base, elapsed * 50)
                summary.add_sample(spec.name + "_count", base, elapsed)
            return summary
        assert spec.type == "histogram", spec
        histogram = HistogramMetricFamily(spec.name, doc, labels=labels)
        for values in label_sets(spec.labels):
            counts = [(le, elapsed * (i + 1)) for i, le in enumerate(BUCKETS)]
            histogram.add_metric(list(values), counts, sum_value=elapsed * 0.05)
        return histogram

    @staticmethod
    def _counter_rate(spec: MetricSpec, values: tuple[str, ...], index: int) -> float:
        if spec.name in STILL_COUNTERS:
            return 0.0
        if spec.name in SLOW_COUNTERS or "error" in values:
            return 0.001 * (1 + index)
        return 10.0 + index

    def _gauge_value(self, spec: MetricSpec, labels: dict[str, str], index: int) -> float:
        if spec.name == "rollout_monitor_last_event_timestamp_seconds":
            # Event-time gaps of a few seconds: nowhere near RolloutEnvironmentSilent.
            return self.started + (time.time() - self.started) - 5.0 * index
        if spec.name == "rollout_monitor_alert_active":
            firing = (labels["run"], labels["env"], labels["detector"])
            return 1.0 if firing == (RUNS[0], ENVS[0], "error_rate") else 0.0
        if spec.name == "rollout_monitor_detector_threshold":
            return 5.0
        if spec.name == "rollout_monitor_detector_statistic":
            return 1.0 + index
        if spec.name == "rollout_monitor_alert_queue_size":
            return 0.0
        if spec.name == "rollout_monitor_collect_duration_seconds":
            return 0.002
        if spec.name == "rollout_monitor_consumer_lag_messages":
            return 10.0
        return 1.0


def registry(version: str = "0.0.0+synthetic") -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SyntheticDaemon(documented_metrics(), version))
    return registry


def test_synthetic_exposition_covers_the_metric_reference() -> None:
    specs = documented_metrics()
    assert len(specs) >= 20
    text = generate_latest(registry()).decode()
    for spec in specs:
        base = spec.name.removesuffix("_total")
        assert re.search(rf"^# TYPE {base}(_total)? {spec.type}$", text, re.M), spec.name
        assert re.search(rf"^{spec.name}(_sum|_bucket)?[{{ ]", text, re.M), spec.name
    promtool = shutil.which("promtool")
    if promtool is not None:
        lint = subprocess.run(
            [promtool, "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr


# -- against Prometheus ----------------------------------------------------------------------


def prometheus_get(path: str, **params: str) -> Any:
    url = f"{PROMETHEUS_URL}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def instant(expr: str) -> list[dict[str, Any]]:
    data = prometheus_get("/api/v1/query", query=expr)
    result: list[dict[str, Any]] = data["result"]
    return result


def poll(check: Callable[[], bool], deadline: float) -> bool:
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


@pytest.fixture
def synthetic_daemon() -> Iterator[str]:
    """Serve the synthetic exposition where Prometheus scrapes the daemon, and wait until it has
    been scraped three times; the instance label Prometheus gives it.

    ``rollout_monitor_build_info`` carries a version unique to this run, so samples left from
    an earlier run do not count as scrapes.
    """
    try:
        with urllib.request.urlopen(f"{PROMETHEUS_URL}/-/ready", timeout=5) as response:
            ready = response.status == 200
    except (urllib.error.URLError, OSError):
        ready = False
    if not ready:
        pytest.fail(
            f"Prometheus is not ready at {PROMETHEUS_URL}: start the stack (make stack-up) or "
            "set PROMETHEUS_URL; deselect with -m 'not stack'"
        )
    version = f"0.0.0+synthetic.{os.getpid()}.{time.time_ns()}"
    handler = MetricsHandler.factory(registry(version))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", DAEMON_PORT), handler)
    except OSError as exc:
        pytest.fail(f"cannot serve the synthetic daemon on 127.0.0.1:{DAEMON_PORT}: {exc}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    instance = f"127.0.0.1:{DAEMON_PORT}"
    # Rates need two scrapes in their window, recorded series one evaluation after that.
    fresh = f'count_over_time(rollout_monitor_build_info{{version="{version}"}}[1m]) >= 3'
    try:
        if not poll(lambda: bool(instant(fresh)), time.monotonic() + WAIT_SECONDS):
            pytest.fail(f"Prometheus at {PROMETHEUS_URL} did not scrape {instance} 3 times")
        yield instance
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def real_daemon(stack: Stack, kafka_topic: Callable[..., str], tmp_path: Path) -> Iterator[str]:
    """The daemon on ``DAEMON_PORT`` fed a steady simulated stream until the test ends; waits
    until Prometheus has scraped it three times. Yields the instance label."""
    topic = kafka_topic(partitions=2)
    env = {
        "ROLLOUT_MONITOR_KAFKA__BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "ROLLOUT_MONITOR_KAFKA__TOPICS": topic,
        "ROLLOUT_MONITOR_KAFKA__GROUP_ID": "g-" + topic,
        "ROLLOUT_MONITOR_KAFKA__DEAD_LETTER_TOPIC": topic + ".dlq",
        "ROLLOUT_MONITOR_ALERTMANAGER__URL": stack.alertmanager_url,
        "ROLLOUT_MONITOR_PIPELINE__BATCH_MAX_SECONDS": "0.1",
    }
    daemon = DaemonProcess(env, f"127.0.0.1:{DAEMON_PORT}", tmp_path / "daemon.log").start()
    config = SimulationConfig(
        seed=31,
        runs=REAL_RUNS,
        envs=ENVS,
        events=200_000,
        faults=(Fault("error_burst", ENVS[1], 2_000, 0.5), Fault("invalid", ENVS[0], 500, 0.01)),
    )
    stop = threading.Event()
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "linger.ms": 5})

    def feed() -> None:
        for i, (key, value) in enumerate(generate_messages(config)):
            if stop.is_set():
                break
            producer.produce(topic, value=value, key=key)
            if i % 100 == 99:  # about 1,000 events/s
                producer.flush(5)
                stop.wait(0.1)
        producer.flush(5)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    instance = f"127.0.0.1:{DAEMON_PORT}"
    fresh = f'count_over_time(rollout_monitor_events_total{{run="{REAL_RUNS[0]}"}}[1m]) >= 3'
    try:
        if not poll(lambda: bool(instant(fresh)), time.monotonic() + WAIT_SECONDS):
            pytest.fail(f"Prometheus at {PROMETHEUS_URL} did not scrape {instance} 3 times")
        yield instance
    finally:
        stop.set()
        feeder.join(timeout=10)
        assert daemon.stop() == 0, daemon.log_tail()


@pytest.mark.stack
def test_every_panel_query_returns_series(real_daemon: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    queries = [q for d in load_committed().values() for q in all_panel_queries(d)]
    assert len(queries) > 40

    def has_series(expr: str) -> Callable[[], bool]:
        return lambda: bool(instant(expr))

    empty = [q for q in queries if not poll(has_series(q[2]), deadline)]
    assert not empty, "queries without a series:\n" + "\n".join(
        f"  {uid} / {title}: {expr}" for uid, title, expr in empty
    )


@pytest.mark.stack
def test_template_variables_list_the_simulated_segments(real_daemon: str) -> None:
    expected = {
        "run": set(REAL_RUNS),
        "env": set(ENVS),
        "detector": set(DETECTOR_CLASSES),
        "instance": {real_daemon},
    }
    deadline = time.monotonic() + WAIT_SECONDS
    variables = [v for d in load_committed().values() for v in template_variable_queries(d)]
    assert {name for _, name, _, _ in variables} == set(expected)
    missing = []
    for uid, name, selector, label in variables:

        def listed(selector: str = selector, label: str = label, name: str = name) -> bool:
            values = set(prometheus_get(f"/api/v1/label/{label}/values", **{"match[]": selector}))
            return expected[name] <= values

        if not poll(listed, deadline):
            missing.append(f"{uid} ${name}: {selector}")
    assert not missing, "variables without the simulated values: " + ", ".join(missing)
