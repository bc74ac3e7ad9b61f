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

    One pass, with the tuple built directly: this runs once per consumed message.
    """
    batch = Batch()
    append = batch.append
    offsets = batch.next_offsets
    new = tuple.__new__
    for m in messages:
        error = m.error()
        if error is not None:
            if error.code() != _PARTITION_EOF:
                log.warning("consume error on %s[%s]: %s", m.topic(), m.partition(), error)
            continue
        ts_type, ts = m.timestamp()
        headers = m.headers()
        topic = m.topic() or ""
        partition = m.partition() or 0
        offset = m.offset() or 0
        append(
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
        offsets[(topic, partition)] = offset + 1
    return batch


def _headers(headers: Any) -> tuple[tuple[str, bytes], ...]:
    """Consumed headers as ``(name, bytes)`` pairs; a null header value becomes ``b""``."""
    if not headers:
        return ()
    pairs = headers.items() if isinstance(headers, dict) else headers
    return tuple(
        (name, value.encode() if isinstance(value, str) else value or b"") for name, value in pairs
    )
