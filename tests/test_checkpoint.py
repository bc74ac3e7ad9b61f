"""Checkpoint blobs: round trip, and every way a stored checkpoint can be unusable."""

from __future__ import annotations

import io
import json
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from events_factory import encode, failing, healthy_stream

from monitor import checkpoint as ckpt
from monitor.alerts import AlertLog, AlertTracker
from monitor.checkpoint import Checkpoint, CheckpointError, DirectoryStore
from monitor.config import DetectorSettings, PipelineSettings
from monitor.dedup import RecentIds
from monitor.pipeline import Pipeline

_VERSION = f'"format_version": {ckpt.FORMAT_VERSION}'.encode()


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
        (lambda b: b.replace(_VERSION, b'"format_version": 1'), "format version"),
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


# -- a pipeline's partition snapshot: a head, then one pickle per segment ---------------------

PARTITION = ("rl.rollouts", 2)
ENVS = ("math-v2", "code", "chess", "geo")


@dataclass
class _Msg:
    value: bytes | None
    topic: str = PARTITION[0]
    partition: int = PARTITION[1]


def _stream(first: int, last: int) -> list[_Msg]:
    """Events ``first`` to ``last - 1`` of each env, interleaved. ``code`` fails every third
    episode from 1500 on; ``math-v2`` from 600 to 1200, so its alert is active at 1500."""
    events = {env: healthy_stream(last, seed=i, env_id=env) for i, env in enumerate(ENVS)}
    out = []
    for i in range(first, last):
        for env in ENVS:
            event = {**events[env][i], "event_id": f"{env}-{i}"}
            if _fails(env, i):
                event = failing(event)
            out.append(_Msg(encode([event])[0]))
    return out


def _fails(env: str, i: int) -> bool:
    if env == "code":
        return i >= 1500 and i % 3 != 0
    return env == "math-v2" and 600 <= i < 1200 and i % 3 != 0


def _pipeline() -> tuple[Pipeline, AlertLog]:
    log = AlertLog()
    tracker = AlertTracker(60.0, "docs/detectors.md", [log])
    return Pipeline(PipelineSettings(dedup_window=1000), DetectorSettings(), tracker), log


def _segment_state(pipeline: Pipeline) -> dict[tuple[str, str], tuple[Any, ...]]:
    """What each segment has computed: counters, windows, each detector's statistic."""
    return {
        (s.run, s.env): (
            s.events,
            s.status_counts,
            s.reward_sum,
            s.rewards.tobytes(),
            s.lengths.tobytes(),
            [
                (i, repr(d.statistic), repr(d.threshold), d.active)
                for i, d in s.bank.detectors.items()
            ],
        )
        for s in pipeline.segments.of_partition(PARTITION)
    }


def _transitions(alerts: list[Any]) -> list[tuple[Any, ...]]:
    return [(a.status, a.detector, a.severity, a.run, a.env, a.event_ts) for a in alerts]


def _warm() -> tuple[Pipeline, AlertLog, bytes]:
    """A pipeline after 1,500 events of each env on partition 2 (and one segment on another
    partition), and the blob of partition 2's checkpoint, written as the daemon writes it."""
    pipeline, log = _pipeline()
    pipeline.process_messages(_stream(0, 1500))
    other = {**healthy_stream(1, env_id="elsewhere")[0], "event_id": "elsewhere"}
    pipeline.process_messages([_Msg(encode([other])[0], partition=7)])
    buffer = io.BytesIO()
    ckpt.write_stream(Checkpoint(*PARTITION, 6000, pipeline.snapshot(PARTITION)), buffer)
    return pipeline, log, buffer.getvalue()


@pytest.fixture(scope="module")
def warm() -> tuple[Pipeline, AlertLog, bytes]:
    """:func:`_warm`, for the tests that only read it."""
    return _warm()


def _split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    start = len(ckpt.MAGIC) + ckpt._LEN.size
    (header_len,) = ckpt._LEN.unpack_from(blob, len(ckpt.MAGIC))
    return json.loads(blob[start : start + header_len]), blob[start + header_len :]


def _memo_sizes(payload: bytes) -> list[int]:
    """The number of objects each pickle of ``payload`` memoizes, pickle by pickle."""
    stream, sizes = io.BytesIO(payload), []
    while stream.tell() < len(payload):
        ops = pickletools.genops(stream)  # reads one pickle, up to its STOP
        sizes.append(sum(op.name in _MEMO_OPS for op, _, _ in ops))
    return sizes


