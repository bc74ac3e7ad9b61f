"""Memory per segment and per remembered event id: windows are C arrays, not Python objects.

A daemon holds one :class:`~detectors.bank.DetectorBank` per segment (thousands of them) and
one window of recent event ids per partition, so a float object (32 bytes) or a list slot
(8 bytes) per remembered value multiplies. These tests fail when a window goes back to a list
of objects, when a detector keeps the event's own objects alive, or when the constants every
segment derives from the same parameters stop being shared.
"""

from __future__ import annotations

import gc
import pickle
import random
import tracemalloc
from array import array
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from test_detectors_contract import event

import detectors
from bench._events import EventFactory
from detectors.bank import DetectorBank
from monitor.dedup import RecentIds
from monitor.events import RolloutEvent, decode_event
from monitor.segments import WINDOW, Segment

#: Enough events to fill every window of the default bank (feature_drift: 3072 events).
EVENTS = 4000
_SKIP = (type, type(len), type(gc), type(lambda: 0))


def _events(n: int, seed: int = 3) -> list[RolloutEvent]:
    factory = EventFactory(segments=1, seed=seed)
    stamps = 1_764_000_000.0 + np.arange(n) * 0.01
    return [decode_event(value) for _, value in factory.messages(n, stamps)]


def _reachable(root: object) -> Iterator[Any]:
    """The objects reachable from ``root`` (itself included), each once; classes, functions
    and modules are not followed."""
    seen = {id(root)}
    stack = [root]
    while stack:
        obj = stack.pop()
        yield obj
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and not isinstance(ref, _SKIP):
                seen.add(id(ref))
                stack.append(ref)


@pytest.fixture(scope="module")
def warm_banks() -> list[DetectorBank]:
    events = _events(EVENTS)
    banks = [DetectorBank(), DetectorBank()]
    for bank in banks:
        bank.update_batch(events)
    return banks


def test_windows_of_a_warm_bank_are_c_arrays(warm_banks: list[DetectorBank]) -> None:
    """No list or deque of 64 values or more: every window is an array or a bytearray."""
    long_lists = [
        (type(obj).__name__, len(obj))
        for obj in _reachable(warm_banks[0])
        if isinstance(obj, list | tuple) and len(obj) >= 64
    ]
    assert long_lists == []
    arrays = [obj for obj in _reachable(warm_banks[0]) if isinstance(obj, array)]
    window_values = sum(len(a) for a in arrays)
    # feature_drift (3 x 3072), reward_distribution (1536), invalid_reward (256), spans (2 x 256)
    assert window_values >= 3 * 3072 + 1536 + 256 + 2 * 200


def test_a_warm_bank_keeps_no_float_object_per_event(warm_banks: list[DetectorBank]) -> None:
    """Float objects are scalar state only (about 220 in a default bank); a window of floats
    in a list, or a ring holding the events' own reward objects, would add hundreds."""
    floats = sum(1 for obj in _reachable(warm_banks[0]) if type(obj) is float)
    assert floats < 300


def test_derived_constants_are_shared_between_segments(warm_banks: list[DetectorBank]) -> None:
    first, second = (bank.detectors["reward_shift"]._cusum for bank in warm_banks)  # type: ignore[attr-defined]
    for name in ("_h", "_fast_base", "_alpha", "_beta", "_n_cap", "_floor"):
        mine, theirs = getattr(first, name), getattr(second, name)
        if detectors.COMPILED and type(mine) in (float, int):
            # compiled, a float or int field is a C value in the object: no object to share
            assert mine == theirs, name
        else:
            assert mine is theirs, name


