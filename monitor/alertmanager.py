"""Delivery of alerts to the Alertmanager v2 API, off the consumer's thread.

The consumer only enqueues (``submit`` never blocks); a background thread posts batches to
``/api/v2/alerts``, retries with exponential backoff while Alertmanager is unreachable, re-sends
firing alerts before they expire, and sends ``endsAt`` when an alert resolves. The queue is
bounded: when it is full the oldest transition is dropped and counted.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from datetime import UTC, datetime

from monitor.alerts import Alert

log = logging.getLogger(__name__)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class AlertmanagerClient:
    """Posts alert transitions to Alertmanager from a daemon thread.

    Parameters
    ----------
    url
        Alertmanager base URL, e.g. ``http://127.0.0.1:9093``.
    resend_seconds
        How often firing alerts are posted again (Alertmanager forgets an alert at ``endsAt``).
    expire_seconds
        ``endsAt`` of a firing alert is this far in the future at each post.
    queue_size
        Transitions waiting for delivery at most; beyond it the oldest are dropped.
    """

    def __init__(
        self,
        url: str,
        *,
        resend_seconds: float = 60.0,
        expire_seconds: float = 300.0,
        queue_size: int = 10_000,
        timeout_seconds: float = 5.0,
        max_backoff_seconds: float = 60.0,
        auth_header: str | None = None,
    ) -> None:
        self.endpoint = url.rstrip("/") + "/api/v2/alerts"
        self.resend_seconds = resend_seconds
        self.expire_seconds = expire_seconds
        self.queue_size = queue_size
        self.timeout_seconds = timeout_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._auth_header = auth_header
        self._queue: deque[Alert] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Delivered firing alerts with the time they were last posted; when each was first posted.
        self._firing: dict[tuple[str, str, str, str], tuple[Alert, float]] = {}
        self._started: dict[tuple[str, str, str, str], float] = {}
        self._thread: threading.Thread | None = None
        self.sent_ok = 0
        self.sent_error = 0
        self.dropped = 0
        self.consecutive_failures = 0

    @staticmethod
    def basic_auth(username: str, password: str) -> str:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        return f"Basic {token}"

    # -- consumer side ------------------------------------------------------------------
    def submit(self, alert: Alert) -> None:
        """Enqueue a transition; never blocks."""
        with self._lock:
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(alert)
        self._wake.set()

    def adopt(self, alert: Alert) -> None:
        """Keep re-sending a firing alert taken over from a checkpoint."""
        self.submit(alert)

    def forget(self, segments: set[tuple[str, str]]) -> None:
        """Stop re-sending the alerts of segments another consumer now owns."""
        with self._lock:
            kept = [a for a in self._queue if (a.run, a.env) not in segments]
            self._queue.clear()
            self._queue.extend(kept)
        for key in [k for k in list(self._firing) if k[:2] in segments]:
            self._firing.pop(key, None)
            self._started.pop(key, None)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> AlertmanagerClient:
        self._thread = threading.Thread(target=self._run, name="alertmanager", daemon=True)
        self._thread.start()
        return self

    def close(self, drain_seconds: float = 5.0) -> None:
        """Stop the thread after trying to deliver what is queued for ``drain_seconds``."""
        deadline = time.monotonic() + drain_seconds
        while self._queue and time.monotonic() < deadline and self.consecutive_failures == 0:
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_seconds + 1)

    # -- delivery thread -----------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.wait(timeout=backoff or min(1.0, self.resend_seconds))
            self._wake.clear()
            if self._stop.is_set():
                break
            batch = self._take_batch()
            if not batch:
                continue
            if self._post(batch):
                backoff = 0.0
                self._mark_sent(batch)
            else:
                self._requeue(batch)
                backoff = min(self.max_backoff_seconds, max(0.5, backoff * 2))

    def _take_batch(self) -> list[Alert]:
        now = time.time()
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
        queued = {a.key for a in batch}
        for key, (alert, sent_at) in list(self._firing.items()):
            if key not in queued and now - sent_at >= self.resend_seconds:
                batch.append(alert)
        return batch

    def _requeue(self, batch: list[Alert]) -> None:
        with self._lock:
            for alert in reversed(batch):
                if len(self._queue) >= self.queue_size:
                    self.dropped += 1
                    continue
                self._queue.appendleft(alert)

    def _mark_sent(self, batch: list[Alert]) -> None:
        now = time.time()
        for alert in batch:
            if alert.status == "firing":
                self._firing[alert.key] = (alert, now)
            else:
                self._firing.pop(alert.key, None)
                self._started.pop(alert.key, None)

    def _payload(self, batch: list[Alert]) -> bytes:
        now = time.time()
        items = []
        for alert in batch:
            ends = now + self.expire_seconds if alert.status == "firing" else now
            starts = self._started.setdefault(alert.key, now)
            items.append(
                {
                    "labels": alert.labels(),
                    "annotations": alert.annotations(),
                    "startsAt": _iso(min(starts, now)),
                    "endsAt": _iso(ends),
                }
            )
        return json.dumps(items).encode()

    def _post(self, batch: list[Alert]) -> bool:
        request = urllib.request.Request(self.endpoint, data=self._payload(batch), method="POST")
        request.add_header("Content-Type", "application/json")
        if self._auth_header:
            request.add_header("Authorization", self._auth_header)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                response.read()
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            self.sent_error += 1
            self.consecutive_failures += 1
            log.warning("alertmanager post failed (%d alerts): %s", len(batch), exc)
            return False
        self.sent_ok += 1
        self.consecutive_failures = 0
        return True
