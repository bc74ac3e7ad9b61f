"""Checkpoint blobs: round trip, and every way a stored checkpoint can be unusable."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor import checkpoint as ckpt
from monitor.checkpoint import Checkpoint, CheckpointError, DirectoryStore


def _store(tmp_path: Path) -> DirectoryStore:
    store = DirectoryStore(tmp_path / "ckpt")
    store.save([Checkpoint("rl.rollouts", 3, 1234, {"segments": [1, 2, 3]})])
    return store


def test_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    store = _store(tmp_path)
    loaded = store.load("rl.rollouts", 3)
    assert loaded == Checkpoint("rl.rollouts", 3, 1234, {"segments": [1, 2, 3]})
    store.save([Checkpoint("rl.rollouts", 3, 2000, {"segments": []})])
    again = store.load("rl.rollouts", 3)
    assert again is not None and again.next_offset == 2000
    assert store.load("rl.rollouts", 4) is None
    assert not list((tmp_path / "ckpt").glob("*.tmp")), "no temporary file is left behind"


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[:-10], "payload"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), "checksum"),
        (lambda b: b"garbage" + b, "magic"),
        (lambda b: b[: len(ckpt.MAGIC) + 2], "truncated header"),
        (lambda b: b.replace(b'"format_version": 1', b'"format_version": 0'), "format version"),
    ],
)
def test_damaged_checkpoint_is_refused_with_a_reason(
    tmp_path: Path, damage: object, reason: str
) -> None:
    store = _store(tmp_path)
    path = store.path("rl.rollouts", 3)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(CheckpointError) as info:
        store.load("rl.rollouts", 3)
    assert reason in str(info.value)


def test_state_that_no_longer_loads_is_refused(tmp_path: Path) -> None:
    """A checkpoint whose classes changed since it was written (checksum intact)."""
    import hashlib
    import json

    payload = b"cmonitor.segments\nClassThatWasRenamed\n)\x81."
    header = json.dumps(
        {
            "format_version": ckpt.FORMAT_VERSION,
            "topic": "t",
            "partition": 0,
            "next_offset": 1,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "payload_bytes": len(payload),
        }
    ).encode()
    store = DirectoryStore(tmp_path)
    store.path("t", 0).write_bytes(ckpt.MAGIC + ckpt._LEN.pack(len(header)) + header + payload)
    with pytest.raises(CheckpointError) as info:
        store.load("t", 0)
    assert "does not load" in info.value.reason
    assert "ClassThatWasRenamed" in info.value.reason
