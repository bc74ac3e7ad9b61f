"""Batched detection gives the state and alarms of updating event by event.

``DetectorBank.update_batch`` runs each detector over a segment's events of a micro-batch
(skipping the events that lack a field the detector requires), and ``Pipeline`` routes a
batch first and detects per segment afterwards. These tests compare both with the per-event
path on simulated streams with faults, including failing detectors.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from detectors import BankConfig, DetectorBank
from detectors.alarm import Alarm
from detectors.bank import BATCH_FROM
from detectors.rate_bound import RateBound, wilson_lower_bound
from monitor.alerts import AlertTracker
from monitor.config import DetectorSettings, PipelineSettings
from monitor.events import InvalidEvent, RolloutEvent, decode_event
from monitor.pipeline import Pipeline
from monitor.simulate import Fault, SimulationConfig, generate

FAULTS = (
    Fault("error_burst", "math-v2", 3000),
    Fault("reward_drop", "code-sandbox", 4000),
    Fault("masked_failure", "tool-use", 5000),
    Fault("truncation", "math-v2", 6000),
)


def _stream(events: int, seed: int) -> list[RolloutEvent]:
    """A simulated stream where some events lack ``completion_hash`` / ``num_tool_calls``."""
    rng = random.Random(seed)
    out = []
    for message in generate(SimulationConfig(seed=seed, events=events, faults=FAULTS)):
        try:
            event = decode_event(message)
        except InvalidEvent:
            continue
        if rng.random() < 0.3:
            event = msgspec.structs.replace(event, completion_hash=None)
        if rng.random() < 0.3:
            event = msgspec.structs.replace(event, num_tool_calls=None)
        out.append(event)
    return out


def _state(bank: DetectorBank) -> list[tuple[str, float, float, bool, Alarm | None]]:
    return [(i, d.statistic, d.threshold, d.active, d.alarm) for i, d in bank.detectors.items()]


@pytest.mark.parametrize("seed", [3, 4])
def test_update_batch_equals_per_event_updates(seed: int) -> None:
    events = _stream(12_000, seed)
    rng = random.Random(seed)
    by_segment: dict[tuple[str, str], list[RolloutEvent]] = {}
    for event in events:
        by_segment.setdefault((event.run_id, event.env_id), []).append(event)
    alarms_seen = 0
    for segment_events in by_segment.values():
        one, many = DetectorBank(), DetectorBank()
        expected = []
        for i, event in enumerate(segment_events):
            expected += [(i, a) for a in one.update(event)]
        got = []
        start = 0
        while start < len(segment_events):
            size = rng.choice((1, 2, 7, 50, 300))
            found, failed = many.update_batch(segment_events[start : start + size])
            assert failed == {}
            got += [(start + i, a) for i, a in found]
            start += size
        assert got == expected
        assert _state(many) == _state(one)
        alarms_seen += len(expected)
    assert alarms_seen > 0  # the faults fired: the comparison covered alarms


class _Reads:
    """An event that records which of its fields were read, and for which event (by
    position). Compiled detectors are called through their class's method table, which a
    patched method would not change: what reaches a detector is told by what it reads."""

    def __init__(self, event: RolloutEvent, position: int, log: list[tuple[int, str]]) -> None:
        self._event, self._position, self._log = event, position, log

    def __getattr__(self, name: str) -> Any:
        self._log.append((self._position, name))
        return getattr(self._event, name)


def test_events_without_a_required_field_skip_only_that_detector() -> None:
    # verifier_flakiness requires completion_hash and reads ``reward`` first; error_rate
    # requires nothing and reads ``error`` first; neither reads the other's field.
    events = _stream(2000, 5)
    log: list[tuple[int, str]] = []
    bank = DetectorBank(BankConfig(enabled=("verifier_flakiness", "error_rate")))
    bank.update_batch([_Reads(e, i, log) for i, e in enumerate(events)])
    with_hash = [i for i, e in enumerate(events) if e.completion_hash is not None]
    assert 0 < len(with_hash) < len(events)
    assert sorted({i for i, name in log if name == "reward"}) == with_hash
    assert sorted({i for i, name in log if name == "error"}) == list(range(len(events)))


class _Breaking:
    """An event whose ``trainer_version`` cannot be read: ``policy_staleness``, the only
    detector that reads it, fails on it (a failure injected through the data, so it is the
    same whether the detectors run compiled or not)."""

    def __init__(self, event: RolloutEvent) -> None:
        self._event = event

    def __getattr__(self, name: str) -> Any:
        return getattr(self._event, name)

    @property
    def trainer_version(self) -> int:
        raise RuntimeError("broken detector")


@pytest.mark.parametrize("chunk", [1, BATCH_FROM - 1, BATCH_FROM, 600])
def test_a_failing_detector_drops_that_event_for_the_later_detectors(chunk: int) -> None:
    bad = {17, 250, 599}
    events: list[Any] = [
        _Breaking(e) if i in bad else e for i, e in enumerate(_stream(3000, 6)[:600])
    ]
    failing = list(DetectorBank().detectors).index("policy_staleness")

    def run(batched: bool) -> tuple[list[tuple[int, str]], set[int], Any]:
        bank = DetectorBank()
        alarms: list[tuple[int, str]] = []
        failures: set[int] = set()
        if batched:  # in chunks, below and from BATCH_FROM events
            for start in range(0, len(events), chunk):
                found, failed = bank.update_batch(events[start : start + chunk])
                alarms += [(start + i, a.detector) for i, a in found]
                failures |= {start + i for i in failed}
            return alarms, failures, _state(bank)
        for i, event in enumerate(events):
            try:
                alarms += [(i, a.detector) for a in bank.update(event)]
            except RuntimeError:
                failures.add(i)
        return alarms, failures, _state(bank)

    per_event, batched = run(False), run(True)
    assert batched[1] == bad == per_event[1]
    assert batched[0] == per_event[0]
    assert batched[2][failing + 1 :] == per_event[2][failing + 1 :]  # the detectors after it
    assert batched[2] == per_event[2]


def _messages(events: list[RolloutEvent]) -> list[Any]:
    class Msg:
        __slots__ = ("partition", "topic", "value")

        def __init__(self, value: bytes, partition: int) -> None:
            self.value, self.topic, self.partition = value, "t", partition

    out = []
    for i, event in enumerate(events):
        value = msgspec.json.encode(event)
        out.append(Msg(value if i % 97 else b"{not json", i % 3))
        if i % 89 == 0:
            out.append(Msg(value, i % 3))  # a duplicate
    return out


def test_pipeline_batches_give_the_per_message_alarms_and_counts() -> None:
    events = _stream(15_000, 8)
    messages = _messages(events)

    def run(batch: int) -> tuple[list[Any], dict[str, Any]]:
        tracker = AlertTracker(60, "d", [])
        calls: list[Any] = []
        on_alarm = tracker.on_alarm
        tracker.on_alarm = lambda *a: (calls.append(a), on_alarm(*a))[1]  # type: ignore[method-assign]
        pipeline = Pipeline(PipelineSettings(max_segments=2), DetectorSettings(), tracker)
        if batch == 0:
            for m in messages:
                pipeline._process_bytes(
                    m.value,
                    m,
                    (m.topic, m.partition),
                    pipeline.partition_state((m.topic, m.partition)),
                )
            pipeline.end_batch()
        else:
            for start in range(0, len(messages), batch):
                pipeline.process_messages(messages[start : start + batch])
        c = pipeline.counters
        segments = {
            (s.run, s.env): (s.events, dict(s.status_counts), list(s.rewards), s.last_ts)
            for s in pipeline.segments
        }
        counts = {
            "processed": c.processed,
            "duplicates": c.duplicates,
            "invalid": c.invalid,
            "segments": segments,
            "overflow": pipeline.segments.overflow_events,
            "per_partition": sorted((k, s.processed) for k, s in pipeline.partitions.items()),
        }
        return [(a[0], a[1], a[2].detector, a[2].severity, a[3], a[4]) for a in calls], counts

    reference = run(0)
    assert len(reference[0]) > 0 and reference[1]["overflow"] > 0
    assert run(1000) == reference
    assert run(37) == reference


def test_rate_bound_statistic_is_the_bound_it_did_not_compute() -> None:
    rng = random.Random(9)
    rate = RateBound(threshold=0.05, window=200, min_samples=20, arl0=1e6)
    for i in range(3000):
        p = 0.01 if i < 1500 else 0.2
        rate.update(rng.random() < p)
        if rate.n >= rate.min_samples:
            expected = wilson_lower_bound(rate.count, rate.n, rate.z)
            assert rate.statistic == expected
            assert rate.active == (expected > rate.threshold)


def test_bank_config_requires_fields_that_events_have() -> None:
    from detectors.bank import DETECTORS
    from detectors.protocol import EVENT_FIELDS

    required = {cls.requires for cls in DETECTORS.values()} - {None}
    assert required and required <= set(EVENT_FIELDS)
    assert BankConfig().enabled == tuple(DETECTORS)
