"""Producer helpers a trainer imports to publish rollout events.

:class:`RolloutEmitter` sends one JSON message per finished episode to Kafka, keyed by
``run_id|env_id`` so that the events of one segment stay in order on one partition.
:class:`JsonlWriter` has the same ``emit()`` interface and writes a JSONL replay file instead.
Both validate every event against the schema-v1 contract before it leaves the process: an
invalid event raises :class:`monitor.events.InvalidEvent` and nothing is sent.

Usage in a trainer (one call per finished episode):

>>> from monitor.emitter import RolloutEmitter
>>> with RolloutEmitter("kafka:9092", topic="rl.rollouts") as emitter:  # doctest: +SKIP
...     for episode in finished_episodes():
...         emitter.emit({
...             "run_id": "grpo-7b-0412",
...             "env_id": "math-v2",
...             "status": "completed",
...             "reward": episode.reward,  # None when not scored, and then set "error"
...             "group_id": episode.group_id,
...             "group_size": 8,
...             "policy_version": episode.policy_version,
...             "completion_tokens": episode.completion_tokens,
...         })
>>> emitter.errors, emitter.last_error  # doctest: +SKIP
(0, None)

Leaving the ``with`` block flushes the producer queue.

``schema_version``, ``event_id`` (a random UUID) and ``ts`` (``time.time()``) are filled in
when absent. ``emit()`` never blocks on the network: delivery is asynchronous and a failed
delivery is counted in :attr:`RolloutEmitter.errors`, with the last one kept in
:attr:`RolloutEmitter.last_error`.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Any, cast

import msgspec

from monitor.events import SCHEMA_VERSION, InvalidEvent, RolloutEvent, decode_event

__all__ = ["JsonlWriter", "RolloutEmitter", "prepare_event"]

_encoder = msgspec.json.Encoder()

#: Producer settings applied unless overridden by ``producer_config``.
DEFAULT_PRODUCER_CONFIG: dict[str, Any] = {
    "linger.ms": 5,
    "compression.type": "lz4",
    "enable.idempotence": True,
    "acks": "all",
}


def _find_non_finite(value: Any, path: str) -> str | None:
    """Path of the first NaN/Infinity float inside ``value`` (msgspec would encode it as null)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, Mapping):
        for k, v in value.items():
            found = _find_non_finite(v, f"{path}.{k}")
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _find_non_finite(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def prepare_event(event: Mapping[str, Any] | RolloutEvent) -> tuple[bytes, bytes]:
    """Validate one event and return its Kafka ``(key, value)``.

    A mapping is completed with ``schema_version``, ``event_id`` and ``ts`` when those are
    absent (the caller's object is not modified), encoded, and checked with
    :func:`monitor.events.decode_event`. Unknown extra fields are kept in the message.

    >>> key, value = prepare_event({"run_id": "r", "env_id": "math", "status": "failed",
    ...     "reward": None, "error": {"type": "Timeout", "where": "verifier"}})
    >>> key
    b'r|math'
    >>> prepare_event({"run_id": "r", "env_id": "math", "status": "completed",
    ...                "reward": float("nan")})
    Traceback (most recent call last):
    ...
    monitor.events.InvalidEvent: invalid_value: reward is not finite - at `$.reward`
    """
    if isinstance(event, RolloutEvent):
        obj: dict[str, Any] = msgspec.to_builtins(event)
    elif isinstance(event, Mapping):
        obj = dict(event)
        obj.setdefault("schema_version", SCHEMA_VERSION)
        if obj.get("event_id") is None:
            obj["event_id"] = str(uuid.uuid4())
        if obj.get("ts") is None:
            obj["ts"] = time.time()
    else:
        raise InvalidEvent(
            "not_an_object", f"expected a mapping or RolloutEvent, got {type(event).__name__}"
        )
    bad = _find_non_finite(obj, "$")
    if bad is not None:
        field = bad[2:] if bad.startswith("$.") else bad
        raise InvalidEvent("invalid_value", f"{field} is not finite - at `{bad}`")
    try:
        value = _encoder.encode(obj)
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidEvent("wrong_type", f"not JSON-serialisable: {exc}") from None
    decoded = decode_event(value)
    key = f"{decoded.run_id}|{decoded.env_id}".encode()
    return key, value


#: Settings whose names really contain underscores (librdkafka and confluent-kafka callbacks).
_UNDERSCORE_KEYS = frozenset({"log_level", "logger", "on_delivery"})


def _config_key(key: str) -> str:
    if "." in key or key in _UNDERSCORE_KEYS or key.endswith("_cb"):
        return key
    return key.replace("_", ".")


def _librdkafka_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Accept ``linger_ms=10`` as well as ``**{"linger.ms": 10}``.

    >>> _librdkafka_config({"linger_ms": 1, "log_level": 0, "error_cb": print, "a.b_c": 2})
    ... # doctest: +ELLIPSIS
    {'linger.ms': 1, 'log_level': 0, 'error_cb': <built-in function print>, 'a.b_c': 2}
    """
    return {_config_key(k): v for k, v in config.items()}


class RolloutEmitter:
    """Asynchronous, validating Kafka producer of rollout events.

    ``producer_config`` entries are librdkafka settings; keyword spelling with underscores is
    accepted (``linger_ms=20`` is ``linger.ms``; ``log_level`` and ``*_cb`` callbacks keep
    their names) and overrides the defaults
    (``linger.ms=5``, ``compression.type=lz4``, ``enable.idempotence=true``, ``acks=all``).
    """

    def __init__(
        self, bootstrap_servers: str, topic: str = "rl.rollouts", **producer_config: Any
    ) -> None:
        from confluent_kafka import Producer

        config = dict(DEFAULT_PRODUCER_CONFIG)
        config.update(_librdkafka_config(producer_config))
        config["bootstrap.servers"] = bootstrap_servers
        self.topic = topic
        self._producer = Producer(config)
        self._lock = threading.Lock()
        self._errors = 0
        self._delivered = 0
        self._sent = 0
        self._last_error: str | None = None

    # -- delivery accounting -------------------------------------------------------------

    def _on_delivery(self, err: Any, msg: Any) -> None:
        with self._lock:
            if err is None:
                self._delivered += 1
            else:
                self._errors += 1
                self._last_error = str(err)

    @property
    def errors(self) -> int:
        """Number of messages whose delivery failed (reported so far)."""
        return self._errors

    @property
    def last_error(self) -> str | None:
        """Text of the last delivery error, or None."""
        return self._last_error

    @property
    def delivered(self) -> int:
        """Number of messages acknowledged by the broker (reported so far)."""
        return self._delivered

    @property
    def sent(self) -> int:
        """Number of messages handed to the producer."""
        return self._sent

    # -- sending -------------------------------------------------------------------------

    def emit(self, event: Mapping[str, Any] | RolloutEvent) -> None:
        """Validate and send one event; raises :class:`InvalidEvent` before sending."""
        key, value = prepare_event(event)
        self._produce(value, key)

    def emit_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Send arbitrary bytes, unvalidated (for replaying files and testing dead-lettering)."""
        self._produce(value, key)

    def _produce(self, value: bytes, key: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key, on_delivery=self._on_delivery
                )
                break
            except BufferError:  # local queue full: serve callbacks, then retry
                self._producer.poll(0.05)
        self._sent += 1
        self._producer.poll(0)

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery callbacks; returns the number of events served."""
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns the number of messages still queued."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 30.0) -> int:
        """Flush; kept for symmetry with :class:`JsonlWriter`."""
        return self.flush(timeout)

    def __enter__(self) -> RolloutEmitter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.flush()


class JsonlWriter:
    """Writes validated events as JSON lines, with the :class:`RolloutEmitter` interface.

    ``target`` is a path (``"-"`` means standard output) or an open binary file.

    >>> import io
    >>> buf = io.BytesIO()
    >>> w = JsonlWriter(buf)
    >>> w.emit({"run_id": "r", "env_id": "math", "status": "completed", "reward": 1.0,
    ...         "event_id": "e1", "ts": 1.5})
    >>> buf.getvalue()
    b'{"run_id":"r","env_id":"math","status":"completed","reward":1.0,"event_id":"e1","ts":1.5,"schema_version":1}\\n'
    """

    def __init__(self, target: str | os.PathLike[str] | IO[bytes]) -> None:
        self._owned = False
        if isinstance(target, (str, os.PathLike)):
            if os.fspath(target) == "-":
                self._file: IO[bytes] = sys.stdout.buffer
            else:
                self._file = cast(IO[bytes], open(target, "wb"))  # noqa: SIM115
                self._owned = True
        else:
            self._file = target
        self._sent = 0
        self.errors = 0
        self.last_error: str | None = None

    @property
    def sent(self) -> int:
        """Number of lines written."""
        return self._sent

    def emit(self, event: Mapping[str, Any] | RolloutEvent) -> None:
        """Validate and write one event; raises :class:`InvalidEvent` before writing."""
        _, value = prepare_event(event)
        self._write(value)

    def emit_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Write arbitrary bytes as one line (newlines inside are replaced by spaces)."""
        self._write(value.replace(b"\n", b" "))

    def _write(self, value: bytes) -> None:
        self._file.write(value + b"\n")
        self._sent += 1

    def flush(self, timeout: float | None = None) -> int:
        """Flush the file; returns 0 (nothing stays queued)."""
        self._file.flush()
        return 0

    def close(self, timeout: float | None = None) -> int:
        """Flush, and close the file when this writer opened it."""
        self.flush()
        if self._owned:
            self._file.close()
        return 0

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
