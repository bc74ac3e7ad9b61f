"""The Alertmanager client's delivery queue: exact drop accounting when the queue is full,
backoff that alerts raised during an outage do not cut short, delivery within one maximum
backoff of the return, re-sends kept out of the queue, and refused alerts that do not block
the others. Alertmanager is a local HTTP server whose answers the tests switch."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from stack import wait_until

from detectors.alarm import Alarm
from monitor.alertmanager import INITIAL_BACKOFF_SECONDS, AlertmanagerClient, next_backoff
from monitor.alerts import AlertTracker
from monitor.metrics import AlertDeliveryCollector

#: The delivery thread works in milliseconds: poll often, give it 15 s.
soon = functools.partial(wait_until, timeout=15, interval=0.01)

ALARM = Alarm("error_rate", "page", 0.2, 0.05, "failure share 25%")


class SwitchableAlertmanager:
    """Answers 503 while ``down``, 400 to a post holding an alert of env ``refuse_env``,
    else 200 after ``delay`` seconds; records every attempt and every accepted alert."""

    def __init__(self) -> None:
        self.down = False
        self.delay = 0.0
        self.refuse_env: str | None = None
        self.attempts: list[float] = []
        self.accepted: list[dict[str, Any]] = []
        self.accepted_at: list[float] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.attempts.append(time.monotonic())
                if fake.down:
                    status = 503
                elif any(a["labels"]["env"] == fake.refuse_env for a in body):
                    status = 400
                else:
                    time.sleep(fake.delay)
                    fake.accepted.extend(body)
                    fake.accepted_at.append(time.monotonic())
                    status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def envs(self) -> list[str]:
        return [a["labels"]["env"] for a in self.accepted]


@pytest.fixture
def am() -> Iterator[SwitchableAlertmanager]:
    fake = SwitchableAlertmanager()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def exported(client: AlertmanagerClient) -> dict[str, float]:
    """The delivery metrics as /metrics exports them."""
    registry = CollectorRegistry()
    registry.register(AlertDeliveryCollector(client))
    return {
        s.name + (f"{{{s.labels['result']}}}" if s.labels else ""): s.value
        for family in registry.collect()
        for s in family.samples
    }


def fire(tracker: AlertTracker, envs: list[str]) -> None:
    for i, env in enumerate(envs):
        tracker.on_alarm("r", env, ALARM, i, 0.0)


def test_backoff_doubles_from_half_a_second_up_to_the_maximum() -> None:
    waits, backoff = [], 0.0
    for _ in range(8):
        backoff = next_backoff(backoff, 10.0)
        waits.append(backoff)
    assert waits == [INITIAL_BACKOFF_SECONDS, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert next_backoff(0.0, 0.2) == 0.2, "a maximum below the first step caps it"


def test_a_full_queue_drops_exactly_the_alerts_that_did_not_fit(
    am: SwitchableAlertmanager,
) -> None:
    am.down = True
    client = AlertmanagerClient(am.url, queue_size=5, max_backoff_seconds=0.2).start()
    tracker = AlertTracker(60, "d.md", [client])
    envs = [f"env{i:02d}" for i in range(12)]
    fire(tracker, envs[:3])
    wait_until(
        lambda: client.sent_error >= 1, timeout=15, interval=0.01
    )  # a post is failing while the rest arrives
    fire(tracker, envs[3:])
    assert client.queue_depth == 5
    soon(lambda: client.sent_error >= 3)
    metrics = exported(client)
    assert metrics["rollout_monitor_alert_queue_dropped_total"] == 7
    assert metrics["rollout_monitor_alert_queue_size"] == 5

    am.down = False
    soon(lambda: client.queue_depth == 0)
    client.close()
    assert sorted(am.envs()) == envs[7:], "the newest five, each delivered once"
    assert client.dropped == 7 and client.rejected == 0


def test_alerts_raised_during_backoff_wait_for_it(am: SwitchableAlertmanager) -> None:
    am.down = True
    max_backoff = 0.4
    client = AlertmanagerClient(am.url, max_backoff_seconds=max_backoff).start()
    tracker = AlertTracker(60, "d.md", [client])
    envs = [f"env{i:03d}" for i in range(150)]
    started = time.monotonic()
    for env in envs:  # one alert every 20 ms for 3 s
        fire(tracker, [env])
        time.sleep(0.02)
    down_for = time.monotonic() - started
    # Each wait lasts at least half the backoff, which is min(0.5 s, max_backoff) or more.
    shortest_wait = 0.5 * min(INITIAL_BACKOFF_SECONDS, max_backoff)
    assert 2 <= len(am.attempts) <= 1 + down_for / shortest_wait, len(am.attempts)
    am.down = False
    soon(lambda: client.queue_depth == 0)
    client.close()
    assert sorted(am.envs()) == envs and client.dropped == 0


def test_queued_alerts_arrive_within_one_maximum_backoff_of_the_return(
    am: SwitchableAlertmanager,
) -> None:
    am.down = True
    max_backoff, timeout = 1.0, 1.0
    client = AlertmanagerClient(
        am.url, max_backoff_seconds=max_backoff, timeout_seconds=timeout
    ).start()
    fire(AlertTracker(60, "d.md", [client]), ["a", "b", "c"])
    wait_until(
        lambda: len(am.attempts) >= 4, timeout=15, interval=0.01
    )  # the backoff has reached its maximum
    am.down = False
    up_at = time.monotonic()
    soon(lambda: client.queue_depth == 0)
    client.close()
    took = am.accepted_at[0] - up_at
    # The wait under way when Alertmanager returned, plus the post itself; the thread
    # scheduling slack is the client's own poll interval.
    assert took <= max_backoff + timeout + 1.0, took
    assert sorted(am.envs()) == ["a", "b", "c"]


def test_a_post_under_way_still_counts_in_the_queue(am: SwitchableAlertmanager) -> None:
    am.delay = 1.0
    client = AlertmanagerClient(am.url).start()
    fire(AlertTracker(60, "d.md", [client]), ["slow"])
    soon(lambda: am.attempts)
    assert client.queue_depth == 1, "the alert is in flight, not yet delivered"
    soon(lambda: client.queue_depth == 0)
    client.close()
    assert am.envs() == ["slow"]


def test_re_sends_of_firing_alerts_stay_out_of_the_queue(am: SwitchableAlertmanager) -> None:
    client = AlertmanagerClient(am.url, resend_seconds=0.2, expire_seconds=5, queue_size=1)
    client.start()
    fire(AlertTracker(60, "d.md", [client]), ["a"])
    soon(lambda: am.accepted)
    am.down = True
    failed_before = len(am.attempts)
    wait_until(
        lambda: len(am.attempts) >= failed_before + 3, timeout=15, interval=0.01
    )  # re-sends failing
    assert client.queue_depth == 0 and client.dropped == 0
    am.down = False
    delivered = len(am.accepted)
    soon(lambda: len(am.accepted) > delivered)
    client.close()
    assert set(am.envs()) == {"a"} and client.dropped == 0


def test_a_refused_alert_does_not_hold_up_the_others(am: SwitchableAlertmanager) -> None:
    am.refuse_env = "bad"
    client = AlertmanagerClient(am.url, max_backoff_seconds=0.2).start()
    fire(AlertTracker(60, "d.md", [client]), ["ok1", "bad", "ok2"])
    soon(lambda: client.queue_depth == 0)
    client.close()
    assert sorted(am.envs()) == ["ok1", "ok2"]
    assert client.rejected == 1 and client.dropped == 0
