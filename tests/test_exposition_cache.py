"""The per-segment text kept between scrapes: reused only while it is current, and always the
same exposition as the reference collectors, byte for byte the plain line-by-line rendering;
the quantiles equal numpy's to the last bit."""

from __future__ import annotations

import json
import math
import urllib.request
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.alerts import AlertLog, AlertTracker
from monitor.config import DetectorSettings, PipelineSettings
from monitor.events import event_from_mapping
from monitor.exposition import (
    _HEADERS,
    SegmentExposition,
    _escape,
    _float32_keys,
    _num,
    _quantiles,
    _sort_rows,
    _Windows,
)
from monitor.http import MonitorHTTPServer
from monitor.metrics import QUANTILES, build_registry
from monitor.pipeline import Pipeline
from monitor.segments import STATUSES
from monitor.simulate import SimulationConfig, generate
from tests.events_factory import healthy_stream

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], Any]


@dataclass
class Msg:
    value: bytes
    topic: str = "t"
    partition: int = 0


def _samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "rollout_monitor_collect_duration_seconds":
                continue
            value = "nan" if math.isnan(s.value) else s.value
            out[(s.name, tuple(sorted(s.labels.items())))] = value
    return out


def _reference(pipeline: Pipeline) -> Samples:
    """The per-segment samples of the reference collectors."""
    full = _samples(generate_latest(build_registry(pipeline)).decode())
    core = _samples(generate_latest(build_registry(pipeline, per_segment=False)).decode())
    return {k: v for k, v in full.items() if k not in core}


def _rendered(exposition: SegmentExposition) -> Samples:
    return _samples(exposition.render().decode())


def _events(n: int, envs: int, start: int = 0, seed: int = 0) -> list[Msg]:
    out = []
    for i, event in enumerate(healthy_stream(n + start, seed=seed)[start:], start=start):
        event["event_id"] = f"e{i}"
        event["env_id"] = f"env-{i % envs}"
        event["ts"] = 1_764_000_000.0 + i
        out.append(Msg(json.dumps(event).encode()))
    return out


def _pipeline() -> Pipeline:
    return Pipeline(
        PipelineSettings(max_segments=50), DetectorSettings(), AlertTracker(60, "d", [AlertLog()])
    )


def _statistic_lines(exposition: SegmentExposition, env: str) -> list[bytes]:
    return [
        line
        for line in exposition.render().splitlines()
        if line.startswith(b"rollout_monitor_detector_statistic{")
        and f'env="{env}"'.encode() in line
    ]


def test_a_changed_segment_shows_its_new_values_and_idle_ones_reuse_their_text() -> None:
    pipeline = _pipeline()
    pipeline.process_messages(_events(600, envs=4))
    exposition = SegmentExposition(pipeline)
    assert _rendered(exposition) == _reference(pipeline)
    assert exposition.last_rendered == 4

    pipeline.end_batch()  # a batch boundary: the texts read above are now settled
    exposition.render()
    assert exposition.last_rendered == 4  # read once more, after the batch had ended
    idle = exposition.render()
    assert exposition.last_rendered == 0  # nothing changed: every text reused
    assert idle == SegmentExposition(pipeline).render()  # as a fresh render

    # More events for env-1 only (positions 1, 5, 9, ... of a 4-env stream).
    completed = (
        "rollout_monitor_events_total",
        (("env", "env-1"), ("run", "run-a"), ("status", "completed")),
    )
    assert _rendered(exposition)[completed] == 150
    later = [m for i, m in enumerate(_events(400, envs=4, start=600, seed=1)) if i % 4 == 1]
    pipeline.process_messages(later)
    assert _rendered(exposition) == _reference(pipeline)
    assert exposition.last_rendered == 1
    assert _rendered(exposition)[completed] == 250


def test_a_text_read_between_the_counts_and_the_detectors_is_read_again_after_the_batch() -> None:
    """The consumer moves a segment's event count before it updates its detectors: a text
    read in between is not kept once the batch has ended."""
    pipeline = _pipeline()
    pipeline.process_messages(_events(600, envs=2))
    exposition = SegmentExposition(pipeline)
    exposition.render()
    pipeline.end_batch()
    exposition.render()
    segment = pipeline.segments.lookup("run-a", "env-0")
    assert segment is not None

    failed = [
        event_from_mapping(
            {**e, "event_id": f"x{i}", "env_id": "env-0", "status": "failed", "reward": None}
        )
        for i, e in enumerate(healthy_stream(300, seed=3))
    ]
    segment.record_batch(failed)  # the marker moves...
    stale = _statistic_lines(exposition, "env-0")  # ...and a scrape reads now
    segment.bank.update_batch(failed)  # the detectors see the events
    assert _statistic_lines(exposition, "env-0") == stale  # no batch ended yet: kept
    pipeline.end_batch()  # the batch ends
    fresh = _statistic_lines(exposition, "env-0")
    assert fresh != stale
    assert _rendered(exposition) == _reference(pipeline)
    assert _statistic_lines(exposition, "env-0") == fresh  # and from now on it is kept
    assert exposition.last_rendered == 0


