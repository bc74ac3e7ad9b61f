"""Kafka consumers behind one protocol, and the dead-letter producer.

Two backends implement :class:`Source` and :class:`DeadLetterSink`: ``confluent``
(confluent-kafka, librdkafka) and ``kafka-python``. :func:`make_source` and
:func:`make_dead_letter_sink` pick one by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

from monitor.source.base import (
    Batch,
    DeadLetterSink,
    RawMessage,
    RebalanceHook,
    Source,
    SourceError,
    TopicPartition,
)
from monitor.source.confluent import ConfluentDeadLetterSink, ConfluentSource
from monitor.source.kafka_python import KafkaPythonDeadLetterSink, KafkaPythonSource

Backend = Literal["confluent", "kafka-python"]
BACKENDS: tuple[str, ...] = get_args(Backend)

__all__ = [
    "BACKENDS",
    "Backend",
    "Batch",
    "ConfluentDeadLetterSink",
    "ConfluentSource",
    "DeadLetterSink",
    "KafkaPythonDeadLetterSink",
    "KafkaPythonSource",
    "RawMessage",
    "RebalanceHook",
    "Source",
    "SourceError",
    "TopicPartition",
    "make_dead_letter_sink",
    "make_source",
]


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")


def make_source(
    backend: Backend,
    bootstrap_servers: str,
    topics: Sequence[str],
    group_id: str,
    *,
    on_assign: RebalanceHook | None = None,
    on_revoke: RebalanceHook | None = None,
    extra_config: Mapping[str, Any] | None = None,
) -> Source:
    """A consumer of ``topics`` in ``group_id`` on the named backend.

    >>> make_source("kafka", "127.0.0.1:9092", ["t"], "g")
    Traceback (most recent call last):
    ...
    ValueError: backend must be one of ['confluent', 'kafka-python'], got 'kafka'
    """
    _check_backend(backend)
    cls = ConfluentSource if backend == "confluent" else KafkaPythonSource
    return cls(
        bootstrap_servers,
        topics,
        group_id,
        on_assign=on_assign,
        on_revoke=on_revoke,
        extra_config=extra_config,
    )


def make_dead_letter_sink(
    backend: Backend,
    bootstrap_servers: str,
    topic: str,
    extra_config: Mapping[str, Any] | None = None,
) -> DeadLetterSink:
    """A producer to the dead-letter ``topic`` on the named backend."""
    _check_backend(backend)
    if backend == "confluent":
        return ConfluentDeadLetterSink(bootstrap_servers, topic, extra_config)
    return KafkaPythonDeadLetterSink(bootstrap_servers, topic, extra_config)