def test_size_of_a_warm_bank_is_bounded_by_its_windows(warm_banks: list[DetectorBank]) -> None:
    """The bank's objects add up to its windows (8 bytes a value; 4 for feature_drift's
    single-precision columns, 1 for the bit rings) plus a fixed overhead per detector."""
    objects = list(_reachable(warm_banks[0]))
    windows = sum(
        len(obj) * (obj.itemsize if isinstance(obj, array) else 1)
        for obj in objects
        if isinstance(obj, array | bytearray)
    )
    overhead = sum(obj.__sizeof__() for obj in objects) - windows
    assert windows < 64_000
    assert overhead < 36_000  # about 29 KB: ~450 objects of 15 detectors and their charts


def test_pickled_bank_keeps_compact_windows_and_its_behaviour() -> None:
    """A checkpointed and restored bank holds arrays again and raises the same alarms."""
    events = _events(EVENTS + 3000, seed=11)
    bank = DetectorBank()
    bank.update_batch(events[:EVENTS])
    restored = pickle.loads(pickle.dumps(bank, protocol=pickle.HIGHEST_PROTOCOL))
    ir = restored.detectors["invalid_reward"]
    assert isinstance(ir._recent, array) and ir._recent.typecode == "d"
    cusum = restored.detectors["reward_shift"]._cusum
    assert isinstance(cusum._cov, array) and len(cusum._cov) == cusum.lags
    assert bank.update_batch(events[EVENTS:]) == restored.update_batch(events[EVENTS:])
    assert pickle.dumps(bank) == pickle.dumps(restored)


def test_segment_rings_are_c_doubles() -> None:
    segment = Segment("r", "e", DetectorBank())
    for i in range(3 * WINDOW):
        segment.record("completed", i / 7, 100 + i, float(i))
    for ring in (segment.rewards, segment.lengths):
        assert isinstance(ring, array) and ring.typecode == "d" and len(ring) == WINDOW


def test_dedup_window_bytes_per_id() -> None:
    """Pins the window's footprint at the default capacity: about 20 traced bytes per id
    (16 in the sorted hash and insertion-number arrays, the rest in the dict of ids waiting
    to be merged), against about 131 when the window kept the 32-character strings in a set
    and a deque. Each 10,000 ids of ``dedup_window`` cost about 0.2 MB per partition."""
    capacity = 100_000
    rng = random.Random(5)
    window = RecentIds(capacity)
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(2 * capacity):
            assert not window.seen(f"{rng.getrandbits(128):032x}")
        gc.collect()
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(window) == capacity
    assert used / capacity < 24


def _distinct_names_stream(start: int, n: int) -> Iterator[RolloutEvent]:
    """Clean-looking events whose free-form strings are all new: task, group and completion
    hash, a reward component and a metric named after the episode (a trainer that put an id
    where a name belongs)."""
    rng = random.Random(start)
    for i in range(start, start + n):
        win = float(rng.random() < 0.5)
        yield event(
            event_id=f"e{i}",
            ts=1_764_000_000.0 + i * 0.01,
            reward=win,
            task_id=f"task-{i}",
            group_id=f"group-{i}",
            group_size=8,
            completion_hash=f"hash-{i}",
            completion_tokens=rng.randrange(100, 2000),
            reward_components={f"rubric-{i}": win, "format": 1.0},
            metrics={f"metric-{i}": rng.random()},
        )


def test_no_detector_grows_with_distinct_ids_and_names() -> None:
    """Every detector's state is bounded whatever strings the events carry: the pickled size
    of each one after 20,000 such events is no larger than after 10,000 (beyond a little
    slack for the values themselves)."""
    bank = DetectorBank()
    bank.update_batch(list(_distinct_names_stream(0, 10_000)))
    first = {name: len(pickle.dumps(d)) for name, d in bank.detectors.items()}
    bank.update_batch(list(_distinct_names_stream(10_000, 10_000)))
    second = {name: len(pickle.dumps(d)) for name, d in bank.detectors.items()}
    grew = {n: (first[n], second[n]) for n in first if second[n] > 1.05 * first[n] + 2048}
    assert not grew, f"pickled bytes after 10,000 and 20,000 events: {grew}"