def test_dropped_segments_leave_the_output_and_the_cache() -> None:
    pipeline = _pipeline()
    msgs = _events(400, envs=6)
    for i, m in enumerate(msgs):
        m.partition = i % 6 % 2  # env-0, 2, 4 on partition 0; env-1, 3, 5 on partition 1
    pipeline.process_messages(msgs)
    exposition = SegmentExposition(pipeline)
    exposition.render()
    pipeline.drop(("t", 1))
    assert _rendered(exposition) == _reference(pipeline)
    assert len(exposition._entries) == len(pipeline.segments) == 3


class _Stub:
    """A detector whose statistic and threshold are set by the test."""

    def __init__(self, statistic: Any, threshold: Any) -> None:
        self.statistic = statistic
        self.threshold = threshold


@pytest.mark.parametrize(
    ("statistic", "threshold"),
    [
        (math.nan, 1.0),
        (math.inf, -math.inf),
        (np.float32(0.1), np.float64(2.5)),
        (3, 1e308),
        (1e308, 1e308),  # their sum overflows: still rendered as they are
    ],
)
def test_special_values_are_spelled_as_the_collectors_do(statistic: Any, threshold: Any) -> None:
    pipeline = _pipeline()
    pipeline.process_messages(_events(50, envs=1))
    segment = pipeline.segments.lookup("run-a", "env-0")
    assert segment is not None
    segment.bank._by_id["error_rate"] = _Stub(statistic, threshold)  # type: ignore[assignment]
    assert _rendered(SegmentExposition(pipeline)) == _reference(pipeline)


def test_empty_windows_give_nan_quantiles() -> None:
    pipeline = _pipeline()
    unscored = [
        {**e, "event_id": f"u{i}", "reward": None, "completion_tokens": None}
        for i, e in enumerate(healthy_stream(20))
    ]
    pipeline.process_messages([Msg(json.dumps(e).encode()) for e in unscored])
    rendered = _rendered(SegmentExposition(pipeline))
    assert rendered == _reference(pipeline)
    key = ("rollout_monitor_reward", (("env", "math-v2"), ("quantile", "0.5"), ("run", "run-a")))
    assert rendered[key] == "nan"


@pytest.mark.parametrize("kind", ["normal", "ties", "huge", "infinite", "nan"])
def test_quantiles_equal_numpys_to_the_last_bit(kind: str) -> None:
    rng = np.random.default_rng(7)
    for n in [*range(1, 40), 100, 255, 256, 511, 512, 513, 600]:
        m = rng.normal(size=(5, n))
        if kind == "ties":
            m = np.round(m)
        elif kind == "huge":
            m *= 1e300
        elif kind == "infinite":
            m[rng.random((5, n)) < 0.1] = np.inf
            m[rng.random((5, n)) < 0.1] = -np.inf
        elif kind == "nan":
            m[rng.random((5, n)) < 0.05] = np.nan
        with np.errstate(invalid="ignore"):
            expected = np.array([np.quantile(row, QUANTILES) for row in m])
        got = np.array(_quantiles(m.copy()))
        assert np.array_equal(got, expected, equal_nan=True), (kind, n)


def test_windows_of_mixed_lengths_and_types() -> None:
    rng = np.random.default_rng(3)
    windows: list[Any] = []
    for n in (512, 0, 3, 512, 3, 1, 200):
        values = rng.normal(size=n).tolist()
        windows.append(array("d", values) if n % 2 == 0 else values)
    collected = _Windows()
    for w in windows:
        collected.add(w)
    got = collected.quantiles()
    for w, row in zip(windows, got, strict=True):
        if len(w):
            assert row == np.quantile(np.asarray(w, dtype=float), QUANTILES).tolist()
        else:
            assert all(math.isnan(v) for v in row)


@pytest.mark.parametrize("as_chunks", [True, False])
def test_the_endpoint_writes_the_chunks_as_one_body(as_chunks: bool) -> None:
    pipeline = _pipeline()
    pipeline.process_messages(_events(300, envs=3))
    exposition = SegmentExposition(pipeline)
    registry = build_registry(pipeline, per_segment=False)
    server = MonitorHTTPServer(
        "127.0.0.1",
        0,
        registry,
        lambda: (True, "ok"),
        extra=exposition.chunks if as_chunks else exposition.render,
    ).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            body = r.read()
            length = int(r.headers["Content-Length"])
    finally:
        server.close()
    assert length == len(body)
    assert _samples(body.decode()) == _samples(
        (generate_latest(registry) + SegmentExposition(pipeline).render()).decode()
    )
    assert body.endswith(b"\n")


