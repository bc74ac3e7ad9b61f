"""Checkpoints of per-partition state: the detector banks and counters a Kafka partition feeds.

A checkpoint is one blob per partition: a magic line, a JSON header (format version, the
offset the state covers, a SHA-256 of the payload) and the pickled state. Stores:

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
import json
import logging
import os
import pickle
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

log = logging.getLogger(__name__)

MAGIC = b"ROLLOUT-MONITOR-CHECKPOINT\n"
#: Bumped whenever the pickled state's layout changes; other versions are refused.
FORMAT_VERSION = 1
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


def encode(checkpoint: Checkpoint) -> bytes:
    payload = pickle.dumps(checkpoint.state, protocol=pickle.HIGHEST_PROTOCOL)
    header = _header(checkpoint, hashlib.sha256(payload).hexdigest(), len(payload))
    return MAGIC + _LEN.pack(len(header)) + header + payload


def _header(checkpoint: Checkpoint, sha256: str, payload_bytes: int) -> bytes:
    return json.dumps(
        {
            "format_version": FORMAT_VERSION,
            "topic": checkpoint.topic,
            "partition": checkpoint.partition,
            "next_offset": checkpoint.next_offset,
            "sha256": sha256,
            "payload_bytes": payload_bytes,
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

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.fh.write(data)


def write_stream(checkpoint: Checkpoint, fh: BinaryIO) -> None:
    """Write the blob of :func:`encode` to ``fh`` (a seekable file at offset 0) without
    holding the pickled state in memory: pickle writes to the file as it goes (tens of
    megabytes per partition with thousands of segments, and as much again for the growing
    buffer of ``pickle.dumps``). The header is padded to :data:`HEADER_ROOM` bytes."""
    fh.write(MAGIC + _LEN.pack(HEADER_ROOM) + b" " * HEADER_ROOM)
    writer = _HashingWriter(fh)
    pickle.Pickler(writer, protocol=pickle.HIGHEST_PROTOCOL).dump(checkpoint.state)
    header = _header(checkpoint, writer.sha256.hexdigest(), writer.size)
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
    if version != FORMAT_VERSION:
        raise CheckpointError(
            key, f"format version {version!r} is not {FORMAT_VERSION} (written by another version)"
        )
    payload = blob[start + header_len :]
    if len(payload) != header.get("payload_bytes"):
        raise CheckpointError(key, f"payload is {len(payload)} bytes, header says otherwise")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CheckpointError(key, "checksum mismatch (corrupted)")
    try:
        state = pickle.loads(payload)
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
