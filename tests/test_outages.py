"""Outages the daemon must ride out: Alertmanager down while an alert fires (20 seconds, and
3 minutes while several runs raise alerts), and the broker stopped mid-stream.

Alertmanager: the daemon posts to a port where nothing listens; the alert waits in the
delivery queue (errors counted, backoff capped low for the test) until the test starts a
real Alertmanager on that port, which notifies a receiver of the test's own.

Alertmanager for minutes: a private Alertmanager that has delivered an alert is stopped for
3 minutes while three runs raise alerts a minute apart; the alerts wait in the queue, the
retries follow the backoff, and every alert reaches the receiver within one maximum backoff
once Alertmanager is back, nothing dropped.

Broker: a private broker (tests/private_kafka.py) is stopped for 30 seconds between the two
halves of a stream; the daemon stays up, serves /metrics, reports not-ready, and processes
every event once the broker is back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from daemon_proc import DaemonProcess
from private_kafka import PrivateKafka, free_port, private_kafka_fixture
from stack import Stack, create_topic, http_problem, wait_until

from monitor.simulate import Fault, SimulationConfig, generate_messages

pytestmark = [pytest.mark.stack, pytest.mark.slow]
__all__ = ["private_kafka_fixture"]  # the ``private_kafka`` fixture

ALERTMANAGER_BIN = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
#: How long Alertmanager stays down once the daemon has failed to deliver.
AM_DOWN_SECONDS = 20.0
#: How long the broker stays down.
BROKER_DOWN_SECONDS = 30.0
#: Seconds without a sign of the broker after which the daemon is not ready
#: (monitor/source/_health.py DEFAULT_STALE_AFTER_S), plus the 0.5 s state refresh and slack.
READINESS_WINDOW = 15.0 + 5.0


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0, "producer could not deliver every message"
    return len(messages)


def metric(daemon: DaemonProcess, name: str, **labels: str) -> float:
    """A sample of the daemon's /metrics; if it does not answer, fail with how the daemon ended."""
    try:
        return daemon.sample(name, labels)
    except OSError as exc:
        raise AssertionError(f"/metrics does not answer ({exc}); {how_it_ended(daemon)}") from None


def how_it_ended(daemon: DaemonProcess, wait_s: float = 20.0) -> str:
    """The daemon's exit code and the end of its log without the Kafka clients' noise."""
    assert daemon.proc is not None
    try:
        code: int | str = daemon.proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        code = "still running"
    lines = daemon.log_path.read_text(errors="replace").splitlines()
    quiet = [line for line in lines if "rdkafka" not in line and "producer error" not in line]
    return f"exit code {code}; log:\n" + "\n".join(quiet[-30:])


def readyz_status(url: str) -> str | None:
    """None when /readyz answers 200, else why not (``HTTP 503``, a connection error)."""
    return http_problem(url + "/readyz")


# -- Alertmanager down ---------------------------------------------------------------------


