"""Alarm to alert mapping, and delivery to an Alertmanager-compatible endpoint."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from detectors.alarm import Alarm
from monitor.alertmanager import AlertmanagerClient
from monitor.alerts import AlertLog, AlertTracker, alertname

ALARM = Alarm("error_rate", "page", 0.2, 0.05, "failure share 25%")


def _tracker(log: AlertLog) -> AlertTracker:
    return AlertTracker(resolve_after_seconds=60, runbook_base_url="docs/d.md", sinks=[log])


def test_alertname_is_camel_case() -> None:
    assert alertname("reward_shift") == "RolloutRewardShift"


def test_one_alert_per_change_and_resolve_after_healthy_span() -> None:
    log = AlertLog()
    tracker = _tracker(log)
    tracker.on_alarm("r", "math", ALARM, event_index=10, ts=1000.0)
    tracker.on_alarm("r", "math", ALARM, event_index=20, ts=1010.0)
    assert [a.status for a in log.alerts] == ["firing"]
    first = log.alerts[0]
    assert first.labels() == {
        "alertname": "RolloutErrorRate",
        "detector": "error_rate",
        "severity": "page",
        "run": "r",
        "env": "math",
    }
    assert first.runbook_url == "docs/d.md#error_rate"
    assert set(first.annotations()) == {"summary", "description", "runbook_url"}
    # 59 s after the last alarm: still firing; detector inactive and 60 s: resolved.
    tracker.sweep(lambda run, env: 1069.0, lambda run, env, d: False, event_index=30)
    assert len(log.alerts) == 1
    tracker.sweep(lambda run, env: 1070.0, lambda run, env, d: True, event_index=31)
    assert len(log.alerts) == 1, "a detector still active keeps the alert firing"
    tracker.sweep(lambda run, env: 1070.0, lambda run, env, d: False, event_index=32)
    assert [a.status for a in log.alerts] == ["firing", "resolved"]
    assert log.alerts[1].fired_event_index == 10
    assert tracker.alarms_total[("r", "math", "error_rate", "page")] == 2
    # A new alarm after resolution is a new change: a new alert.
    tracker.on_alarm("r", "math", ALARM, event_index=40, ts=1100.0)
    assert [a.status for a in log.alerts] == ["firing", "resolved", "firing"]


def test_segments_and_severities_are_separate_alerts() -> None:
    log = AlertLog()
    tracker = _tracker(log)
    tracker.on_alarm("r", "math", ALARM, 1, 1.0)
    tracker.on_alarm("r", "code", ALARM, 2, 1.0)
    tracker.on_alarm("r", "math", Alarm("reward_shift", "info", 9, 8, "rise", "up"), 3, 1.0)
    assert len(tracker.active()) == 3


class _FakeAlertmanager(BaseHTTPRequestHandler):
    posts: list[list[dict[str, Any]]]
    fail: bool

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).fail:
            self.send_response(503)
            self.end_headers()
            return
        type(self).posts.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture()
def fake_am() -> Iterator[tuple[str, type[_FakeAlertmanager]]]:
    handler = type("H", (_FakeAlertmanager,), {"posts": [], "fail": False})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_client_posts_resends_and_resolves(fake_am: tuple[str, Any]) -> None:
    url, handler = fake_am
    log = AlertLog()
    client = AlertmanagerClient(url, resend_seconds=0.3, expire_seconds=5).start()
    tracker = AlertTracker(60, "d.md", [log, client])
    tracker.on_alarm("r", "math", ALARM, 1, 0.0)
    _wait(lambda: len(handler.posts) >= 2)  # first post, then a re-send before expiry
    first = handler.posts[0][0]
    assert first["labels"]["detector"] == "error_rate"
    assert first["endsAt"] > first["startsAt"]
    assert handler.posts[1][0]["startsAt"] == first["startsAt"]
    tracker.sweep(lambda r, e: 100.0, lambda r, e, d: False, 2)
    _wait(
        lambda: any(
            p[0]["endsAt"] <= p[0]["startsAt"] or p[0]["endsAt"] < first["endsAt"]
            for p in handler.posts[2:]
        )
    )
    client.close()
    assert client.sent_ok >= 3 and client.sent_error == 0


def test_client_retries_with_backoff_and_never_blocks(fake_am: tuple[str, Any]) -> None:
    url, handler = fake_am
    handler.fail = True
    client = AlertmanagerClient(url, queue_size=3, max_backoff_seconds=0.2).start()
    tracker = AlertTracker(60, "d.md", [client])
    started = time.perf_counter()
    for i in range(10):
        tracker.on_alarm("r", f"env{i}", ALARM, i, 0.0)
    assert time.perf_counter() - started < 0.5, "submitting must not wait for delivery"
    _wait(lambda: client.sent_error >= 2)
    assert client.queue_depth <= 3
    assert client.dropped >= 7
    handler.fail = False
    _wait(lambda: handler.posts and client.queue_depth == 0)
    delivered = {a["labels"]["env"] for post in handler.posts for a in post}
    assert delivered == {"env7", "env8", "env9"}, "the newest transitions survive the bound"
    client.close()


def test_unreachable_alertmanager_counts_errors() -> None:
    client = AlertmanagerClient("http://127.0.0.1:9", max_backoff_seconds=0.1, timeout_seconds=0.5)
    client.start()
    AlertTracker(60, "d.md", [client]).on_alarm("r", "e", ALARM, 0, 0.0)
    _wait(lambda: client.sent_error >= 1)
    assert client.queue_depth == 1
    client.close(drain_seconds=0)