def _naive(pipeline: Pipeline) -> bytes:
    """The per-segment families written the plain way, line by line, as the exposition was
    first written: each family's lines, segment after segment; a block of values in ``str``
    unless one is NaN, infinite or not a Python number, in which case the whole block is
    spelled as floats (``_num``); quantiles by ``np.quantile``."""

    def block(lines: list[str], values: list[Any]) -> str:
        total = sum(values, 0.0)
        fast = type(total) is float and math.isfinite(total)
        texts = [str(v) if fast else _num(v) for v in values]
        return "".join(f"{line} {text}\n" for line, text in zip(lines, texts, strict=True))

    def quantiles(window: Any) -> list[Any]:
        if not len(window):
            return [math.nan] * len(QUANTILES)
        with np.errstate(invalid="ignore"):
            values: list[Any] = np.quantile(np.asarray(window), QUANTILES).tolist()
        return values

    families: list[list[str]] = [[] for _ in range(7)]
    for s in pipeline.segments.snapshot():
        p = f'run="{_escape(s.run)}",env="{_escape(s.env)}"'
        ids = list(s.bank.detectors)
        detectors = list(s.bank.detectors.values())
        families[0].append(
            block(
                [f'rollout_monitor_events_total{{{p},status="{x}"}}' for x in STATUSES],
                [s.status_counts[x] for x in STATUSES],
            )
        )
        families[1].append(f"rollout_monitor_unscored_events_total{{{p}}} {s.unscored}\n")
        families[2].append(
            block([f"rollout_monitor_last_event_timestamp_seconds{{{p}}}"], [s.last_ts])
        )
        for i, (name, window, n, total) in enumerate(
            (
                ("rollout_monitor_reward", s.rewards, s.reward_count, s.reward_sum),
                ("rollout_monitor_completion_tokens", s.lengths, s.length_count, s.length_sum),
            )
        ):
            lines = [f'{name}{{{p},quantile="{q}"}}' for q in QUANTILES]
            lines += [f"{name}_count{{{p}}}", f"{name}_sum{{{p}}}"]
            families[3 + i].append(block(lines, [*quantiles(window), n, total]))
        for i, attribute in ((5, "statistic"), (6, "threshold")):
            name = f"rollout_monitor_detector_{attribute}"
            families[i].append(
                block(
                    [f'{name}{{{p},detector="{d}"}}' for d in ids],
                    [getattr(d, attribute) for d in detectors],
                )
            )
    headers = [h.decode() for h in _HEADERS]
    return "".join(h + "".join(f) for h, f in zip(headers, families, strict=True)).encode()


def _segment_part(exposition: SegmentExposition) -> bytes:
    return exposition.render().split(b"# HELP rollout_monitor_alarms_total")[0]


def test_the_text_is_byte_for_byte_the_plain_rendering_scrape_after_scrape() -> None:
    """Round after round of events (new segments, windows filling, reward_distribution's
    threshold moving, a segment left idle), the kept-and-reused text, a fresh render and
    the plain line-by-line rendering are the same bytes."""
    pipeline = _pipeline()
    kept = SegmentExposition(pipeline)
    config = SimulationConfig(seed=4, events=12_000, envs=("math-v2", "code-sandbox", "tool-use"))
    messages = [Msg(m) for m in generate(config)]
    # a segment with an odd name, fed once, then idle; and one with no scored event
    odd = [
        {**e, "event_id": f"o{i}", "env_id": 'we"ird\\env\nname'}
        for i, e in enumerate(healthy_stream(40))
    ]
    unscored = [
        {**e, "event_id": f"u{i}", "env_id": "unscored", "reward": None}
        for i, e in enumerate(healthy_stream(5))
    ]
    messages[:0] = [Msg(json.dumps(e).encode()) for e in odd + unscored]
    thresholds: set[float] = set()
    for start in range(0, len(messages), 700):
        pipeline.process_messages(messages[start : start + 700])
        if start % 1400:
            pipeline.end_batch()
        text = _segment_part(kept)
        assert text == _naive(pipeline)
        assert text == _segment_part(SegmentExposition(pipeline))
        for s in pipeline.segments.snapshot():
            thresholds.add(s.bank.detectors["reward_distribution"].threshold)
    pipeline.end_batch()
    assert _segment_part(kept) == _segment_part(kept) == _naive(pipeline)
    assert kept.last_rendered == 0
    assert len(thresholds) > 3  # the one threshold that moves did, and was rendered anew