class NotificationReceiver:
    """Records the webhook notifications Alertmanager sends."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self) -> list[dict[str, Any]]:
        return [alert for note in list(self.notifications) for alert in note.get("alerts", [])]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[NotificationReceiver]:
    server = NotificationReceiver()
    yield server
    server.close()


class Alertmanager:
    """The Alertmanager binary with its own config and storage, on a chosen port."""

    def __init__(self, workdir: Path, port: int, webhook_url: str) -> None:
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(
            "route:\n"
            "  receiver: test\n"
            "  group_by: [alertname, run, env]\n"
            "  group_wait: 0s\n"
            "  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: test\n"
            "    webhook_configs:\n"
            f"      - url: {webhook_url}\n"
            "        send_resolved: true\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        with (self.workdir / "alertmanager.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    ALERTMANAGER_BIN,
                    f"--config.file={self.config}",
                    f"--storage.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                ],
                stdout=log,
                stderr=log,
            )
        wait_until(
            lambda: http_problem(self.url + "/-/ready") is None,
            timeout=timeout_s,
            message=f"Alertmanager on {self.url}",
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def test_alert_raised_while_alertmanager_is_down_is_delivered_once_it_is_up(
    stack: Stack,
    kafka_topic: Callable[..., str],
    receiver: NotificationReceiver,
    tmp_path: Path,
) -> None:
    assert Path(ALERTMANAGER_BIN).exists(), "prometheus-alertmanager is missing: deploy/install.sh"
    topic = kafka_topic(partitions=2)
    run = f"amdown-{uuid.uuid4().hex[:8]}"
    am = Alertmanager(tmp_path / "am", free_port(), receiver.url)
    env = {
        "ROLLOUT_MONITOR_KAFKA__BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "ROLLOUT_MONITOR_KAFKA__TOPICS": topic,
        "ROLLOUT_MONITOR_KAFKA__GROUP_ID": "g-" + run,
        "ROLLOUT_MONITOR_KAFKA__DEAD_LETTER_TOPIC": topic + ".dlq",
        "ROLLOUT_MONITOR_ALERTMANAGER__URL": am.url,
        "ROLLOUT_MONITOR_ALERTMANAGER__MAX_BACKOFF_SECONDS": "2",
        "ROLLOUT_MONITOR_ALERTMANAGER__TIMEOUT_SECONDS": "2",
        "ROLLOUT_MONITOR_PIPELINE__BATCH_MAX_SECONDS": "0.1",
    }
    daemon = DaemonProcess(env, f"127.0.0.1:{free_port()}", tmp_path / "daemon.log").start()
    try:
        produce(
            stack.kafka_bootstrap,
            topic,
            list(
                generate_messages(
                    SimulationConfig(
                        seed=31,
                        runs=(run,),
                        events=6000,
                        faults=(Fault("error_burst", "code-sandbox", 2000, 0.5),),
                    )
                )
            ),
        )
        wait_until(
            lambda: metric(daemon, "rollout_monitor_alerts_sent_total", result="error") > 0,
            timeout=60,
            message="a failed post to the absent Alertmanager",
        )
        down_since = time.monotonic()
        first_errors = metric(daemon, "rollout_monitor_alerts_sent_total", result="error")
        assert metric(daemon, "rollout_monitor_alert_queue_size") > 0
        assert metric(daemon, "rollout_monitor_alerts_sent_total", result="ok") == 0
        wait_until(
            lambda: time.monotonic() - down_since >= AM_DOWN_SECONDS,
            timeout=AM_DOWN_SECONDS + 5,
            interval=1.0,
        )
        errors = metric(daemon, "rollout_monitor_alerts_sent_total", result="error")
        queued = metric(daemon, "rollout_monitor_alert_queue_size")
        assert errors > first_errors, "the daemon keeps retrying"
        assert queued > 0, "the alert is still waiting"
        assert readyz_status(daemon.url) is None, "Alertmanager down does not make it unready"

        am.start()
        up_at = time.monotonic()
        wait_until(
            lambda: [
                a
                for a in receiver.alerts()
                if a["labels"].get("run") == run and a["status"] == "firing"
            ],
            timeout=30,
            message="the queued alert reached the receiver through Alertmanager",
        )
        delivered_after = time.monotonic() - up_at
        wait_until(
            lambda: metric(daemon, "rollout_monitor_alert_queue_size") == 0,
            timeout=15,
            message="the delivery queue drained",
        )
        assert metric(daemon, "rollout_monitor_alerts_sent_total", result="ok") > 0
        assert metric(daemon, "rollout_monitor_alert_queue_dropped_total") == 0
        print(
            f"Alertmanager down {AM_DOWN_SECONDS:.0f}s: {errors:.0f} failed posts, "
            f"{queued:.0f} queued; delivered {delivered_after:.1f}s after it came up"
        )
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
        am.stop()


# -- Alertmanager down for minutes ----------------------------------------------------------

#: The long outage, and the delivery settings it runs with.
LONG_AM_DOWN_SECONDS = 180.0
LONG_MAX_BACKOFF_SECONDS = 10.0
LONG_TIMEOUT_SECONDS = 2.0
#: Seconds into the long outage at which a new run with two faults starts raising alerts.
RAISE_AT = (0.0, 60.0, 120.0)
#: How often the test samples /metrics and Alertmanager's API.
POLL_SECONDS = 0.5
#: The daemon's delivery thread wakes at least this often (monitor/alertmanager.py).
CLIENT_POLL_SECONDS = 1.0


def fault_stream(run: str, seed: int) -> list[tuple[bytes, bytes]]:
    """6,000 events of one run whose code sandbox fails and whose tool harness truncates."""
    faults = (
        Fault("error_burst", "code-sandbox", 2000, 0.5),
        Fault("truncation", "tool-use", 2000, 0.5),
    )
    return list(
        generate_messages(SimulationConfig(seed=seed, runs=(run,), events=6000, faults=faults))
    )


def most_failed_posts(down_seconds: float, max_backoff: float) -> int:
    """Posts a client can make in ``down_seconds`` if every wait is as short as the jitter
    allows (half the backoff, which starts at 0.5 s and doubles up to ``max_backoff``)."""
    posts, backoff, elapsed = 1, 0.0, 0.0
    while True:
        backoff = min(max_backoff, max(0.5, backoff * 2))
        elapsed += 0.5 * backoff
        if elapsed > down_seconds:
            return posts
        posts += 1


def wait_processed(daemon: DaemonProcess, total: int) -> None:
    wait_until(
        lambda: metric(daemon, "rollout_monitor_events_processed_total") >= total,
        timeout=60,
        interval=POLL_SECONDS,
        message=f"{total} events processed",
    )


def firing_in_file(path: Path, runs: set[str]) -> set[tuple[str, str, str]]:
    """(run, env, alertname) of the firing transitions the daemon wrote to its alerts file."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {
        (r["run"], r["env"], r["alertname"])
        for r in records
        if r["status"] == "firing" and r["run"] in runs
    }


