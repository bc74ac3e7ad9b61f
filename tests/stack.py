"""The local stack of deploy/stack.sh as seen from tests: addresses, reachability, helpers.

Addresses come from the same environment variables and defaults as deploy/stack.sh, so tests
follow a stack started on other ports (``KAFKA_PORT=29092 deploy/stack.sh up``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO_DIR = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_HINT = "start it with `make stack-up`"

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.1,
    *,
    retry_on: tuple[type[Exception], ...] = (),
    message: str = "",
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    Exceptions of the types in ``retry_on`` count as "not yet". Raises ``TimeoutError`` (naming
    the last such exception, if any) when ``timeout`` seconds pass first.

    >>> calls = iter([0, 0, 7])
    >>> wait_until(lambda: next(calls), timeout=1, interval=0)
    7
    >>> wait_until(lambda: False, timeout=0.05, interval=0.01, message="never")
    Traceback (most recent call last):
    ...
    TimeoutError: never (not met within 0.05s)
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = predicate()
        except retry_on as exc:
            last_error = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error else ""
            raise TimeoutError(f"{message or 'condition'} (not met within {timeout}s){detail}")
        time.sleep(interval)


def http_json(method: str, url: str, body: Any = None, timeout: float = 5.0) -> Any:
    """Send ``body`` as JSON (if given) and decode the JSON answer; raises on HTTP errors."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw.strip() else None


def http_problem(url: str) -> str | None:
    """Why ``GET url`` does not answer 200, or None when it does."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


def kafka_problem(bootstrap: str) -> str | None:
    """Why no broker answers a metadata request at ``bootstrap``, or None when one does."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    try:
        metadata = admin.list_topics(timeout=5)
    except KafkaException as exc:
        return str(exc.args[0])
    return None if metadata.brokers else "no broker in the metadata"


@dataclass(frozen=True)
class StackAddresses:
    """Where deploy/stack.sh puts each component, from its environment variables."""

    kafka_bootstrap: str
    prometheus_url: str
    alertmanager_url: str
    webhook_url: str
    state_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> StackAddresses:
        state_dir = env.get("STACK_DIR") or REPO_DIR / ".stack" / "run"
        return cls(
            kafka_bootstrap=f"{HOST}:{env.get('KAFKA_PORT', '9092')}",
            prometheus_url=f"http://{HOST}:{env.get('PROMETHEUS_PORT', '9090')}",
            alertmanager_url=f"http://{HOST}:{env.get('ALERTMANAGER_PORT', '9093')}",
            webhook_url=f"http://{HOST}:{env.get('WEBHOOK_PORT', '9099')}",
            state_dir=Path(state_dir),
        )


@dataclass
class Stack:
    """The running stack. Reading a component's address first checks that it answers, and fails
    the test (never skips it) when it does not."""

    addresses: StackAddresses
    _reachable: set[str] = field(default_factory=set, repr=False)
    _unreachable: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def kafka_bootstrap(self) -> str:
        address = self.addresses.kafka_bootstrap
        self._require("Kafka", address, kafka_problem)
        return address

    @property
    def prometheus_url(self) -> str:
        return self._require_http("Prometheus", self.addresses.prometheus_url)

    @property
    def alertmanager_url(self) -> str:
        return self._require_http("Alertmanager", self.addresses.alertmanager_url)

    @property
    def webhook_url(self) -> str:
        return self._require_http("the webhook receiver", self.addresses.webhook_url)

    def generated_config(self, name: str) -> Path:
        """A config that ``deploy/stack.sh up`` rendered into its state dir."""
        path = self.addresses.state_dir / name
        if not path.is_file():
            pytest.fail(f"{path} does not exist; {START_HINT}", pytrace=False)
        return path

    def _require_http(self, component: str, url: str) -> str:
        self._require(component, url, lambda u: http_problem(f"{u}/-/ready"))
        return url

    def _require(self, component: str, address: str, problem: Callable[[str], str | None]) -> None:
        if component in self._reachable:
            return
        # A component found down stays down for the session: fail the next tests at once.
        if component not in self._unreachable:
            reason = problem(address)
            if reason is None:
                self._reachable.add(component)
                return
            self._unreachable[component] = reason
        pytest.fail(
            f"{component} is not reachable at {address} ({self._unreachable[component]}); "
            f"{START_HINT}",
            pytrace=False,
        )


Notifications = list[dict[str, Any]]


@dataclass(frozen=True)
class WebhookReceiver:
    """Client of deploy/webhook_receiver.py, which records Alertmanager's notifications."""

    url: str

    def notifications(self) -> Notifications:
        result: Notifications = http_json("GET", f"{self.url}/")
        return result

    def clear(self) -> None:
        http_json("DELETE", f"{self.url}/")

    def wait_for(
        self, predicate: Callable[[Notifications], object], timeout: float = 30.0
    ) -> Notifications:
        """Poll the notifications until ``predicate(notifications)`` is truthy; return them."""
        seen: Notifications = []

        def check() -> bool:
            seen[:] = self.notifications()
            return bool(predicate(seen))

        try:
            wait_until(check, timeout=timeout, interval=0.1)
        except TimeoutError:
            summary = json.dumps(seen)[:2000]
            raise AssertionError(
                f"no matching notification within {timeout}s; {len(seen)} received: {summary}"
            ) from None
        return seen


def alerts_in(notifications: Notifications) -> list[dict[str, Any]]:
    """Every alert of every notification (each alert carries its own ``status``)."""
    return [alert for note in notifications for alert in note.get("alerts", [])]


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_topic(bootstrap: str, name: str, partitions: int, timeout: float = 30.0) -> None:
    """Create ``name`` and return once every partition has a leader."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)],
        operation_timeout=timeout,
    )
    futures[name].result(timeout=timeout)

    def led() -> bool:
        topic = admin.list_topics(topic=name, timeout=5).topics.get(name)
        return (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        )

    wait_until(led, timeout=timeout, message=f"topic {name} has leaders for all partitions")


def delete_topics(bootstrap: str, names: list[str], timeout: float = 30.0) -> None:
    """Delete ``names``; a topic that cannot be deleted is left behind, not an error."""
    if not names:
        return
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(names, operation_timeout=timeout).values():
        with contextlib.suppress(KafkaException):
            future.result(timeout=timeout)
