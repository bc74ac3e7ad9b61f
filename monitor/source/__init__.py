"""Kafka consumers behind one protocol, and the dead-letter producer.

Two backends implement :class:`Source` and :class:`DeadLetterSink`: ``confluent``
(confluent-kafka, librdkafka) and ``kafka-python``. :func:`make_source` and
:func:`make_dead_letter_sink` pick one by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

from monitor.source.base import (
    Batch,
    DeadLetterSink,
    RawMessage,
    RebalanceHook,
    Source,
    SourceError,
    TopicPartition,
)

if TYPE_CHECKING:
    from monitor.source.confluent import ConfluentDeadLetterSink, ConfluentSource
    from monitor.source.kafka_python import KafkaPythonDeadLetterSink, KafkaPythonSource

Backend = Literal["confluent", "kafka-python"]
#: The module of each backend class, imported when the class is first used: a daemon on one
#: backend does not load the other client library (kafka-python alone is about 17 MB of RSS).
_CLASSES = {
    "ConfluentSource": "monitor.source.confluent",
    "ConfluentDeadLetterSink": "monitor.source.confluent",
    "KafkaPythonSource": "monitor.source.kafka_python",
    "KafkaPythonDeadLetterSink": "monitor.source.kafka_python",
}
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


def __getattr__(name: str) -> Any:
    """The backend classes, their module imported on first access."""
    module = _CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


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
    cls = __getattr__("ConfluentSource" if backend == "confluent" else "KafkaPythonSource")
    source: Source = cls(
        bootstrap_servers,
        topics,
        group_id,
        on_assign=on_assign,
        on_revoke=on_revoke,
        extra_config=extra_config,
    )
    return source


def make_dead_letter_sink(
    backend: Backend,
    bootstrap_servers: str,
    topic: str,
    extra_config: Mapping[str, Any] | None = None,
) -> DeadLetterSink:
    """A producer to the dead-letter ``topic`` on the named backend."""
    _check_backend(backend)
    name = "ConfluentDeadLetterSink" if backend == "confluent" else "KafkaPythonDeadLetterSink"
    sink: DeadLetterSink = __getattr__(name)(bootstrap_servers, topic, extra_config)
    return sink