def held_by(am: Alertmanager, runs: set[str]) -> set[tuple[str, str, str]]:
    """(run, env, alertname) of the alerts Alertmanager holds for ``runs``."""
    with urllib.request.urlopen(am.url + "/api/v2/alerts", timeout=5) as response:
        alerts = json.loads(response.read())
    return {
        (a["labels"]["run"], a["labels"]["env"], a["labels"]["alertname"])
        for a in alerts
        if a["labels"].get("run") in runs
    }


def test_alerts_raised_during_a_3_minute_alertmanager_outage_are_all_delivered(
    stack: Stack,
    kafka_topic: Callable[..., str],
    receiver: NotificationReceiver,
    tmp_path: Path,
) -> None:
    assert Path(ALERTMANAGER_BIN).exists(), "prometheus-alertmanager is missing: deploy/install.sh"
    topic = kafka_topic(partitions=2)
    tag = uuid.uuid4().hex[:6]
    before_run = f"amlong-before-{tag}"
    outage_runs = [f"amlong-{i}-{tag}" for i in range(len(RAISE_AT))]
    am = Alertmanager(tmp_path / "am", free_port(), receiver.url)
    alerts_file = tmp_path / "alerts.jsonl"
    env = {
        "ROLLOUT_MONITOR_KAFKA__BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "ROLLOUT_MONITOR_KAFKA__TOPICS": topic,
        "ROLLOUT_MONITOR_KAFKA__GROUP_ID": "g-amlong-" + tag,
        "ROLLOUT_MONITOR_KAFKA__DEAD_LETTER_TOPIC": topic + ".dlq",
        "ROLLOUT_MONITOR_ALERTMANAGER__URL": am.url,
        "ROLLOUT_MONITOR_ALERTMANAGER__MAX_BACKOFF_SECONDS": str(LONG_MAX_BACKOFF_SECONDS),
        "ROLLOUT_MONITOR_ALERTMANAGER__TIMEOUT_SECONDS": str(LONG_TIMEOUT_SECONDS),
        "ROLLOUT_MONITOR_ALERTMANAGER__ALERTS_FILE": str(alerts_file),
        # Alerts keep firing through the test: each one must reach the receiver as firing.
        "ROLLOUT_MONITOR_DETECTORS__RESOLVE_AFTER_SECONDS": "1e9",
        "ROLLOUT_MONITOR_PIPELINE__BATCH_MAX_SECONDS": "0.1",
    }
    am.start()
    daemon = DaemonProcess(env, f"127.0.0.1:{free_port()}", tmp_path / "daemon.log").start()
    try:
        # Working delivery first, so the outage interrupts a delivering daemon.
        produced = produce(stack.kafka_bootstrap, topic, fault_stream(before_run, seed=50))
        wait_until(
            lambda: any(a["labels"].get("run") == before_run for a in receiver.alerts()),
            timeout=60,
            message="an alert delivered before the outage",
        )
        wait_processed(daemon, produced)
        am.stop()
        down_at = time.monotonic()
        errors_at_down = metric(daemon, "rollout_monitor_alerts_sent_total", result="error")
        ok_at_down = metric(daemon, "rollout_monitor_alerts_sent_total", result="ok")

        queue_sizes: list[float] = []
        for i, (run, offset) in enumerate(zip(outage_runs, RAISE_AT, strict=True)):
            time.sleep(max(0.0, down_at + offset - time.monotonic()))
            produced += produce(stack.kafka_bootstrap, topic, fault_stream(run, seed=51 + i))
            wait_processed(daemon, produced)
            queue_sizes.append(metric(daemon, "rollout_monitor_alert_queue_size"))
        while time.monotonic() - down_at < LONG_AM_DOWN_SECONDS:
            assert daemon.proc is not None and daemon.proc.poll() is None, how_it_ended(daemon)
            queue_sizes.append(metric(daemon, "rollout_monitor_alert_queue_size"))
            time.sleep(POLL_SECONDS)
        down_for = time.monotonic() - down_at
        raised = firing_in_file(alerts_file, set(outage_runs))
        failed_posts = (
            metric(daemon, "rollout_monitor_alerts_sent_total", result="error") - errors_at_down
        )
        queued = metric(daemon, "rollout_monitor_alert_queue_size")
        assert {run for run, _, _ in raised} == set(outage_runs), "every run raised alerts"
        assert len(raised) >= 2 * len(outage_runs), raised
        assert min(queue_sizes) > 0 and queued >= len(raised), "the alerts wait in the queue"
        assert metric(daemon, "rollout_monitor_alerts_sent_total", result="ok") == ok_at_down
        assert 1 <= failed_posts <= most_failed_posts(down_for, LONG_MAX_BACKOFF_SECONDS), (
            "the retries follow the backoff, whatever number of alerts arrives"
        )
        assert readyz_status(daemon.url) is None, "Alertmanager down does not make it unready"

        am.start()
        up_at = time.monotonic()
        wait_until(
            lambda: held_by(am, set(outage_runs)) >= raised,
            timeout=60,
            interval=POLL_SECONDS,
            message="Alertmanager holds every alert raised during the outage",
        )
        delivered_after = time.monotonic() - up_at
        wait_until(
            lambda: (
                {
                    (a["labels"]["run"], a["labels"]["env"], a["labels"]["alertname"])
                    for a in receiver.alerts()
                    if a["status"] == "firing"
                }
                >= raised
            ),
            timeout=60,
            interval=POLL_SECONDS,
            message="the receiver was notified of every alert raised during the outage",
        )
        notified_after = time.monotonic() - up_at
        wait_until(
            lambda: metric(daemon, "rollout_monitor_alert_queue_size") == 0,
            timeout=30,
            message="the delivery queue drained",
        )
        dropped = metric(daemon, "rollout_monitor_alert_queue_dropped_total")
        assert dropped == 0
        print(
            f"Alertmanager down {down_for:.0f}s: {len(raised)} alerts raised in "
            f"{len(outage_runs)} bursts, queue {min(queue_sizes):.0f}-{max(queue_sizes):.0f}, "
            f"{failed_posts:.0f} failed posts (at most "
            f"{most_failed_posts(down_for, LONG_MAX_BACKOFF_SECONDS)} by the backoff); held by "
            f"Alertmanager {delivered_after:.1f}s and notified {notified_after:.1f}s after it "
            f"returned; dropped {dropped:.0f}"
        )
        # The wait under way when Alertmanager returned, one post, and the two pollings.
        assert delivered_after <= (
            LONG_MAX_BACKOFF_SECONDS + LONG_TIMEOUT_SECONDS + CLIENT_POLL_SECONDS + POLL_SECONDS
        )
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
        am.stop()


