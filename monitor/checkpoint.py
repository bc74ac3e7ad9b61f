"""Checkpoints of per-partition state: the detector banks and counters a Kafka partition feeds.

A checkpoint is one blob per partition: a magic line, a JSON header (format version, the
offset the state covers, a SHA-256 of the payload) and the pickled state. A state that
offers its parts (:class:`PartedState`, e.g. a partition's snapshot and its segments) is
pickled as a sequence of pickles, its head first and then each part by a pickler of its own;
any other state is pickled whole. Stores:

- :class:`DirectoryStore`: one file per partition, written atomically (temporary file, fsync,
  rename, fsync of the folder). The single-node default.
- :class:`KafkaTopicStore`: one record per partition, keyed ``topic:partition``, in a compacted
  topic, so that a partition's state follows it to another machine on a rebalance.

A blob written by another format version, truncated or altered is refused with a
:class:`CheckpointError` naming the reason; the daemon then starts that partition fresh from
its committed offset. Checkpoints are trusted input (pickle): keep the directory and the state
topic writable by the monitor only.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, Self, runtime_checkable

log = logging.getLogger(__name__)

MAGIC = b"ROLLOUT-MONITOR-CHECKPOINT\n"
#: Bumped whenever the pickled state's layout changes; versions not in
#: :data:`READABLE_VERSIONS` are refused.
#: 2: a :class:`PartedState` is a sequence of pickles (head, then one per part).
#: 3: detector objects (``detectors._base.Pickled``) are the list of their attributes' values
#: in the order of the sorted names, without the names.
#: 4: ``reward_hacking`` keeps the component names it has seen in a dict (first-seen order),
#: not a set; an older daemon would fail on it, so it refuses the checkpoint instead.
FORMAT_VERSION = 4
#: Versions read: this one, 3, and 2, whose objects (``(None, {name: value})``) still load;
#: the set of names of 2 and 3 is read sorted into a dict (``RewardHacking.__setstate__``).
READABLE_VERSIONS = (2, 3, 4)
_LEN = struct.Struct(">I")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; ``reason`` says why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"checkpoint {key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class Checkpoint:
    """The state of one partition and the offset of the next message it has not seen."""

    topic: str
    partition: int
    next_offset: int
    state: Any


def checkpoint_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class _Writer(Protocol):
    """Where pickles go: a binary file, or the hashing writer in front of one."""

    def write(self, data: bytes, /) -> int: ...


@runtime_checkable
class PartedState(Protocol):
    """A state checkpointed in parts: a head, then many parts, each pickled on its own.

    One pickler over a large state is slow. Its memo (every object pickled so far, to write
    repeats as references) keeps each of them alive, including the state dicts and tuples
    that ``__reduce_ex__`` and ``__getstate__`` build on the fly: hundreds of thousands of
    containers for a thousand detector banks, over which the cyclic garbage collector runs
    again and again, and a table that outgrows the CPU caches. Pickling 1,000 warm segments
    at once took 0.45 s of CPU, one by one 0.22 s (0.28 and 0.22 s at the daemon's GC
    thresholds, 0.26 and 0.22 s with the collector off). So the head and each part get a
    fresh pickler (and a fresh unpickler on load), which bounds the memo by the largest.

    The price: objects that several parts (or a part and the head) refer to are written
    once per pickle and come back as separate copies. A state keeps the sharing that
    matters itself, in :meth:`from_checkpoint_parts` (see
    :class:`monitor.pipeline.PartitionSnapshot`). Within the head and within a part,
    sharing is kept as by any pickle.
    """

    def checkpoint_parts(self) -> tuple[Any, Iterable[Any]]:
        """The state without its parts (the head), and the parts; both pickled as they are."""
        ...

    @classmethod
    def from_checkpoint_parts(cls, head: Any, parts: Sequence[Any]) -> Self:
        """The state again from its unpickled head and parts (in the order given)."""
        ...


def _dump_state(state: Any, fh: _Writer) -> int | None:
    """Pickle ``state`` to ``fh``: the number of parts written after the head of a
    :class:`PartedState`, or None for a state pickled whole (one pickle).

    The head's pickle holds the state's class with the head, so that loading knows what
    to rebuild; the header holds the number of parts, so that loading knows how many
    pickles follow (and refuses a payload with more or fewer)."""
    if not isinstance(state, PartedState):
        _dump(state, fh)
        return None
    head, parts = state.checkpoint_parts()
    _dump((type(state), head), fh)
    count = 0
    for part in parts:
        _dump(part, fh)
        count += 1
    return count


def _dump(obj: Any, fh: _Writer) -> None:
    """One pickle of ``obj``, by a fresh pickler (its memo starts empty)."""
    pickle.Pickler(fh, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)


def _load_state(payload: bytes, parts: int | None) -> Any:
    """The state :func:`_dump_state` wrote; raises when the payload does not hold exactly
    the head and ``parts`` parts it should."""
    if parts is None:
        return pickle.loads(payload)
    stream = io.BytesIO(payload)
    cls, head = pickle.Unpickler(stream).load()
    loaded = [pickle.Unpickler(stream).load() for _ in range(parts)]
    if stream.tell() != len(payload):
        raise ValueError(f"{len(payload) - stream.tell()} bytes after the last of {parts} parts")
    return cls.from_checkpoint_parts(head, loaded)


def encode(checkpoint: Checkpoint) -> bytes:
    """The blob of ``checkpoint``, built in memory (a record of :class:`KafkaTopicStore`);
    :func:`write_stream` writes the same blob to a file without holding it."""
    buffer = io.BytesIO()
    parts = _dump_state(checkpoint.state, buffer)
    payload = buffer.getvalue()
    header = _header(checkpoint, hashlib.sha256(payload).hexdigest(), len(payload), parts)
    return MAGIC + _LEN.pack(len(header)) + header + payload


def _header(checkpoint: Checkpoint, sha256: str, payload_bytes: int, parts: int | None) -> bytes:
    return json.dumps(
        {
            "format_version": FORMAT_VERSION,
            "topic": checkpoint.topic,
            "partition": checkpoint.partition,
            "next_offset": checkpoint.next_offset,
            "sha256": sha256,
            "payload_bytes": payload_bytes,
            "parts": parts,
            "written_at": time.time(),
        }
    ).encode()


#: Bytes kept for the header when a checkpoint is written as a stream: the header is written
#: last (it holds the payload's checksum) and padded with spaces, which JSON ignores.
#: Topic names have at most 249 characters, so a header needs at most about 500.
HEADER_ROOM = 1024


class _HashingWriter:
    """Writes through to ``fh``, hashing and counting what passes."""

    __slots__ = ("fh", "sha256", "size")

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | pickle.PickleBuffer) -> int:
        # pickle hands over large buffers (a numpy array's data) as a PickleBuffer, which
        # has no len()
        self.sha256.update(data)
        self.size += memoryview(data).nbytes
        return self.fh.write(data)


def write_stream(checkpoint: Checkpoint, fh: BinaryIO) -> None:
    """Write the blob of :func:`encode` to ``fh`` (a seekable file at offset 0) without
    holding the pickled state in memory: pickle writes to the file as it goes (tens of
    megabytes per partition with thousands of segments, and as much again for the growing
    buffer of ``pickle.dumps``). The header is padded to :data:`HEADER_ROOM` bytes."""
    fh.write(MAGIC + _LEN.pack(HEADER_ROOM) + b" " * HEADER_ROOM)
    writer = _HashingWriter(fh)
    parts = _dump_state(checkpoint.state, writer)
    header = _header(checkpoint, writer.sha256.hexdigest(), writer.size, parts)
    if len(header) > HEADER_ROOM:
        raise ValueError(f"checkpoint header of {len(header)} bytes exceeds {HEADER_ROOM}")
    fh.seek(len(MAGIC) + _LEN.size)
    fh.write(header.ljust(HEADER_ROOM))


def decode(key: str, blob: bytes) -> Checkpoint:
    """Parse and verify a blob; raises :class:`CheckpointError` with the reason."""
    if not blob.startswith(MAGIC):
        raise CheckpointError(key, "not a rollout-monitor checkpoint (bad magic)")
    start = len(MAGIC) + _LEN.size
    if len(blob) < start:
        raise CheckpointError(key, "truncated header")
    (header_len,) = _LEN.unpack_from(blob, len(MAGIC))
    try:
        header = json.loads(blob[start : start + header_len])
    except ValueError:
        raise CheckpointError(key, "corrupted header") from None
    version = header.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            key,
            f"format version {version!r} is not one of {READABLE_VERSIONS} (written by another "
            "version)",
        )
    parts = header.get("parts")
    if parts is not None and (type(parts) is not int or parts < 0):
        raise CheckpointError(key, f"corrupted header (parts {parts!r})")
    payload = blob[start + header_len :]
    if len(payload) != header.get("payload_bytes"):
        raise CheckpointError(key, f"payload is {len(payload)} bytes, header says otherwise")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CheckpointError(key, "checksum mismatch (corrupted)")
    try:
        state = _load_state(payload, parts)
    except Exception as exc:  # classes changed shape since the checkpoint was written
        raise CheckpointError(key, f"state does not load: {type(exc).__name__}: {exc}") from None
    return Checkpoint(header["topic"], int(header["partition"]), int(header["next_offset"]), state)


class CheckpointStore(Protocol):
    """Where checkpoints live. ``save`` must be durable when it returns."""

    def save(self, checkpoints: list[Checkpoint]) -> None: ...

    def load(self, topic: str, partition: int) -> Checkpoint | None: ...

    def close(self) -> None: ...


class DirectoryStore:
    """One file per partition in ``directory``, replaced atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, topic: str, partition: int) -> Path:
        return self.directory / f"{topic}-{partition}.ckpt"

    def save(self, checkpoints: list[Checkpoint]) -> None:
        for checkpoint in checkpoints:
            final = self.path(checkpoint.topic, checkpoint.partition)
            tmp = final.with_suffix(".tmp")
            with tmp.open("wb") as fh:
                write_stream(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        if checkpoints:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        path = self.path(topic, partition)
        if not path.exists():
            return None
        return decode(str(path), path.read_bytes())

    def close(self) -> None:
        return


class KafkaTopicStore:
    """Checkpoints as records of a compacted topic, keyed ``topic:partition``.

    ``save`` returns once the broker acknowledged every record. ``load`` reads the topic from
    the beginning to its end and keeps the newest record of the key.
    """

    MAX_BYTES = 64 * 1024 * 1024

    def __init__(self, bootstrap_servers: str, topic: str, extra: dict[str, str] | None = None):
        from confluent_kafka import Producer

        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.extra = dict(extra or {})
        self._ensure_topic()
        self._producer = Producer(
            {
                **self.extra,
                "bootstrap.servers": bootstrap_servers,
                "message.max.bytes": self.MAX_BYTES,
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": "lz4",
            }
        )

    def _ensure_topic(self) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({**self.extra, "bootstrap.servers": self.bootstrap_servers})
        config = {"cleanup.policy": "compact", "max.message.bytes": str(self.MAX_BYTES)}
        futures = admin.create_topics([NewTopic(self.topic, num_partitions=1, config=config)])
        try:
            futures[self.topic].result(timeout=30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise

    def save(self, checkpoints: list[Checkpoint]) -> None:
        errors: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        for checkpoint in checkpoints:
            key = checkpoint_key(checkpoint.topic, checkpoint.partition)
            self._producer.produce(
                self.topic, key=key.encode(), value=encode(checkpoint), on_delivery=on_delivery
            )
        remaining = self._producer.flush(30)
        if remaining or errors:
            raise OSError(f"state topic {self.topic}: {remaining} undelivered, errors {errors}")

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        key = checkpoint_key(topic, partition)
        blob = self._read_all().get(key)
        return None if blob is None else decode(f"{self.topic}/{key}", blob)

    def _read_all(self) -> dict[str, bytes]:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                **self.extra,
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": "rollout-monitor-state-reader",
                "enable.auto.commit": False,
                "fetch.max.bytes": self.MAX_BYTES,
                "max.partition.fetch.bytes": self.MAX_BYTES,
            }
        )
        latest: dict[str, bytes] = {}
        try:
            meta = consumer.list_topics(self.topic, timeout=10).topics[self.topic]
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), 10)
                if high <= low:
                    continue
                consumer.assign([TopicPartition(self.topic, p, low)])
                position = low
                deadline = time.monotonic() + 30
                while position < high and time.monotonic() < deadline:
                    msg = consumer.poll(1.0)
                    if msg is None or msg.error() is not None:
                        continue
                    position = (msg.offset() or 0) + 1
                    key, value = msg.key(), msg.value()
                    if key is not None and value is not None:
                        latest[key.decode()] = value
        finally:
            consumer.close()
        return latest

    def close(self) -> None:
        self._producer.flush(30)