_MEMO_OPS = {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"}


def test_pipeline_checkpoint_restores_a_partition_that_goes_on_like_the_original() -> None:
    original, original_log, blob = _warm()
    restored, restored_log = _pipeline()
    restored.restore(PARTITION, ckpt.decode("blob", blob).state)
    assert len(restored.segments) == len(ENVS)
    assert _segment_state(restored) == _segment_state(original)
    names = {("run-a", env) for env in ENVS}
    exported = restored.tracker.export(names)
    assert exported == original.tracker.export(names)
    assert ("run-a", "math-v2", "error_rate", "page") in exported["active"], "alert restored"

    checkpointed_at = len(original_log.alerts)
    later = _stream(1500, 3000)
    for pipeline in (original, restored):
        for i in range(0, len(later), 1000):
            pipeline.process_messages(later[i : i + 1000])
    assert _segment_state(restored) == _segment_state(original)
    after = _transitions(restored_log.alerts)
    assert after == _transitions(original_log.alerts[checkpointed_at:])
    assert ("firing", "error_rate", "page", "run-a", "code") in [t[:5] for t in after]
    assert restored.partitions[PARTITION].processed == 4 * 3000
    assert original.partitions[PARTITION].processed == 4 * 3000


def test_restored_segments_share_one_bank_config(warm: tuple[Pipeline, AlertLog, bytes]) -> None:
    pipeline, _, blob = warm
    segments = ckpt.decode("blob", blob).state.segments
    configs = {id(s.bank.config) for s in segments}
    assert len(segments) == len(ENVS) and len(configs) == 1
    assert segments[0].bank.config == pipeline.segments.snapshot()[0].bank.config


def test_pipeline_checkpoint_is_a_head_then_one_pickle_per_segment(
    warm: tuple[Pipeline, AlertLog, bytes],
) -> None:
    """Each segment has a pickler, and so a memo, of its own: the memo does not grow with the
    number of segments (why that matters: ``monitor.checkpoint.PartedState``)."""
    pipeline, _, blob = warm
    header, payload = _split(blob)
    segments = pipeline.snapshot(PARTITION).segments
    assert header["parts"] == len(segments) == len(ENVS)
    sizes = _memo_sizes(payload)
    assert len(sizes) == 1 + len(segments)
    alone = [_memo_sizes(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL))[0] for s in segments]
    assert sizes[1:] == alone


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (
            lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0x01]) + b[len(b) // 2 + 1 :],
            "checksum",
        ),
        (lambda b: b[: len(b) * 3 // 4], "payload"),
        (lambda b: b.replace(b'"parts": 4', b'"parts": 3'), "bytes after the last of 3 parts"),
        (lambda b: b.replace(b'"parts": 4', b'"parts": 5'), "does not load: EOFError"),
        (lambda b: b.replace(b'"parts": 4', b'"parts": -4'), "corrupted header"),
        (lambda b: b.replace(_VERSION, b'"format_version": 1'), "format version 1"),
    ],
)
def test_damaged_pipeline_checkpoint_is_refused(
    warm: tuple[Pipeline, AlertLog, bytes], damage: Any, reason: str
) -> None:
    blob = warm[2]
    damaged = damage(blob)
    assert damaged != blob
    with pytest.raises(CheckpointError) as info:
        ckpt.decode("blob", damaged)
    assert reason in info.value.reason


def test_a_full_duplicate_window_is_written_as_a_stream_and_read_back() -> None:
    # 20,000 remembered ids: the window's arrays exceed pickle's 64 KiB frames, which
    # pickle then hands to the writer as buffers of their own (not bytes)
    pipeline, _ = _pipeline()
    state = pipeline.partition_state(PARTITION)
    state.dedup = RecentIds(50_000)
    ids = [f"id-{i}" for i in range(20_000)]
    assert not any(state.dedup.seen_many(ids))
    buffer = io.BytesIO()
    ckpt.write_stream(Checkpoint(*PARTITION, 20_000, pipeline.snapshot(PARTITION)), buffer)
    blob = buffer.getvalue()
    header, payload = _split(blob)
    assert header["payload_bytes"] == len(payload)
    window = ckpt.decode("blob", blob).state.state.dedup
    assert len(window) == 20_000
    assert window.seen_many([*ids[::1000], "new"]) == [True] * 20 + [False]


def test_a_checkpoint_of_the_python_build_restores_into_this_one() -> None:
    """``tests/data/checkpoint-python-8bf8863.bin`` is ``_warm()``'s checkpoint as commit
    8bf8863 wrote it, before the mypyc build (detectors and segments pickled by Python's
    default for slotted classes). Restored here (compiled or not), the partition goes on like
    one that never stopped."""
    blob = (Path(__file__).parent / "data" / "checkpoint-python-8bf8863.bin").read_bytes()
    original, _, _ = _warm()
    restored, _ = _pipeline()
    restored.restore(PARTITION, ckpt.decode("blob", blob).state)
    assert _segment_state(restored) == _segment_state(original)
    later = _stream(1500, 3000)
    for pipeline in (original, restored):
        for i in range(0, len(later), 1000):
            pipeline.process_messages(later[i : i + 1000])
    assert _segment_state(restored) == _segment_state(original)
    assert restored.partitions[PARTITION].processed == 4 * 3000


def test_detector_objects_pickle_their_values_without_names_and_read_the_named_layout() -> None:
    """Format 3: a detector object is the list of its values in sorted-name order; the
    ``(None, {name: value})`` layout of format 2 (and of an object with an unset attribute)
    still restores the same object."""
    from detectors._base import state_names
    from detectors.cusum import MeanShiftCUSUM

    detector = MeanShiftCUSUM(warmup=16)
    for i in range(200):
        detector.update(float(i % 7))
    names = sorted(state_names(MeanShiftCUSUM))
    values = detector.__getstate__()
    assert isinstance(values, list) and len(values) == len(names)
    blob = pickle.dumps(detector)
    assert b"baseline_halflife" not in blob  # the names are not written
    assert pickle.dumps(pickle.loads(blob)) == blob
    named = MeanShiftCUSUM()
    named.__setstate__((None, dict(zip(names, values, strict=True))))
    assert pickle.dumps(named) == blob
    with pytest.raises(ValueError):  # a list of another length: the attributes changed
        MeanShiftCUSUM().__setstate__(values[:-1])


def test_a_checkpoint_of_format_2_is_read_and_other_versions_are_refused() -> None:
    blob = (Path(__file__).parent / "data" / "checkpoint-python-8bf8863.bin").read_bytes()
    assert b'"format_version": 2' in blob
    checkpoint = ckpt.decode("blob", blob)
    assert checkpoint.next_offset >= 0
    assert checkpoint.state.segments
    for segment in checkpoint.state.segments:  # format 2 held reward_hacking's names as a set
        assert type(segment.bank.detectors["reward_hacking"]._names) is dict
    with pytest.raises(CheckpointError, match="format version 1 "):
        ckpt.decode("blob", blob.replace(b'"format_version": 2', b'"format_version": 1'))
