"""A deterministic corpus of hostile and valid rollout messages, for the fuzz tests.

``corpus(n, seed)`` yields ``n`` :class:`CorpusMessage` values lazily, so a large corpus never
sits in memory at once. Every message has a unique ``event_id`` where it has one at all, so a
message that happens to stay valid after a mutation is processed, never dropped as a repeat.

Kinds (weights in ``WEIGHTS``):

- ``valid``: a schema-v1 event, sometimes with every optional field set;
- ``truncated``: a valid event cut at a random byte (possibly to nothing);
- ``wrong_type``: one field replaced by a value of another JSON type;
- ``huge_string``: a 64 KiB to 900 KiB string in a field the monitor does not keep;
- ``deep_nesting``: 10,000 levels of arrays or objects, at the top or inside a field;
- ``nan_inf``: ``NaN``, ``Infinity``, ``-Infinity`` or an out-of-range number in a float field;
- ``non_utf8``: bytes that are not UTF-8 inside a string, or raw random bytes;
- ``schema_version``: another or a malformed ``schema_version``;
- ``duplicate_keys``: a key repeated with another value;
- ``empty``: nothing, whitespace, ``{}``, ``[]``, ``null``, ``""``;
- ``bit_flip``: a valid event with a few bytes flipped, deleted or inserted;
- ``big_int``: an integer far beyond 64 bits in a count field;
- ``ten_mb``: a 10 MiB message (a fixed number of them, spread over the corpus).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Relative frequency of each kind (``ten_mb`` is placed at fixed positions instead).
WEIGHTS: dict[str, int] = {
    "valid": 20,
    "truncated": 10,
    "wrong_type": 14,
    "huge_string": 1,
    "deep_nesting": 2,
    "nan_inf": 6,
    "non_utf8": 8,
    "schema_version": 6,
    "duplicate_keys": 6,
    "empty": 3,
    "bit_flip": 18,
    "big_int": 3,
}
KINDS = (*WEIGHTS, "ten_mb")
TEN_MB = 10 * 1024 * 1024
NESTING_LEVELS = 10_000

STRING_FIELDS = ("event_id", "run_id", "env_id", "env_version", "task_id", "group_id")
FLOAT_FIELDS = ("ts", "reward", "reward_min", "reward_max", "repetition")
INT_FIELDS = (
    "schema_version",
    "group_size",
    "policy_version",
    "prompt_tokens",
    "completion_tokens",
    "num_turns",
    "max_completion_tokens",
)
ENUM_FIELDS = ("status", "stop_reason", "phase")
OBJECT_FIELDS = ("error", "timings", "metrics", "reward_components")
ALL_FIELDS = (*STRING_FIELDS, *FLOAT_FIELDS, *INT_FIELDS, *ENUM_FIELDS, *OBJECT_FIELDS)
# Fields whose value the monitor does not keep after the event is processed.
UNKEPT_STRING_FIELDS = ("task_id", "env_version", "completion_hash", "padding")


@dataclass(frozen=True, slots=True)
class CorpusMessage:
    """One message: its kind and the bytes a producer would send (None: a tombstone)."""

    kind: str
    value: bytes | None


def valid_event(rng: random.Random, index: int, full: bool = False) -> dict[str, Any]:
    """A valid schema-v1 event with a unique ``event_id``."""
    status = rng.choice(("completed", "completed", "completed", "truncated", "failed", "aborted"))
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": f"fz-{index}",
        "ts": 1_764_000_000.0 + index * 0.01,
        "run_id": f"run-{rng.randrange(3)}",
        "env_id": f"env-{rng.randrange(8)}",
        "status": status,
        "reward": None if status == "failed" else round(rng.random(), 3),
    }
    if full:
        event.update(
            env_version="1.2.3",
            phase=rng.choice(("train", "eval")),
            episode_id=f"ep-{index}",
            task_id=f"t-{rng.randrange(1000)}",
            group_id=f"g-{index // 8}",
            group_size=8,
            policy_version=index // 100,
            policy_version_end=index // 100,
            trainer_version=index // 100 + 1,
            stop_reason=rng.choice(("stop", "length", "error", "unknown")),
            reward_components={"correct": 1.0, "format": None},
            reward_min=0.0,
            reward_max=1.0,
            prompt_tokens=rng.randrange(2000),
            completion_tokens=rng.randrange(1, 4096),
            num_turns=rng.randrange(10),
            num_tool_calls=rng.randrange(10),
            num_tool_errors=0,
            max_completion_tokens=4096,
            max_turns=10,
            error=(
                {"type": "Timeout", "where": "verifier", "message": "timed out"}
                if status == "failed"
                else None
            ),
            timings={"generate_s": 1.5, "score_s": 0.2, "score_timeout_s": 30.0},
            completion_hash="abc123",
            repetition=0.1,
            metrics={"tests_passed": 3.0},
        )
    return event


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def _other_type_value(rng: random.Random) -> Any:
    return rng.choice(
        (
            "text",
            "",
            -1,
            0,
            2**31,
            1.5,
            -0.0,
            True,
            False,
            None,
            [],
            [1, "a"],
            {},
            {"k": [None]},
            "1764000000",
        )
    )


def _truncated(rng: random.Random, index: int) -> bytes:
    data = _dumps(valid_event(rng, index, full=rng.random() < 0.5))
    return data[: rng.randrange(len(data))]


def _wrong_type(rng: random.Random, index: int) -> bytes:
    event = valid_event(rng, index, full=rng.random() < 0.5)
    field = rng.choice(ALL_FIELDS)
    if field == "event_id":
        field = "run_id"  # keep the id unique
    event[field] = _other_type_value(rng)
    return _dumps(event)


def _huge_string(rng: random.Random, index: int) -> bytes:
    event = valid_event(rng, index)
    size = rng.randrange(64 * 1024, 900 * 1024)
    event[rng.choice(UNKEPT_STRING_FIELDS)] = rng.choice("xyzé😀") * size
    return _dumps(event)


def _nested(rng: random.Random, levels: int) -> bytes:
    if rng.random() < 0.5:
        return b"[" * levels + b"]" * levels
    return b'{"a":' * levels + b"1" + b"}" * levels


def _deep_nesting(rng: random.Random, index: int) -> bytes:
    nested = _nested(rng, NESTING_LEVELS)
    where = rng.randrange(4)
    if where == 0:
        return nested
    if where == 1:
        return nested[: len(nested) // 2]  # unclosed
    event = _dumps(valid_event(rng, index))
    field = b"extra" if where == 2 else rng.choice((b"metrics", b"error", b"timings"))
    return event[:-1] + b',"' + field + b'":' + nested + b"}"


def _nan_inf(rng: random.Random, index: int) -> bytes:
    event = valid_event(rng, index, full=True)
    field = rng.choice((*FLOAT_FIELDS, "metrics", "timings", "reward_components"))
    token = rng.choice(("NaN", "Infinity", "-Infinity", "nan", "inf", "1e999", "-1e400"))
    placeholder = "__TOKEN__"
    if field in FLOAT_FIELDS:
        event[field] = placeholder
    elif field == "timings":
        event["timings"] = {"total_s": placeholder}
    else:
        event[field] = {"x": placeholder}
    return _dumps(event).replace(f'"{placeholder}"'.encode(), token.encode())


def _non_utf8(rng: random.Random, index: int) -> bytes:
    if rng.random() < 0.25:
        return rng.randbytes(rng.randrange(1, 200))
    event = _dumps(valid_event(rng, index, full=rng.random() < 0.5))
    bad = rng.choice((b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xf8\x88"))
    field = rng.choice((b"run-", b"env-", b"fz-"))
    at = event.find(field)
    return event[:at] + bad + event[at:]


def _schema_version(rng: random.Random, index: int) -> bytes:
    event = valid_event(rng, index)
    event["schema_version"] = rng.choice((0, 2, -1, 99, 2**70, "1", "v1", 1.5, None, True, [1]))
    if rng.random() < 0.2:
        del event["schema_version"]
    return _dumps(event)


def _duplicate_keys(rng: random.Random, index: int) -> bytes:
    event = _dumps(valid_event(rng, index))
    field = rng.choice(("schema_version", "status", "reward", "env_id", "ts", "run_id"))
    value = _dumps(_other_type_value(rng) if rng.random() < 0.5 else "completed")
    extra = b'"' + field.encode() + b'":' + value
    if rng.random() < 0.5:
        return event[:-1] + b"," + extra + b"}"
    return b"{" + extra + b"," + event[1:]


def _empty(rng: random.Random, index: int) -> bytes:
    return rng.choice((b"", b" ", b"\n", b"\x00", b"{}", b"[]", b"null", b'""', b"0", b"{"))


def _bit_flip(rng: random.Random, index: int) -> bytes:
    data = bytearray(_dumps(valid_event(rng, index, full=rng.random() < 0.5)))
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(data))
        action = rng.randrange(3)
        if action == 0:
            data[at] ^= 1 << rng.randrange(8)
        elif action == 1:
            del data[at]
        else:
            data.insert(at, rng.randrange(256))
    return bytes(data)


def _big_int(rng: random.Random, index: int) -> bytes:
    event = valid_event(rng, index, full=True)
    field = rng.choice((*INT_FIELDS[1:], "num_tool_calls", "max_turns"))
    event[field] = rng.choice((10**400, -(10**400), 2**64, 2**63, -(2**63) - 1))
    return _dumps(event)


def ten_mb_message(rng: random.Random, index: int) -> bytes:
    """A valid-looking event padded to 10 MiB (refused as ``too_large`` at the default limit)."""
    event = _dumps({**valid_event(rng, index), "padding": ""})
    return event[:-2] + b"x" * (TEN_MB - len(event)) + b'"}'


_MAKERS = {
    "valid": lambda rng, i: _dumps(valid_event(rng, i, full=rng.random() < 0.5)),
    "truncated": _truncated,
    "wrong_type": _wrong_type,
    "huge_string": _huge_string,
    "deep_nesting": _deep_nesting,
    "nan_inf": _nan_inf,
    "non_utf8": _non_utf8,
    "schema_version": _schema_version,
    "duplicate_keys": _duplicate_keys,
    "empty": _empty,
    "bit_flip": _bit_flip,
    "big_int": _big_int,
}


def corpus(n: int, seed: int = 0, ten_mb: int = 3) -> Iterator[CorpusMessage]:
    """``n`` messages; ``ten_mb`` of them are 10 MiB, spread evenly over the corpus.

    >>> from collections import Counter
    >>> kinds = Counter(m.kind for m in corpus(2000, seed=1, ten_mb=1))
    >>> kinds["ten_mb"], sum(kinds.values()), kinds["valid"] > 300
    (1, 2000, True)
    """
    rng = random.Random(seed)
    kinds = list(WEIGHTS)
    weights = list(WEIGHTS.values())
    big_at = {(k + 1) * n // (ten_mb + 1) for k in range(ten_mb)}
    for index in range(n):
        if index in big_at:
            yield CorpusMessage("ten_mb", ten_mb_message(rng, index))
            continue
        kind = rng.choices(kinds, weights)[0]
        yield CorpusMessage(kind, _MAKERS[kind](rng, index))
