"""Delivery of alerts to the Alertmanager v2 API, off the consumer's thread.

The consumer only enqueues (``submit`` never blocks); a background thread posts batches to
``/api/v2/alerts``, re-sends firing alerts before they expire, and sends ``endsAt`` when an
alert resolves.

While Alertmanager is unreachable (or answers 5xx, 401, 403, 404, 408, 429) the transitions
stay in the bounded queue and the thread retries with exponential backoff (0.5 s doubling up
to ``max_backoff_seconds``, each wait jittered to 50-100 %); alerts raised meanwhile do not cut
the wait short. So once Alertmanager is back the queue is delivered within one maximum backoff
plus one request timeout. When the queue is full the oldest transition is dropped and counted
in ``dropped``: every submitted transition ends up delivered, dropped, rejected (a 400 or 422
answer, which no retry can fix; logged and counted in ``rejected``) or forgotten (its segment
moved to another consumer).
"""

from __future__ import annotations

import base64
import json
import logging
import random
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from monitor.alerts import Alert

log = logging.getLogger(__name__)

#: First wait after a failed post; doubled after each further failure.
INITIAL_BACKOFF_SECONDS = 0.5
#: HTTP answers that mean the payload itself is refused: retrying the same alerts cannot help.
REJECTING_STATUSES = frozenset({400, 422})

AlertKey = tuple[str, str, str, str]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def next_backoff(previous: float, maximum: float) -> float:
    """The backoff after one more failure: 0.5 s, then doubling, never above ``maximum``."""
    return min(maximum, max(INITIAL_BACKOFF_SECONDS, previous * 2))


class Outcome(Enum):
    DELIVERED = "delivered"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class _Queued:
    """A transition waiting for delivery, with the wall times it covers."""

    seq: int
    alert: Alert
    starts_at: float
    ended_at: float  # when a resolved transition was raised; unused for firing ones