class _FixedStub:
    """A detector whose class declares its threshold fixed (the test breaks the promise)."""

    fixed_threshold = True

    def __init__(self) -> None:
        self.statistic = 0.5
        self.threshold = 1.0


def test_a_threshold_declared_fixed_is_read_once_and_others_on_every_read() -> None:
    pipeline = _pipeline()
    pipeline.process_messages(_events(50, envs=1))
    segment = pipeline.segments.lookup("run-a", "env-0")
    assert segment is not None
    fixed, moving = _FixedStub(), _Stub(0.25, 2.0)
    segment.bank._by_id["error_rate"] = fixed  # type: ignore[assignment]
    segment.bank._by_id["truncation_rate"] = moving  # type: ignore[assignment]
    exposition = SegmentExposition(pipeline)

    def value(name: str, detector: str) -> Any:
        return _rendered(exposition)[
            (name, (("detector", detector), ("env", "env-0"), ("run", "run-a")))
        ]

    assert value("rollout_monitor_detector_threshold", "error_rate") == 1.0
    fixed.threshold, fixed.statistic = 3.0, 0.75
    moving.threshold = 4.0
    pipeline.process_messages(_events(10, envs=1, start=50))  # the marker moves: read again
    assert value("rollout_monitor_detector_statistic", "error_rate") == 0.75
    assert value("rollout_monitor_detector_threshold", "error_rate") == 1.0  # as promised
    assert value("rollout_monitor_detector_threshold", "truncation_rate") == 4.0


_KINDS = [
    "integers",  # token counts: float32 as they are
    "decimals",  # rewards with at most 4 decimals: float32 times 1e4
    "big_integers",  # beyond 2**24: float64
    "big_decimals",  # 4 decimals beyond 1677: float64
    "mixed",  # rows of each kind, and rows with NaN, -0.0, infinities
]


def _matrix(kind: str, rng: np.random.Generator, n: int) -> np.ndarray[Any, Any]:
    rows = 7
    if kind == "integers":
        return np.round(rng.lognormal(6.0, 1.0, size=(rows, n)))
    if kind == "decimals":
        return np.round(
            rng.choice([0.0, 0.1, 0.9, 1.0, 0.25, -0.3333], size=(rows, n))
            + np.round(rng.random((rows, n)), 4) * (rng.random((rows, n)) < 0.5),
            4,
        )
    if kind == "big_integers":
        return np.round(rng.uniform(2**24, 2**40, size=(rows, n)))
    if kind == "big_decimals":
        return np.round(rng.uniform(2000.0, 9000.0, size=(rows, n)), 4)
    m = np.round(rng.normal(size=(rows, n)) * 100)
    m[1] = rng.normal(size=n)  # not float32
    m[2] = np.round(rng.normal(size=n), 2)  # decimals
    m[3, rng.random(n) < 0.3] = -0.0
    m[4, rng.random(n) < 0.1] = np.nan
    m[5, rng.random(n) < 0.1] = np.inf
    m[5, rng.random(n) < 0.1] = -np.inf
    m[6] = np.round(rng.normal(size=n), 3) * 1e-300  # tiny: not float32
    return m


@pytest.mark.parametrize("kind", _KINDS)
def test_rows_sorted_as_float32_are_the_float64_sort(kind: str) -> None:
    rng = np.random.default_rng(11)
    for n in [1, 2, 3, 7, 100, 511, 512]:
        m = _matrix(kind, rng, n)
        got = m.copy()
        _sort_rows(got)
        expected = np.sort(m, axis=1)
        for row, want, original in zip(got, expected, m, strict=True):
            if (original.view(np.int64) == np.float64(-0.0).view(np.int64)).any():
                assert np.array_equal(row, want, equal_nan=True)  # zeros of both signs
            else:
                assert np.array_equal(row.view(np.int64), want.view(np.int64)), (kind, n)
        with np.errstate(invalid="ignore"):
            reference = np.array([np.quantile(row, QUANTILES) for row in m])
        assert np.array_equal(np.array(_quantiles(m.copy())), reference, equal_nan=True)


def test_the_float32_path_is_taken_for_counts_and_short_decimals() -> None:
    rng = np.random.default_rng(2)
    with np.errstate(over="ignore", invalid="ignore"):
        assert _float32_keys(_matrix("integers", rng, 512), 1.0)[1].all()
        assert _float32_keys(_matrix("decimals", rng, 512), 1e4)[1].all()
        assert not _float32_keys(_matrix("big_decimals", rng, 512), 1e4)[1].any()
        assert not _float32_keys(_matrix("big_integers", rng, 512), 1.0)[1].any()