# -- broker down ---------------------------------------------------------------------------

STREAM_EVENTS = 20_000


def test_daemon_rides_out_a_30s_broker_outage_without_losing_events(
    private_kafka: PrivateKafka, tmp_path: Path
) -> None:
    bootstrap = private_kafka.bootstrap
    topic = f"outage-{uuid.uuid4().hex[:12]}"
    create_topic(bootstrap, topic, partitions=4)
    create_topic(bootstrap, topic + ".dlq", partitions=1)
    run = f"outage-{uuid.uuid4().hex[:8]}"
    messages = list(generate_messages(SimulationConfig(seed=41, runs=(run,), events=STREAM_EVENTS)))
    half = len(messages) // 2
    env = {
        "ROLLOUT_MONITOR_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "ROLLOUT_MONITOR_KAFKA__TOPICS": topic,
        "ROLLOUT_MONITOR_KAFKA__GROUP_ID": "g-" + run,
        "ROLLOUT_MONITOR_KAFKA__DEAD_LETTER_TOPIC": topic + ".dlq",
        "ROLLOUT_MONITOR_ALERTMANAGER__URL": "",
        "ROLLOUT_MONITOR_PIPELINE__BATCH_MAX_SECONDS": "0.1",
        "ROLLOUT_MONITOR_PIPELINE__COMMIT_EVERY_SECONDS": "1",
    }
    daemon = DaemonProcess(env, f"127.0.0.1:{free_port()}", tmp_path / "daemon.log").start()
    try:
        produce(bootstrap, topic, messages[:half])
        wait_until(
            lambda: metric(daemon, "rollout_monitor_events_processed_total") >= half,
            timeout=60,
            message="the first half was processed",
        )
        stop_took = private_kafka.stop()
        down_at = time.monotonic()

        # Down: alive, /metrics served, /readyz turns 503 within the staleness window.
        wait_until(
            lambda: readyz_status(daemon.url) == "HTTP 503",
            timeout=READINESS_WINDOW,
            interval=0.5,
            message="/readyz answers 503 with the broker down",
        )
        unready_after = time.monotonic() - down_at
        while time.monotonic() - down_at < BROKER_DOWN_SECONDS:
            assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log_tail()
            assert metric(daemon, "rollout_monitor_events_processed_total") == half
            assert metric(daemon, "rollout_monitor_ready") == 0
            time.sleep(1.0)
        assert readyz_status(daemon.url) == "HTTP 503"

        private_kafka.start()
        up_at = time.monotonic()
        produce(bootstrap, topic, messages[half:])
        wait_until(
            lambda: metric(daemon, "rollout_monitor_events_processed_total") >= len(messages),
            timeout=90,
            interval=0.5,
            message="every event was processed after the restart",
        )
        caught_up_after = time.monotonic() - up_at
        wait_until(
            lambda: readyz_status(daemon.url) is None,
            timeout=READINESS_WINDOW,
            interval=0.5,
            message="/readyz is ready again",
        )
        ready_after = time.monotonic() - up_at
        processed = metric(daemon, "rollout_monitor_events_processed_total")
        duplicates = metric(daemon, "rollout_monitor_duplicate_events_total")
        invalid = metric(daemon, "rollout_monitor_invalid_events_total")
        print(
            f"broker SIGTERM took {stop_took:.1f}s; not ready {unready_after:.1f}s after; "
            f"down {BROKER_DOWN_SECONDS:.0f}s; caught up {caught_up_after:.1f}s and ready "
            f"{ready_after:.1f}s after the restart; processed {processed:.0f}, "
            f"duplicates {duplicates:.0f}, invalid {invalid:.0f}"
        )
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_tail()
    assert daemon.processed_at_stop() == len(messages)
    assert processed == len(messages) and invalid == 0
    assert duplicates == 0, "nothing was read twice"
