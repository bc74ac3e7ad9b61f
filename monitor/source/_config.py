"""Checking ``extra_config`` and translating librdkafka's dotted names for kafka-python."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from monitor.source.base import SourceError

#: Keys the consumers set themselves: the application owns commits and offset storage.
CONSUMER_OWNED_KEYS = frozenset(
    {
        "bootstrap.servers",
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "error_cb",
        "stats_cb",
        "statistics.interval.ms",
    }
)
PRODUCER_OWNED_KEYS = frozenset({"bootstrap.servers", "error_cb"})


def checked_extra(extra_config: Mapping[str, Any] | None, owned: frozenset[str]) -> dict[str, Any]:
    """A copy of ``extra_config``; raises :class:`SourceError` for a key the client owns."""
    extra = dict(extra_config or {})
    for key in sorted(extra):
        if key in owned:
            raise SourceError(f"extra_config key {key!r} is set by the source itself")
    return extra


def _ssl_check_hostname(value: Any) -> bool:
    return str(value).lower() == "https"


def _acks(value: Any) -> int | str:
    text = str(value)
    return "all" if text == "all" else int(text)


Translation = tuple[str, Callable[[Any], Any]]

_COMMON: dict[str, Translation] = {
    "security.protocol": ("security_protocol", lambda v: str(v).upper()),
    "sasl.mechanism": ("sasl_mechanism", str),
    "sasl.mechanisms": ("sasl_mechanism", str),
    "sasl.username": ("sasl_plain_username", str),
    "sasl.password": ("sasl_plain_password", str),
    "ssl.ca.location": ("ssl_cafile", str),
    "ssl.certificate.location": ("ssl_certfile", str),
    "ssl.key.location": ("ssl_keyfile", str),
    "ssl.key.password": ("ssl_password", str),
    "ssl.endpoint.identification.algorithm": ("ssl_check_hostname", _ssl_check_hostname),
    "client.id": ("client_id", str),
    "reconnect.backoff.ms": ("reconnect_backoff_ms", int),
    "reconnect.backoff.max.ms": ("reconnect_backoff_max_ms", int),
}
KAFKA_PYTHON_CONSUMER_KEYS: dict[str, Translation] = {
    **_COMMON,
    "session.timeout.ms": ("session_timeout_ms", int),
    "heartbeat.interval.ms": ("heartbeat_interval_ms", int),
    "max.poll.interval.ms": ("max_poll_interval_ms", int),
    "fetch.wait.max.ms": ("fetch_max_wait_ms", int),
    "fetch.min.bytes": ("fetch_min_bytes", int),
    "fetch.max.bytes": ("fetch_max_bytes", int),
    "max.partition.fetch.bytes": ("max_partition_fetch_bytes", int),
    "isolation.level": ("isolation_level", str),
    "client.rack": ("client_rack", str),
}
KAFKA_PYTHON_PRODUCER_KEYS: dict[str, Translation] = {
    **_COMMON,
    "acks": ("acks", _acks),
    "linger.ms": ("linger_ms", int),
    "compression.type": ("compression_type", str),
    "message.max.bytes": ("max_request_size", int),
    "delivery.timeout.ms": ("delivery_timeout_ms", int),
    "message.timeout.ms": ("delivery_timeout_ms", int),
}


def kafka_python_kwargs(
    extra_config: Mapping[str, Any] | None,
    owned: frozenset[str],
    table: Mapping[str, Translation],
) -> dict[str, Any]:
    """kafka-python keyword arguments for librdkafka-style ``extra_config``.

    >>> kafka_python_kwargs({"sasl.username": "u", "session.timeout.ms": "6000"},
    ...                     CONSUMER_OWNED_KEYS, KAFKA_PYTHON_CONSUMER_KEYS)
    {'sasl_plain_username': 'u', 'session_timeout_ms': 6000}
    >>> try:
    ...     kafka_python_kwargs({"queue.buffering.max.ms": 5}, frozenset(), {})
    ... except SourceError as exc:
    ...     print(exc)
    extra_config key 'queue.buffering.max.ms' has no kafka-python equivalent
    """
    kwargs: dict[str, Any] = {}
    for key, value in checked_extra(extra_config, owned).items():
        if key not in table:
            raise SourceError(f"extra_config key {key!r} has no kafka-python equivalent")
        name, convert = table[key]
        kwargs[name] = convert(value)
    return kwargs
