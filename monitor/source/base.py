"""The consumer protocol every Kafka backend implements, and the dead-letter sink protocol.

A :class:`Source` hands out raw batches and takes explicit commits: auto-commit and the
automatic offset store are off, so an offset is committed only after the caller has fully
processed the message before it. Rebalance hooks run while the backend is inside
``poll_batch`` or ``close`` and before the revoked partitions are released, so a synchronous
:meth:`Source.commit` made from ``on_revoke`` still lands as the partitions' owner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, Protocol, runtime_checkable

TopicPartition = tuple[str, int]
"""A partition as ``(topic, partition)``."""

RebalanceHook = Callable[[list[TopicPartition]], None]

#: Headers a dead-letter record carries besides the original message's own headers.
REASON_HEADER = "x-rollout-monitor-reason"
DETAIL_HEADER = "x-rollout-monitor-detail"
TRUNCATED_HEADER = "x-rollout-monitor-truncated"
SOURCE_TOPIC_HEADER = "x-source-topic"
SOURCE_PARTITION_HEADER = "x-source-partition"
SOURCE_OFFSET_HEADER = "x-source-offset"

#: Longest ``x-rollout-monitor-detail`` header value, in bytes.
MAX_DETAIL_BYTES = 1024
#: How much of a value too large for the broker is kept in its dead-letter record.
TRUNCATED_VALUE_BYTES = 64 * 1024
#: Values above this size are dead-lettered truncated without trying the full value first;
#: it stays below the broker's and the clients' default message size limits (about 1 MB).
DEFAULT_MAX_VALUE_BYTES = 1_000_000


class SourceError(Exception):
    """A Kafka consumer or producer failure that is not a transient broker outage."""


class RawMessage(NamedTuple):
    """One consumed record, as bytes, with where it came from.

    A named tuple: one is built per consumed message, and a tuple is built about four times
    faster than a frozen dataclass.
    """

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    headers: tuple[tuple[str, bytes], ...] = ()


class Batch(list[RawMessage]):
    """The records of one poll, and the next offset of every partition they came from.

    ``next_offsets`` is filled while the backend builds the batch, so that the consumer's
    lag bookkeeping and the daemon's offset tracking do not walk the messages again.

    >>> batch = Batch.of([RawMessage(b"", None, "t", 0, 6, None),
    ...                   RawMessage(b"", None, "t", 1, 2, None)])
    >>> batch.next_offsets
    {('t', 0): 7, ('t', 1): 3}
    """

    __slots__ = ("next_offsets",)

    def __init__(self, messages: Iterable[RawMessage] = ()) -> None:
        super().__init__(messages)
        self.next_offsets: dict[TopicPartition, int] = {}

    @classmethod
    def of(cls, messages: Iterable[RawMessage]) -> Batch:
        """A batch of ``messages`` (in offset order per partition) with its next offsets."""
        batch = cls(messages)
        offsets = batch.next_offsets
        for msg in batch:
            offsets[(msg.topic, msg.partition)] = msg.offset + 1
        return batch


@runtime_checkable
class Source(Protocol):
    """A group consumer that the application commits for.

    Implementations take ``on_assign`` and ``on_revoke`` hooks in their constructor; both
    are called with ``(topic, partition)`` lists from within :meth:`poll_batch` or
    :meth:`close`, ``on_revoke`` before the partitions are given up.

    Call every method from the thread that polls: confluent-kafka holds a call from another
    thread until a waiting ``consume()`` returns (measured: up to the whole poll timeout).
    """

    def poll_batch(self, max_messages: int, timeout_s: float) -> Batch:
        """Return up to ``max_messages`` records, waiting at most ``timeout_s`` seconds.

        Transient broker errors are logged, not raised: while the broker is down this
        returns an empty list.
        """
        ...

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit; each value is the NEXT offset to read (last processed + 1).

        Synchronous from ``on_revoke``. Elsewhere a backend may send it asynchronously, as
        long as ``close()`` waits for it and a failure is raised by a later call.
        Raises :class:`SourceError` when the commit (or an earlier one) failed.
        """
        ...

    def assignment(self) -> list[TopicPartition]:
        """The partitions this consumer owns now."""
        ...

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Start the given partitions at these offsets instead of the committed ones.

        Meant for ``on_assign``: the offsets apply when the hook returns, before any record
        of those partitions is fetched (the daemon resumes from a checkpoint this way).
        """
        ...

    def lag(self) -> dict[TopicPartition, int]:
        """High watermark minus position per owned partition whose both ends are known.

        Watermarks are cached and refreshed at most every few seconds, so this is cheap.
        """
        ...

    @property
    def connected(self) -> bool:
        """Whether the broker was reachable recently."""
        ...

    def close(self) -> None:
        """Leave the group (calling ``on_revoke`` first) and release the client."""
        ...


@runtime_checkable
class DeadLetterSink(Protocol):
    """A producer of refused messages to the dead-letter topic.

    The dead-letter record holds the original value bytes and key, the original headers,
    and the headers ``x-rollout-monitor-reason``, ``x-rollout-monitor-detail`` (at most
    1 KiB), ``x-source-topic``, ``x-source-partition`` and ``x-source-offset``. A value too
    large for the broker is cut to its first 64 KiB and marked with
    ``x-rollout-monitor-truncated: <original length>``.
    """

    def send(self, msg: RawMessage, reason: str, detail: str) -> None:
        """Queue ``msg`` for the dead-letter topic; delivery is confirmed by :meth:`flush`."""
        ...

    def flush(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for queued records; return how many are still pending."""
        ...

    @property
    def failures(self) -> int:
        """How many dead-letter records could not be delivered."""
        ...


def dead_letter_headers(
    msg: RawMessage, reason: str, detail: str, truncated_from: int | None = None
) -> list[tuple[str, bytes]]:
    """The headers of the dead-letter record for ``msg``: ours first, then the original ones.

    >>> m = RawMessage(b"x", None, "rl.rollouts", 2, 41, None, (("trace", b"t1"),))
    >>> for name, value in dead_letter_headers(m, "invalid_json", "oops"):
    ...     print(name, value)
    x-rollout-monitor-reason b'invalid_json'
    x-rollout-monitor-detail b'oops'
    x-source-topic b'rl.rollouts'
    x-source-partition b'2'
    x-source-offset b'41'
    trace b't1'
    >>> detail = dict(dead_letter_headers(m, "invalid_json", "é" * 600))[DETAIL_HEADER]
    >>> len(detail), detail.decode() == "é" * 512
    (1024, True)
    """
    headers = [
        (REASON_HEADER, reason.encode()),
        (DETAIL_HEADER, _truncate_utf8(detail, MAX_DETAIL_BYTES)),
        (SOURCE_TOPIC_HEADER, msg.topic.encode()),
        (SOURCE_PARTITION_HEADER, str(msg.partition).encode()),
        (SOURCE_OFFSET_HEADER, str(msg.offset).encode()),
    ]
    if truncated_from is not None:
        headers.append((TRUNCATED_HEADER, str(truncated_from).encode()))
    headers.extend(msg.headers)
    return headers


def truncated_value(value: bytes | None) -> bytes | None:
    """The part of an oversized value that a dead-letter record keeps."""
    return None if value is None else value[:TRUNCATED_VALUE_BYTES]


def _truncate_utf8(text: str, limit: int) -> bytes:
    """``text`` as UTF-8, cut to at most ``limit`` bytes without splitting a character."""
    data = text.encode()
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode()
