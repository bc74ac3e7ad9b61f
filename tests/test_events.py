"""Decoding of schema-v1 events: valid input, and every refusal reason."""

from __future__ import annotations

import json

import pytest

from monitor.events import (
    INVALID_REASONS,
    InvalidEvent,
    decode_event,
    encode_event,
    event_from_mapping,
    json_schema,
)

VALID = {
    "schema_version": 1,
    "event_id": "0b6c7d1e-6a39-4b2f-9a1e-2f0c1c7b9d10",
    "ts": 1764000000.123,
    "run_id": "grpo-7b-0412",
    "env_id": "math-v2",
    "env_version": "1.3.0",
    "task_id": "t-123",
    "group_id": "g-9",
    "group_size": 8,
    "policy_version": 120,
    "trainer_version": 121,
    "status": "completed",
    "stop_reason": "stop",
    "reward": 0.73,
    "reward_components": {"correct": 1.0, "format": 0.5},
    "prompt_tokens": 230,
    "completion_tokens": 812,
    "max_completion_tokens": 4096,
    "num_turns": 3,
    "num_tool_calls": 4,
    "num_tool_errors": 1,
    "error": None,
    "timings": {"generate_s": 11.2, "score_s": 0.4, "score_timeout_s": 30},
}


def _bytes(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_contract_example_decodes_with_every_field() -> None:
    event = decode_event(_bytes(VALID))
    assert event.reward == 0.73
    assert event.reward_components == {"correct": 1.0, "format": 0.5}
    assert event.timings is not None and event.timings.score_timeout_s == 30
    assert event.phase == "train"
    assert decode_event(encode_event(event)) == event


def test_unknown_fields_are_ignored() -> None:
    event = decode_event(_bytes({**VALID, "future_field": {"x": [1, 2]}}))
    assert event.env_id == "math-v2"


def test_null_reward_is_valid_but_key_is_required() -> None:
    assert decode_event(_bytes({**VALID, "reward": None})).reward is None
    without = {k: v for k, v in VALID.items() if k != "reward"}
    with pytest.raises(InvalidEvent) as info:
        decode_event(_bytes(without))
    assert info.value.reason == "missing_field"
    assert "reward" in info.value.detail


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"schema_version": 1, "event_id": ', "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (b'"just a string"', "not_an_object"),
        (_bytes({**VALID, "reward": "high"}), "wrong_type"),
        (_bytes({**VALID, "status": "exploded"}), "invalid_value"),
        (_bytes({**VALID, "completion_tokens": -5}), "invalid_value"),
        (_bytes({**VALID, "ts": "yesterday"}), "wrong_type"),
        (json.dumps({**VALID, "reward": float("nan")}).encode(), "invalid_json"),
        (json.dumps({**VALID, "reward": float("inf")}).encode(), "invalid_json"),
        (_bytes({**VALID, "schema_version": 2}), "unsupported_schema_version"),
        (_bytes({"schema_version": 7, "totally": "different"}), "unsupported_schema_version"),
        (_bytes({k: v for k, v in VALID.items() if k != "env_id"}), "missing_field"),
    ],
)
def test_invalid_messages_carry_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(data)
    assert info.value.reason == reason
    assert info.value.reason in INVALID_REASONS


def test_oversized_message_is_refused_before_parsing() -> None:
    big = _bytes({**VALID, "env_version": "x" * 5000})
    with pytest.raises(InvalidEvent) as info:
        decode_event(big, max_bytes=4096)
    assert info.value.reason == "too_large"


def test_mapping_path_rejects_nan_and_other_versions() -> None:
    assert event_from_mapping(dict(VALID)).run_id == "grpo-7b-0412"
    with pytest.raises(InvalidEvent) as info:
        event_from_mapping({**VALID, "reward": float("nan")})
    assert info.value.reason == "invalid_value"
    with pytest.raises(InvalidEvent) as info:
        event_from_mapping({**VALID, "schema_version": 3})
    assert info.value.reason == "unsupported_schema_version"


def test_json_schema_names_required_fields() -> None:
    schema = json_schema()
    definition = schema["$defs"]["RolloutEvent"]
    for name in ("schema_version", "event_id", "ts", "run_id", "env_id", "status", "reward"):
        assert name in definition["required"]
    assert "completion_tokens" not in definition["required"]
