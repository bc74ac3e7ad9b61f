"""``docs/event-schema.md`` and the ``Fields`` lines of ``docs/detectors.md`` against the code.

The field table must name every field the decoder knows, mark as required exactly those the
JSON Schema requires, and say which detectors read each field: that column is compared with
the attributes each detector of the default bank reads on a simulated stream with faults
(error bursts, masked failures, truncations, a reward hack, zero-variance groups), recorded
through a proxy around each decoded event.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest

from detectors.bank import DEFAULT_ENABLED
from monitor import source
from monitor.config import DetectorSettings
from monitor.events import (
    INVALID_REASONS,
    ErrorInfo,
    InvalidEvent,
    RolloutEvent,
    Timings,
    decode_event,
    json_schema,
)
from monitor.pipeline import bank_factory
from monitor.simulate import Fault, SimulationConfig, generate

DOCS = Path(__file__).resolve().parent.parent / "docs"
SCHEMA_DOC = DOCS / "event-schema.md"
DETECTORS_DOC = DOCS / "detectors.md"
FAULTS = (
    "error_burst:math-v2:3000::6000",
    "masked_failure:code-sandbox:3000::6000",
    "truncation:tool-use:3000::6000",
    "reward_hack:math-v2:7000",
    "zero_variance:code-sandbox:7000",
)


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _table(section: str) -> list[list[str]]:
    """The rows of the first table in ``section`` (header and rule skipped); an escaped
    ``\\|`` stays inside its cell."""
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    rows = lines[start:end]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]
    return cells[2:]


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def field_rows() -> dict[str, list[str]]:
    rows = _table(_section(SCHEMA_DOC.read_text(), "Fields"))
    out: dict[str, list[str]] = {}
    for row in rows:
        assert len(row) == 5, f"a row of the field table has {len(row)} cells: {row}"
        (name,) = _ticked(row[0])
        out[name] = row
    return out


class _Recorder:
    """Stands for a decoded event (or one of its nested structs) and records the
    attributes read through it, nested ones as ``parent.child``."""

    __slots__ = ("_path", "_read", "_target")

    def __init__(self, target: Any, read: set[str], path: str = "") -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_read", read)
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        self._read.add(self._path + name)
        if isinstance(value, msgspec.Struct):
            return _Recorder(value, self._read, f"{self._path}{name}.")
        return value


@pytest.fixture(scope="module")
def reads() -> dict[str, set[str]]:
    """Per detector of the default bank: the attributes it read over the stream."""
    config = SimulationConfig(events=12_000, seed=5, faults=tuple(map(Fault.parse, FAULTS)))
    events = []
    for value in generate(config):
        try:
            events.append(decode_event(value))
        except InvalidEvent:
            continue
    assert len(events) > 10_000
    out: dict[str, set[str]] = {}
    for name in DEFAULT_ENABLED:
        make = bank_factory(DetectorSettings(enabled=(name,)))
        banks: dict[tuple[str, str], Any] = {}
        read: set[str] = set()
        for event in events:
            key = (event.run_id, event.env_id)
            bank = banks.get(key)
            if bank is None:
                bank = banks[key] = make()
            bank.update(_Recorder(event, read))
        assert read, f"{name} read nothing from {len(events)} events"
        out[name] = read
    return out


def test_every_field_of_the_decoder_has_a_row() -> None:
    documented = set(field_rows())
    decoded = {f.encode_name for f in msgspec.structs.fields(RolloutEvent)}
    assert documented == decoded, (
        f"rows without a field: {sorted(documented - decoded)}; "
        f"fields without a row: {sorted(decoded - documented)}"
    )
    rows = field_rows()
    for struct, row in ((Timings, rows["timings"]), (ErrorInfo, rows["error"])):
        for f in msgspec.structs.fields(struct):
            assert f"`{f.encode_name}`" in row[3] or f'"{f.encode_name}"' in row[3], (
                f"{row[0]}: {f.encode_name} is not described"
            )


def test_required_column_is_what_the_json_schema_requires() -> None:
    schema = json_schema()
    required = set(schema["$defs"]["RolloutEvent"]["required"])
    documented = {name for name, row in field_rows().items() if row[2].startswith("yes")}
    assert documented == required


def test_read_by_column_is_what_each_detector_reads(reads: dict[str, set[str]]) -> None:
    fields: dict[str, set[str]] = defaultdict(set)  # detector -> the rows that name it
    subfields: dict[str, set[str]] = defaultdict(set)  # detector -> `parent.child` it names
    for name, row in field_rows().items():
        # "a, b (`timings.x`, `timings.y`), segment (...)": names, each with an optional
        # parenthesis; only the detectors' names count, with the sub-fields in theirs
        for entry in re.finditer(r"([a-z_]+)(?: \(([^)]*)\))?", row[4]):
            detector, inner = entry.group(1), entry.group(2) or ""
            if detector in reads:
                fields[detector].add(name)
                subfields[detector].update(s for s in _ticked(inner) if "." in s)
    for detector, read in sorted(reads.items()):
        assert fields[detector] == {r.split(".")[0] for r in read}, (
            f"{detector} reads {sorted(read)}; the table names it for {sorted(fields[detector])}"
        )
        assert subfields[detector] == {r for r in read if "." in r}, (
            f"{detector} reads {sorted(read)}; the table names {sorted(subfields[detector])}"
        )


def test_fields_lines_of_the_detector_docs_match_what_each_detector_reads(
    reads: dict[str, set[str]],
) -> None:
    text = DETECTORS_DOC.read_text()
    for detector, read in sorted(reads.items()):
        section = text[text.index(f'<a id="{detector}"></a>') :]
        section = section[: section.index("\n## ")]
        found = re.search(r"- \*\*Fields\*\*: (.*?)(?=\n- |\n\n)", section, re.S)
        assert found is not None, f"docs/detectors.md: {detector} has no Fields line"
        named = {n.split(".")[0] for n in _ticked(found.group(1))}
        named &= {f.encode_name for f in msgspec.structs.fields(RolloutEvent)}
        assert named == {r.split(".")[0] for r in read}, (
            f"docs/detectors.md, {detector}: Fields names {sorted(named)}, it reads {sorted(read)}"
        )


def test_refusal_reasons_and_dead_letter_headers_are_documented() -> None:
    text = SCHEMA_DOC.read_text()
    reasons = [_ticked(row[0])[0] for row in _table(_section(text, "Refused messages"))]
    assert sorted(reasons) == sorted(INVALID_REASONS)
    after = _section(text, "Refused messages").split("| header | value |", 1)[1]
    headers = {h for row in _table("| header | value |" + after) for h in _ticked(row[0])}
    constants = {
        source.base.REASON_HEADER,
        source.base.DETAIL_HEADER,
        source.base.TRUNCATED_HEADER,
        source.base.SOURCE_TOPIC_HEADER,
        source.base.SOURCE_PARTITION_HEADER,
        source.base.SOURCE_OFFSET_HEADER,
    }
    assert headers == constants


def test_the_example_is_a_valid_event_with_the_documented_values() -> None:
    block = re.search(r"## Example\n\n```json\n(.*?)```", SCHEMA_DOC.read_text(), re.S)
    assert block is not None, "docs/event-schema.md has no JSON example"
    event = decode_event(block.group(1).encode())
    raw = json.loads(block.group(1))
    assert msgspec.to_builtins(event)["reward_components"] == raw["reward_components"]
    assert (event.env_id, event.group_size, event.timings) == (
        "math-v2",
        8,
        Timings(generate_s=11.2, score_s=0.4, score_timeout_s=30.0),
    )
