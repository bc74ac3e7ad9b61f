"""``rollout-monitor replay``: JSONL and Parquet give the same alerts; bad lines are counted."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from test_security import cli

from monitor.cli import main
from monitor.simulate import Fault, SimulationConfig, generate

CONFIG = SimulationConfig(
    seed=21,
    runs=("run-r",),
    events=24_000,
    faults=(
        Fault("error_burst", "code-sandbox", 9_000, 0.4),
        Fault("truncation", "tool-use", 15_000, 0.6),
    ),
)


@pytest.fixture(scope="module")
def stream_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("replay")
    jsonl = folder / "stream.jsonl"
    jsonl.write_bytes(b"\n".join(generate(CONFIG)) + b"\n")
    parquet = folder / "stream.parquet"
    pl.read_ndjson(jsonl, infer_schema_length=None).write_parquet(parquet)
    return jsonl, parquet


def _alerts(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_and_parquet_give_the_same_alerts(
    stream_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonl, parquet = stream_files
    out_j, out_p = tmp_path / "j.jsonl", tmp_path / "p.jsonl"
    assert main(["replay", str(jsonl), "--alerts-out", str(out_j)]) == 0
    assert main(["replay", str(parquet), "--alerts-out", str(out_p)]) == 0
    from_jsonl, from_parquet = _alerts(out_j), _alerts(out_p)
    assert from_jsonl == from_parquet
    fired = {(a["detector"], a["env"]) for a in from_jsonl if a["status"] == "firing"}
    assert ("error_rate", "code-sandbox") in fired
    assert ("truncation_rate", "tool-use") in fired
    for alert in from_jsonl:
        for key in (
            "alertname",
            "detector",
            "severity",
            "run",
            "env",
            "event_index",
            "value",
            "threshold",
            "summary",
        ):
            assert key in alert
    onset = next(a for a in from_jsonl if a["detector"] == "error_rate")
    assert 9_000 <= int(onset["event_index"]) < 10_000, "alarm index is the stream position"
    summary = capsys.readouterr().out
    assert "code-sandbox" in summary and "error_rate" in summary


def test_several_files_are_one_stream_and_bad_lines_are_counted(
    stream_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonl, _ = stream_files
    lines = jsonl.read_bytes().splitlines()
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(b"\n".join([*lines[:12_000], b"{broken", b'{"schema_version": 4}']) + b"\n")
    second.write_bytes(b"\n".join(lines[12_000:]) + b"\n")
    out = tmp_path / "alerts.jsonl"
    assert main(["replay", str(first), str(second), "--alerts-out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 invalid" in text
    assert "invalid_json=1" in text and "unsupported_schema_version=1" in text
    whole = tmp_path / "whole.jsonl"
    assert main(["replay", str(jsonl), "--alerts-out", str(whole)]) == 0
    split = _alerts(out)
    # Two extra (invalid) records sit before the second file: indices after them shift by 2.
    shifted = [
        {
            **a,
            "event_index": a["event_index"] - 2 if a["event_index"] >= 12_000 else a["event_index"],
        }
        for a in split
    ]
    assert [(a["detector"], a["env"], a["event_index"]) for a in shifted] == [
        (a["detector"], a["env"], a["event_index"]) for a in _alerts(whole)
    ]


def test_missing_input_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["replay", str(tmp_path / "absent.jsonl")]) == 2


def test_replay_gives_the_same_alerts_in_processes_with_other_string_hashes(
    tmp_path: Path,
) -> None:
    """Python salts ``str`` hashes per process: nothing the daemon decides may follow them
    (a set's order does). A stream with a reward hack, zero-variance groups and an error
    burst, whose reward components carry two names that contain "correct", replayed in
    processes with different ``PYTHONHASHSEED``: the same alerts and the same summary. (The
    alarms here do not depend on which name is the correctness component; the unit test
    ``test_reward_hacking_takes_the_first_qualifying_component_name_seen`` pins that.)"""
    config = SimulationConfig(
        seed=23,
        runs=("run-h",),
        events=24_000,
        faults=(
            Fault("reward_hack", "math-v2", 6_000),
            Fault("zero_variance", "code-sandbox", 9_000),
            Fault("error_burst", "tool-use", 12_000, 0.4),
        ),
    )
    lines = []
    for value in generate(config):
        event = json.loads(value) if value.startswith(b"{") else None
        components = event.get("reward_components") if isinstance(event, dict) else None
        if components and "format" in components:
            event["reward_components"] = {
                "format_correct": components["format"],
                **{k: v for k, v in components.items() if k != "format"},
            }
            value = json.dumps(event).encode()
        lines.append(value)
    stream = tmp_path / "stream.jsonl"
    stream.write_bytes(b"\n".join(lines) + b"\n")
    outputs = []
    for seed in ("0", "1", "2", "3"):
        out = tmp_path / f"alerts-{seed}.jsonl"
        done = cli("replay", str(stream), "--alerts-out", str(out), env={"PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append((out.read_bytes(), done.stdout))
    assert outputs[0][0], "the faults raised no alert"
    fired = {(a["detector"], a["env"]) for a in _alerts(tmp_path / "alerts-0.jsonl")}
    assert ("error_rate", "tool-use") in fired
    for seed, output in enumerate(outputs[1:], start=1):
        assert output == outputs[0], f"PYTHONHASHSEED={seed} gave other alerts or another summary"