def tls_context(verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    """TLS settings for posting to Alertmanager: the system's trusted CAs, or only
    ``ca_file``'s when given; no certificate or host name check when ``verify`` is false."""
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)


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
    timeout_seconds
        Timeout of one post.
    max_backoff_seconds
        Longest wait between two attempts while Alertmanager is unreachable.
    auth_header
        Value of the ``Authorization`` header, if any.
    ssl_context
        TLS settings of ``https://`` posts (:func:`tls_context`); None: Python's defaults.
    batch_size
        Transitions per post at most.
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
        ssl_context: ssl.SSLContext | None = None,
        batch_size: int = 500,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be at least 1")
        self.endpoint = url.rstrip("/") + "/api/v2/alerts"
        self.resend_seconds = resend_seconds
        self.expire_seconds = expire_seconds
        self.queue_size = queue_size
        self.timeout_seconds = timeout_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.batch_size = batch_size
        self._auth_header = auth_header
        self._ssl_context = ssl_context
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Pending transitions in submission order; the head stays queued while it is posted.
        self._queue: deque[_Queued] = deque()
        self._seq = 0
        self._in_flight_upto = -1  # highest seq of the post under way
        self._evicted: list[_Queued] = []  # in-flight transitions pushed out by newer ones
        self._started: dict[AlertKey, float] = {}  # when each firing alert began
        # Delivered firing alerts with the time each was last posted, for the re-sends.
        self._firing: dict[AlertKey, tuple[_Queued, float]] = {}
        self.sent_ok = 0
        self.sent_error = 0
        self.dropped = 0
        self.rejected = 0
        self.consecutive_failures = 0

    @staticmethod
    def basic_auth(username: str, password: str) -> str:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        return f"Basic {token}"

    # -- consumer side ------------------------------------------------------------------
    def submit(self, alert: Alert) -> None:
        """Enqueue a transition; never blocks."""
        now = time.time()
        with self._lock:
            if alert.status == "firing":
                starts = self._started.setdefault(alert.key, now)
            else:
                starts = self._started.pop(alert.key, now)
            if len(self._queue) >= self.queue_size:
                oldest = self._queue.popleft()
                if oldest.seq <= self._in_flight_upto:
                    self._evicted.append(oldest)  # counted once its post's outcome is known
                else:
                    self.dropped += 1
            self._seq += 1
            self._queue.append(_Queued(self._seq, alert, starts, now))
        self._wake.set()

    def adopt(self, alert: Alert) -> None:
        """Keep re-sending a firing alert taken over from a checkpoint."""
        self.submit(alert)

    def forget(self, segments: set[tuple[str, str]]) -> None:
        """Stop re-sending the alerts of segments another consumer now owns."""
        with self._lock:
            kept = [q for q in self._queue if (q.alert.run, q.alert.env) not in segments]
            self._queue.clear()
            self._queue.extend(kept)
            for key in [k for k in self._firing if k[:2] in segments]:
                del self._firing[key]
            for key in [k for k in self._started if k[:2] in segments]:
                del self._started[key]

    @property
    def queue_depth(self) -> int:
        """Transitions waiting for delivery, including those of a post under way."""
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
        retry_at = 0.0  # monotonic time before which nothing is posted
        poll = min(1.0, self.resend_seconds)
        while not self._stop.is_set():
            wait = retry_at - time.monotonic()
            self._wake.wait(timeout=wait if wait > 0 else poll)
            self._wake.clear()
            if self._stop.is_set():
                break
            if time.monotonic() < retry_at:
                continue  # an alert arrived during the backoff: it waits like the others
            queued, resends = self._next_batch()
            if not queued and not resends:
                continue
            outcome = self._deliver(queued, resends)
            if outcome is Outcome.FAILED:
                backoff = next_backoff(backoff, self.max_backoff_seconds)
                retry_at = time.monotonic() + backoff * random.uniform(0.5, 1.0)
            else:
                backoff = 0.0
                if self._queue:
                    self._wake.set()  # more than one batch was waiting

    def _next_batch(self) -> tuple[list[_Queued], list[_Queued]]:
        """The queue's head (distinct alerts, so each post holds one state per alert) and
        the delivered firing alerts due for a re-send."""
        now = time.time()
        with self._lock:
            batch: list[_Queued] = []
            keys: set[AlertKey] = set()
            for entry in self._queue:
                if len(batch) >= self.batch_size or entry.alert.key in keys:
                    break
                batch.append(entry)
                keys.add(entry.alert.key)
            self._in_flight_upto = batch[-1].seq if batch else -1
            pending = {q.alert.key for q in self._queue}
            resends = [
                entry
                for key, (entry, sent_at) in self._firing.items()
                if key not in pending and now - sent_at >= self.resend_seconds
            ]
        return batch, resends

    def _deliver(self, queued: list[_Queued], resends: list[_Queued]) -> Outcome:
        batch = queued + resends
        outcome = self._post(batch)
        refused: set[int] = set()
        if outcome is Outcome.REJECTED:
            # Post the alerts one by one so that only the refused ones are lost.
            results = [self._post([entry]) for entry in batch] if len(batch) > 1 else [outcome]
            refused = {id(e) for e, r in zip(batch, results, strict=True) if r is Outcome.REJECTED}
            outcome = Outcome.FAILED if Outcome.FAILED in results else Outcome.DELIVERED
        if outcome is Outcome.FAILED:
            with self._lock:
                self._in_flight_upto = -1
                self.dropped += len(self._evicted)
                self._evicted.clear()
        else:
            self._settle(resends, refused)
        return outcome

    def _settle(self, resends: list[_Queued], refused: set[int]) -> None:
        """Remove a finished post's transitions from the queue and remember what fires."""
        now = time.time()
        with self._lock:
            upto = self._in_flight_upto
            done = list(self._evicted)
            self._evicted.clear()
            while self._queue and self._queue[0].seq <= upto:
                done.append(self._queue.popleft())
            self._in_flight_upto = -1
            # Re-sends whose alert was forgotten or changed meanwhile are not re-armed.
            done += [e for e in resends if self._firing.get(e.alert.key, (None, 0.0))[0] is e]
            for entry in sorted(done, key=lambda e: e.seq):
                if id(entry) in refused:
                    self.rejected += 1
                    self._firing.pop(entry.alert.key, None)
                elif entry.alert.status == "firing":
                    self._firing[entry.alert.key] = (entry, now)
                else:
                    self._firing.pop(entry.alert.key, None)

    def _payload(self, batch: list[_Queued]) -> bytes:
        now = time.time()
        items = []
        for entry in batch:
            firing = entry.alert.status == "firing"
            items.append(
                {
                    "labels": entry.alert.labels(),
                    "annotations": entry.alert.annotations(),
                    "startsAt": _iso(entry.starts_at),
                    "endsAt": _iso(now + self.expire_seconds if firing else entry.ended_at),
                }
            )
        return json.dumps(items).encode()

    def _post(self, batch: list[_Queued]) -> Outcome:
        request = urllib.request.Request(self.endpoint, data=self._payload(batch), method="POST")
        request.add_header("Content-Type", "application/json")
        if self._auth_header:
            request.add_header("Authorization", self._auth_header)
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout_seconds, context=self._ssl_context
            ) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            self.sent_error += 1
            detail = exc.read()[:500].decode(errors="replace")
            if exc.code in REJECTING_STATUSES:
                self.consecutive_failures = 0
                log.error(
                    "alertmanager refused %d alerts: HTTP %d %s", len(batch), exc.code, detail
                )
                return Outcome.REJECTED
            self.consecutive_failures += 1
            log.warning("alertmanager post failed (%d alerts): HTTP %d", len(batch), exc.code)
            return Outcome.FAILED
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            self.sent_error += 1
            self.consecutive_failures += 1
            log.warning("alertmanager post failed (%d alerts): %s", len(batch), exc)
            return Outcome.FAILED
        self.sent_ok += 1
        self.consecutive_failures = 0
        return Outcome.DELIVERED
