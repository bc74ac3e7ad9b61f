"""The consumed records of a confluent-kafka poll, as :class:`~monitor.source.base.Batch`.

A module of its own so that it is compiled with mypyc (``detectors.compiled``): its loop
runs once per consumed message.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError

import detectors  # noqa: F401  (first: it refuses a compiled build older than the sources)
from monitor.source.base import Batch, RawMessage

log = logging.getLogger("monitor.source.confluent")

_PARTITION_EOF = KafkaError._PARTITION_EOF


def records(messages: list[Any]) -> Batch:
    """The records of ``messages`` without the error events, and their next offsets.

    One pass, with the tuple built directly: this runs once per consumed message. The
    messages of a partition come in runs; a run's records share one topic string and its
    next offset is stored once, when the run ends.
    """
    batch = Batch()
    offsets = batch.next_offsets
    new = tuple.__new__
    topic = ""
    partition = -1
    offset = -1
    run: tuple[str, int] | None = None
    for m in messages:
        error = m.error()
        if error is not None:
            if error.code() != _PARTITION_EOF:
                log.warning("consume error on %s[%s]: %s", m.topic(), m.partition(), error)
            continue
        ts_type, ts = m.timestamp()
        headers = m.headers()
        this_topic: str = m.topic() or ""
        this_partition: int = m.partition() or 0
        if this_partition != partition or this_topic != topic:
            if run is not None:
                offsets[run] = offset + 1
            topic, partition = this_topic, this_partition
            run = (topic, partition)
        offset = m.offset() or 0
        batch.append(
            new(
                RawMessage,
                (
                    m.value(),
                    m.key(),
                    topic,
                    partition,
                    offset,
                    None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
                    _headers(headers) if headers else (),
                ),
            )
        )
    if run is not None:
        offsets[run] = offset + 1
    return batch


def _headers(headers: Any) -> tuple[tuple[str, bytes], ...]:
    """Consumed headers as ``(name, bytes)`` pairs; a null header value becomes ``b""``."""
    if not headers:
        return ()
    pairs = headers.items() if isinstance(headers, dict) else headers
    return tuple(
        (name, value.encode() if isinstance(value, str) else value or b"") for name, value in pairs
    )
