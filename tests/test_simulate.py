"""Tests of the synthetic rollout stream generator (monitor.simulate)."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest

from monitor.events import InvalidEvent, RolloutEvent, decode_event
from monitor.simulate import (
    DEFAULT_MAGNITUDES,
    FAULT_KINDS,
    Fault,
    SimulationConfig,
    SimulationStats,
    generate,
    generate_events,
    generate_messages,
    labels,
    main,
    register,
)

N = 20_000
START = 10_000
ENV = "math-v2"


def _decode_all(msgs: list[bytes]) -> list[RolloutEvent | InvalidEvent]:
    out: list[RolloutEvent | InvalidEvent] = []
    for m in msgs:
        try:
            out.append(decode_event(m))
        except InvalidEvent as exc:
            out.append(exc)
    return out


@pytest.fixture(scope="module")
def clean_msgs() -> list[bytes]:
    return list(generate(SimulationConfig(seed=7, events=N)))


@pytest.fixture(scope="module")
def clean(clean_msgs: list[bytes]) -> list[RolloutEvent]:
    return [decode_event(m) for m in clean_msgs]


_cache: dict[Fault, tuple[list[bytes], SimulationStats]] = {}


def faulted(fault: Fault) -> tuple[list[bytes], SimulationStats]:
    if fault not in _cache:
        stats = SimulationStats()
        msgs = list(generate(SimulationConfig(seed=7, events=N, faults=(fault,)), stats))
        _cache[fault] = (msgs, stats)
    return _cache[fault]


def env_events(events: list, env: str = ENV, lo: int = 0, hi: int = N) -> list[RolloutEvent]:
    return [e for e in events[lo:hi] if isinstance(e, RolloutEvent) and e.env_id == env]


def share(events: list[RolloutEvent], pred: Callable[[RolloutEvent], bool]) -> float:
    return sum(1 for e in events if pred(e)) / len(events)


def rewards(events: list[RolloutEvent]) -> list[float]:
    return [e.reward for e in events if e.reward is not None]


def component(e: RolloutEvent, name: str) -> float:
    assert e.reward_components is not None
    value = e.reward_components[name]
    assert value is not None
    return value


# ---- determinism and validity ---------------------------------------------------------------


def test_same_seed_same_bytes(clean_msgs: list[bytes]) -> None:
    assert list(generate(SimulationConfig(seed=7, events=N))) == clean_msgs
    other = list(generate(SimulationConfig(seed=8, events=N)))
    assert other != clean_msgs
    assert len(other) == N


def test_exact_message_count_and_small_streams() -> None:
    for n in (0, 1, 7, 8, 9, 4095, 4096, 4097, 10_001):
        assert sum(1 for _ in generate(SimulationConfig(events=n))) == n


def test_every_message_decodes(clean_msgs: list[bytes], clean: list[RolloutEvent]) -> None:
    assert len(clean) == len(clean_msgs) == N
    assert {e.schema_version for e in clean} == {1}
    assert len({e.event_id for e in clean}) == N  # unique ids, no duplicates when clean


def test_generate_events_matches_generate(clean_msgs: list[bytes]) -> None:
    events = list(generate_events(SimulationConfig(seed=7, events=N)))
    assert len(events) == N
    for i in (0, 1, 4095, 4096, N - 1):
        assert json.loads(clean_msgs[i]) == events[i]


def test_messages_are_keyed_by_segment() -> None:
    cfg = SimulationConfig(seed=1, events=3000, runs=("run-a", "run-b"))
    for key, value in generate_messages(cfg):
        event = decode_event(value)
        assert key == f"{event.run_id}|{event.env_id}".encode()


# ---- a clean stream looks healthy ----------------------------------------------------------


def test_clean_stream_has_no_contract_violations(clean: list[RolloutEvent]) -> None:
    for e in clean:
        if e.reward is not None:
            assert e.error is None
            assert e.reward_min is not None and e.reward_max is not None
            assert e.reward_min <= e.reward <= e.reward_max
            assert e.timings is not None and e.timings.score_s is not None
            assert e.timings.score_s < (e.timings.score_timeout_s or 30.0)
        if e.status == "failed":
            assert e.reward is None and e.error is not None
        if e.status == "truncated":
            assert e.reward == 0.0
            assert e.stop_reason in ("length", "max_turns")
        assert e.completion_tokens is not None and e.max_completion_tokens is not None
        assert e.completion_tokens <= e.max_completion_tokens
        assert e.trainer_version is not None and e.policy_version is not None
        assert 0 <= e.trainer_version - e.policy_version <= 2


def test_clean_failure_and_truncation_rates(clean: list[RolloutEvent]) -> None:
    failed = share(clean, lambda e: e.status == "failed")
    assert 0.002 < failed < 0.02
    truncated = share(clean, lambda e: e.status == "truncated")
    assert 0.003 < truncated < 0.02
    zero_at_timeout = [
        e
        for e in clean
        if e.reward == 0 and e.timings and e.timings.score_s == e.timings.score_timeout_s
    ]
    assert zero_at_timeout == []


def test_groups_are_complete_with_one_task(clean: list[RolloutEvent]) -> None:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(clean):
        assert e.group_id is not None
        groups[e.group_id].append(i)
    assert len(groups) == N // 8
    for idx in groups.values():
        members = [clean[i] for i in idx]
        assert len(members) == members[0].group_size == 8
        assert len({e.task_id for e in members}) == 1
        assert len({(e.run_id, e.env_id, e.policy_version) for e in members}) == 1
        assert max(idx) - min(idx) < 4 * 8  # emitted close together


def test_environments_interleave(clean: list[RolloutEvent]) -> None:
    for lo in range(0, N, 500):
        assert {e.env_id for e in clean[lo : lo + 250]} == {"math-v2", "code-sandbox", "tool-use"}


def test_learning_trend(clean: list[RolloutEvent]) -> None:
    for env in ("math-v2", "code-sandbox", "tool-use"):
        scored = rewards(env_events(clean, env))
        k = len(scored) // 5
        assert statistics.mean(scored[-k:]) > statistics.mean(scored[:k]) + 0.03, env


def test_environment_models(clean: list[RolloutEvent]) -> None:
    math_ev = [e for e in env_events(clean, "math-v2") if e.status == "completed"]
    assert {component(e, "correct") for e in math_ev} == {0.0, 1.0}
    code = [e for e in env_events(clean, "code-sandbox") if e.reward is not None]
    for e in code:
        assert e.metrics is not None
        assert e.reward == pytest.approx(
            0.0
            if e.status == "truncated"
            else e.metrics["tests_passed"] / e.metrics["tests_total"],
            abs=1e-4,
        )
    tool = env_events(clean, "tool-use")
    assert all(e.num_turns and e.num_tool_calls is not None for e in tool)
    assert len({e.reward for e in tool}) > 1000  # continuous
    # heavy tail: p99 far above the median
    tokens = sorted(e.completion_tokens or 0 for e in math_ev)
    assert tokens[int(0.99 * len(tokens))] > 3 * tokens[len(tokens) // 2]


def test_versions_and_event_time(clean: list[RolloutEvent]) -> None:
    versions = [e.policy_version or 0 for e in clean]
    assert versions[0] == 0 and max(versions) > 50
    ts = [e.ts for e in clean]
    assert all(b >= a for a, b in pairwise(ts))
    rate = N / (ts[-1] - ts[0])
    assert 150 < rate < 260  # 200 events/s on average
    gaps = sorted(b - a for a, b in pairwise(ts))
    assert gaps[-1] > 20 * gaps[len(gaps) // 2]  # bursts and lulls


# ---- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
def test_fault_changes_nothing_before_start(kind: str, clean_msgs: list[bytes]) -> None:
    msgs, _ = faulted(Fault(kind, ENV, START))
    assert len(msgs) == N
    assert msgs[:START] == clean_msgs[:START]
    assert msgs[START:] != clean_msgs[START:]


@pytest.mark.parametrize(
    "kind",
    [
        "error_burst",
        "reward_drop",
        "masked_failure",
        "truncation",
        "length_collapse",
        "length_explosion",
        "zero_variance",
        "reward_hack",
        "invalid",
    ],
)
def test_value_faults_leave_other_environments_alone(kind: str, clean_msgs: list[bytes]) -> None:
    msgs, _ = faulted(Fault(kind, ENV, START))
    for a, b in zip(msgs, clean_msgs, strict=True):
        if b"math-v2" not in b:
            assert a == b


def test_error_burst(clean: list[RolloutEvent]) -> None:
    msgs, stats = faulted(Fault("error_burst", ENV, START))
    events = _decode_all(msgs)
    after = env_events(events, lo=START)
    assert share(after, lambda e: e.status == "failed") == pytest.approx(0.4, abs=0.04)
    before = env_events(events, hi=START)
    assert share(before, lambda e: e.status == "failed") < 0.02
    burst = [e for e in after if e.status == "failed"]
    assert all(e.reward is None and e.error is not None for e in burst)
    assert {e.error.where for e in burst if e.error} >= {"verifier", "harness"}
    assert stats.fault_events[0] == len(after)


def test_error_burst_with_end_and_magnitude() -> None:
    fault = Fault("error_burst", ENV, 5000, magnitude=0.8, end=9000)
    events = _decode_all(list(generate(SimulationConfig(seed=7, events=N, faults=(fault,)))))
    inside = env_events(events, lo=5000, hi=9000)
    assert share(inside, lambda e: e.status == "failed") == pytest.approx(0.8, abs=0.05)
    assert share(env_events(events, lo=9000), lambda e: e.status == "failed") < 0.02


def test_reward_drop(clean: list[RolloutEvent]) -> None:
    events = _decode_all(faulted(Fault("reward_drop", ENV, START))[0])
    after = [e for e in env_events(events, lo=START) if e.reward is not None]
    assert statistics.mean(rewards(after)) < 0.15
    assert statistics.mean(rewards(env_events(clean, lo=START))) > 0.4
    assert all(component(e, "correct") == 0.0 for e in after)
    half = _decode_all(faulted(Fault("reward_drop", ENV, START, magnitude=0.5))[0])
    correct = [
        component(e, "correct") for e in env_events(half, lo=START) if e.status == "completed"
    ]
    base_correct = [
        component(e, "correct") for e in env_events(clean, lo=START) if e.status == "completed"
    ]
    assert statistics.mean(correct) == pytest.approx(0.5 * statistics.mean(base_correct), rel=0.15)


def test_masked_failure() -> None:
    events = _decode_all(faulted(Fault("masked_failure", ENV, START))[0])

    def with_error(e: RolloutEvent) -> bool:
        return e.reward is not None and e.error is not None

    def at_timeout(e: RolloutEvent) -> bool:
        return (
            e.reward == 0.0
            and e.timings is not None
            and e.timings.score_s == e.timings.score_timeout_s
        )

    after = env_events(events, lo=START)
    assert share(after, lambda e: with_error(e) or at_timeout(e)) == pytest.approx(0.3, abs=0.04)
    assert share(after, with_error) > 0.1 and share(after, at_timeout) > 0.1
    assert all(e.reward == 0.0 for e in after if with_error(e))
    assert not any(with_error(e) or at_timeout(e) for e in env_events(events, hi=START))


def test_truncation() -> None:
    events = _decode_all(faulted(Fault("truncation", ENV, START))[0])
    after = env_events(events, lo=START)
    cut = [e for e in after if e.status == "truncated"]
    assert len(cut) / len(after) == pytest.approx(0.3 + 0.01, abs=0.04)
    for e in cut:
        assert e.stop_reason == "length" and e.reward == 0.0
        assert e.completion_tokens == e.max_completion_tokens


@pytest.mark.parametrize(
    ("kind", "factor"), [("length_collapse", 1 / 4), ("length_explosion", 3.0)]
)
def test_length_faults(kind: str, factor: float, clean: list[RolloutEvent]) -> None:
    events = _decode_all(faulted(Fault(kind, ENV, START))[0])
    ratios = [
        (f.completion_tokens or 1) / (c.completion_tokens or 1)
        for f, c in zip(events[START:], clean[START:], strict=True)
        if isinstance(f, RolloutEvent)
        and f.env_id == ENV
        and c.status == "completed"
        and f.status == "completed"
    ]
    assert statistics.median(ratios) == pytest.approx(factor, rel=0.05)
    if kind == "length_explosion":  # capped at the limit: truncation rises as well
        assert share(env_events(events, lo=START), lambda e: e.status == "truncated") > 0.1


def test_zero_variance() -> None:
    events = _decode_all(faulted(Fault("zero_variance", ENV, START))[0])
    groups: dict[str, list[tuple[int, RolloutEvent]]] = defaultdict(list)
    for i, e in enumerate(events):
        if isinstance(e, RolloutEvent) and e.env_id == ENV and e.group_id:
            groups[e.group_id].append((i, e))
    inside = [g for g in groups.values() if min(i for i, _ in g) >= START]
    before = [g for g in groups.values() if max(i for i, _ in g) < START]
    assert len(inside) > 300

    def constant(g: list[tuple[int, RolloutEvent]]) -> bool:
        return len({e.reward for _, e in g if e.reward is not None}) <= 1

    assert all(constant(g) for g in inside)
    assert sum(constant(g) for g in before) / len(before) < 0.4


def test_silence() -> None:
    fault = Fault("silence", ENV, START, end=15_000)
    msgs, stats = faulted(fault)
    events = _decode_all(msgs)
    assert len(msgs) == N
    assert env_events(events, lo=START, hi=15_000) == []
    assert len(env_events(events, lo=15_000)) > 1000  # resumes
    assert stats.silenced > 1000
    assert stats.fault_events[0] == stats.silenced
    forever = _decode_all(
        list(generate(SimulationConfig(seed=7, events=N, faults=(Fault("silence", ENV, START),))))
    )
    assert env_events(forever, lo=START) == []
    # event time keeps flowing for the others: the gap is visible in ts
    last_ts = max(e.ts for e in env_events(forever))
    assert forever[-1].ts - last_ts > 30  # type: ignore[union-attr]


def test_silence_keeps_the_message_count() -> None:
    # the last chunk can hold only silenced episodes: the stream must go on regardless
    for seed in range(30):
        cfg = SimulationConfig(seed=seed, events=2000, faults=(Fault("silence", ENV, 1000),))
        assert sum(1 for _ in generate(cfg)) == 2000


def test_silencing_everything_ends_the_stream() -> None:
    fault = Fault("silence", "*", 1000)
    assert sum(1 for _ in generate(SimulationConfig(events=5000, faults=(fault,)))) == 1000


def test_invalid_messages_are_refused() -> None:
    msgs, stats = faulted(Fault("invalid", ENV, START))
    events = _decode_all(msgs)
    bad = [(i, e) for i, e in enumerate(events) if isinstance(e, InvalidEvent)]
    assert all(i >= START for i, _ in bad)
    n_env = stats.fault_events[0]
    assert len(bad) / n_env == pytest.approx(0.1, abs=0.02)
    assert stats.invalid == len(bad) and stats.valid == N - len(bad)
    assert {e.reason for _, e in bad} >= {
        "invalid_json",
        "missing_field",
        "wrong_type",
        "unsupported_schema_version",
    }
    assert any(b"NaN" in msgs[i] for i, _ in bad)
    keys = [
        k
        for k, _ in generate_messages(
            SimulationConfig(seed=7, events=N, faults=(Fault("invalid", ENV, START),))
        )
    ]
    assert {keys[i] for i, _ in bad} == {b"grpo-7b-demo|math-v2"}


def test_duplicates() -> None:
    msgs, stats = faulted(Fault("duplicate", ENV, START))
    seen: dict[str, int] = {}
    dups = 0
    for i, m in enumerate(msgs):
        e = decode_event(m)
        if e.event_id in seen:
            dups += 1
            j = seen[e.event_id]
            assert msgs[j] == m and j < i <= j + 20 and j >= START
            assert e.env_id == ENV
        else:
            seen[e.event_id] = i
    assert dups == stats.duplicates
    assert dups / stats.fault_events[0] == pytest.approx(0.1, abs=0.02)


def test_reward_hack(clean: list[RolloutEvent]) -> None:
    events = _decode_all(faulted(Fault("reward_hack", ENV, START))[0])
    late = START + 3000  # after the ramp

    def means(evs: list[RolloutEvent]) -> tuple[float, float, float]:
        return (
            statistics.mean(rewards(evs)),
            statistics.median(e.completion_tokens or 0 for e in evs),
            statistics.mean(e.repetition or 0.0 for e in evs),
        )

    r1, t1, p1 = means(env_events(events, lo=late))
    r0, t0, p0 = means(env_events(clean, lo=late))
    assert r1 > r0 + 0.1
    assert t1 > 1.3 * t0
    assert p1 > p0 + 0.2


def test_fault_on_every_environment() -> None:
    events = _decode_all(
        list(
            generate(
                SimulationConfig(
                    seed=3, events=8000, faults=(Fault("error_burst", "*", 4000, magnitude=0.5),)
                )
            )
        )
    )
    for env in ("math-v2", "code-sandbox", "tool-use"):
        after = env_events(events, env, lo=4000)
        assert share(after, lambda e: e.status == "failed") == pytest.approx(0.5, abs=0.06)


def test_fault_validation_and_parsing() -> None:
    assert Fault.parse("error_burst:math-v2:5000") == Fault("error_burst", "math-v2", 5000)
    assert Fault.parse("truncation:tool-use:10:0.5:20") == Fault(
        "truncation", "tool-use", 10, 0.5, 20
    )
    assert Fault("error_burst", "x", 0).strength == DEFAULT_MAGNITUDES["error_burst"] == 0.4
    for bad in (
        "error_burst:x",
        "nope:x:1",
        "error_burst:x:-1",
        "error_burst:x:5:0.5:5",
        "error_burst:x:1:1.5",
        "length_collapse:x:1:0.5",
        "error_burst:x:1:nan",
    ):
        with pytest.raises(ValueError):
            Fault.parse(bad)
    with pytest.raises(ValueError, match="unknown environment"):
        SimulationConfig(faults=(Fault("silence", "nope", 0),))


def test_custom_environment_names_and_runs() -> None:
    cfg = SimulationConfig(
        seed=2, events=4000, runs=("a", "b"), envs=("swe-bench", "gsm8k", "browser-use", "misc")
    )
    events = [decode_event(m) for m in generate(cfg)]
    assert {(e.run_id, e.env_id) for e in events} == {(r, e) for r in cfg.runs for e in cfg.envs}
    swe = next(e for e in events if e.env_id == "swe-bench" and e.reward is not None)
    assert swe.metrics is not None and "tests_total" in swe.metrics


# ---- labels and command line -----------------------------------------------------------------


def test_labels() -> None:
    fault = Fault("error_burst", ENV, START, end=15_000)
    cfg = SimulationConfig(seed=7, events=N, faults=(fault,))
    stats = SimulationStats()
    msgs = list(generate(cfg, stats))
    lab = labels(cfg, stats)
    json.dumps(lab)
    (f,) = lab["faults"]
    assert (f["kind"], f["env"], f["start"], f["end"], f["magnitude"]) == (
        "error_burst",
        ENV,
        START,
        15_000,
        0.4,
    )
    assert f["segments"] == [["grpo-7b-demo", ENV]]
    assert f["start_ts"] == pytest.approx(decode_event(msgs[START]).ts, abs=0.01)
    assert f["end_ts"] == pytest.approx(decode_event(msgs[14_999]).ts, abs=0.01)
    assert lab["counts"]["messages"] == N


def test_cli_writes_jsonl_and_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, lab = tmp_path / "s.jsonl", tmp_path / "labels.json"
    rc = main(
        [
            "--events",
            "3000",
            "--seed",
            "5",
            "--envs",
            "math-v2,tool-use",
            "--runs",
            "r1,r2",
            "--rate",
            "500",
            "--fault",
            "invalid:tool-use:1000:0.2",
            "--fault",
            "duplicate:math-v2:2000",
            "--out",
            str(out),
            "--labels",
            str(lab),
        ]
    )
    assert rc == 0
    lines = out.read_bytes().splitlines()
    assert len(lines) == 3000
    expected = list(
        generate(
            SimulationConfig(
                seed=5,
                events=3000,
                envs=("math-v2", "tool-use"),
                runs=("r1", "r2"),
                events_per_second=500,
                faults=(
                    Fault("invalid", "tool-use", 1000, 0.2),
                    Fault("duplicate", "math-v2", 2000),
                ),
            )
        )
    )
    assert lines == expected
    truth = json.loads(lab.read_text())
    assert [(f["kind"], f["start"]) for f in truth["faults"]] == [
        ("invalid", 1000),
        ("duplicate", 2000),
    ]
    err = capsys.readouterr().err
    assert "sent 3000 messages" in err and "invalid" in err and "duplicates" in err


def test_cli_realtime_follows_event_time(tmp_path: Path) -> None:
    out = tmp_path / "rt.jsonl"
    t0 = time.perf_counter()
    assert main(["--events", "300", "--rate", "1000", "--realtime", "--out", str(out)]) == 0
    elapsed = time.perf_counter() - t0
    lines = out.read_bytes().splitlines()
    span = decode_event(lines[-1]).ts - decode_event(lines[0]).ts
    assert len(lines) == 300
    assert elapsed >= 0.9 * span > 0.1


def test_cli_register_on_a_parent_parser() -> None:
    parser = argparse.ArgumentParser(prog="rollout-monitor")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(
        [
            "simulate",
            "--events",
            "10",
            "--fault",
            "silence:math-v2:5::8",
            "--kafka",
            "localhost:9092",
            "--topic",
            "t",
            "--realtime",
        ]
    )
    assert args.func.__name__ == "run"
    assert args.events == 10 and args.kafka == "localhost:9092" and args.realtime
    assert args.fault == [Fault("silence", "math-v2", 5, None, 8)]
    with pytest.raises(SystemExit):
        parser.parse_args(["simulate", "--fault", "bogus:math-v2:1"])
