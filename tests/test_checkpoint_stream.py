"""Checkpoints written as a stream decode like the in-memory encoding, without holding it."""

from __future__ import annotations

import io
import pickle
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest

from monitor import checkpoint as ckpt
from monitor.checkpoint import Checkpoint, decode, encode, write_stream


def _state(n: int) -> dict[str, list[float]]:
    return {f"segment-{i}": [float(j) for j in range(200)] for i in range(n)}


@dataclass
class Shelf:
    """A state checkpointed in parts (:class:`monitor.checkpoint.PartedState`): its boxes."""

    label: str
    boxes: list[list[float]]

    def checkpoint_parts(self) -> tuple[Shelf, list[list[float]]]:
        return replace(self, boxes=[]), self.boxes

    @classmethod
    def from_checkpoint_parts(cls, head: Shelf, parts: Sequence[list[float]]) -> Shelf:
        return replace(head, boxes=list(parts))


def _shelf(n: int) -> Shelf:
    return Shelf("shelf", [[float(j) for j in range(200)] for _ in range(n)])


def _pickles(payload: bytes) -> list[Any]:
    """The objects of a payload read as a sequence of pickles."""
    stream, objects = io.BytesIO(payload), []
    while stream.tell() < len(payload):
        objects.append(pickle.Unpickler(stream).load())
    return objects


def test_a_parted_state_is_its_head_then_one_pickle_per_part() -> None:
    shelf = _shelf(5)
    buffer = io.BytesIO()
    write_stream(Checkpoint("t", 0, 1, shelf), buffer)
    blob = buffer.getvalue()
    assert decode("stream", blob) == decode("memory", encode(Checkpoint("t", 0, 1, shelf)))
    assert decode("stream", blob).state == shelf
    header_len = ckpt._LEN.unpack_from(blob, len(ckpt.MAGIC))[0]
    payload = blob[len(ckpt.MAGIC) + ckpt._LEN.size + header_len :]
    assert _pickles(payload) == [(Shelf, Shelf("shelf", [])), *shelf.boxes]


def test_a_state_without_parts_is_one_pickle() -> None:
    state = _state(3)
    blob = encode(Checkpoint("t", 0, 1, state))
    assert blob.endswith(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    assert b'"parts": null' in blob


def test_streamed_blob_decodes_to_the_state_and_header_of_the_in_memory_one() -> None:
    checkpoint = Checkpoint("rl.rollouts", 5, 1234, _state(50))
    buffer = io.BytesIO()
    write_stream(checkpoint, buffer)
    streamed = decode("stream", buffer.getvalue())
    in_memory = decode("memory", encode(checkpoint))
    assert streamed == in_memory == checkpoint
    start = len(ckpt.MAGIC) + ckpt._LEN.size
    assert buffer.getvalue()[start + ckpt.HEADER_ROOM - 1 : start + ckpt.HEADER_ROOM] == b" "


def test_streamed_blob_is_checked_like_any_other() -> None:
    buffer = io.BytesIO()
    write_stream(Checkpoint("t", 0, 1, _state(3)), buffer)
    blob = buffer.getvalue()
    with pytest.raises(ckpt.CheckpointError, match="checksum"):
        decode("t", blob[:-1] + bytes([blob[-1] ^ 0xFF]))


@pytest.mark.parametrize("state", [_state(2000), _shelf(2000)], ids=["whole", "parted"])
def test_streaming_does_not_hold_the_pickled_state(state: object) -> None:
    size = len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))

    class Sink(io.RawIOBase):  # a seekable file that keeps nothing
        def writable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return True

        def write(self, data: bytes) -> int:  # type: ignore[override]
            return len(data)

        def seek(self, offset: int, whence: int = 0) -> int:
            return offset

    tracemalloc.start()
    try:
        write_stream(Checkpoint("t", 0, 1, state), Sink())
        _, streamed_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        encode(Checkpoint("t", 0, 1, state))
        _, encoded_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert encoded_peak > size  # the in-memory encoding holds at least the payload
    assert streamed_peak < size / 2
