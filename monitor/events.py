"""The rollout event, schema version 1, and its hot-path decoder.

The contract is ``docs/event-schema.md``: one JSON object per finished episode.
Decoding is typed (msgspec), so a wrong type, a missing field or a malformed message is a
single exception carrying a machine-readable ``reason`` for the dead-letter topic.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import msgspec

SCHEMA_VERSION = 1

Status = Literal["completed", "truncated", "failed", "aborted"]
StopReason = Literal[
    "stop", "length", "max_turns", "timeout", "env_done", "tool_error", "error", "unknown"
]
Phase = Literal["train", "eval"]
ErrorWhere = Literal[
    "env", "harness", "sandbox", "verifier", "judge", "tool", "provider", "unknown"
]
# Counts are bounded to int64: a larger JSON integer decodes to a Python int that overflows the
# float conversions of the summaries and detectors.
NonNegInt = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
#: Versions are bounded to int64 too: they are subtracted and shown in alert summaries.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]

#: run_id and env_id become metric labels and event_id is remembered for deduplication:
#: their length is bounded so that hostile input cannot inflate memory or the exposition.
MAX_IDENTIFIER_LENGTH = 256
Identifier = Annotated[str, msgspec.Meta(max_length=MAX_IDENTIFIER_LENGTH)]

#: Reasons an input message is refused; each is a label value of
#: ``rollout_monitor_invalid_events_total{reason}`` and a dead-letter header.
INVALID_REASONS = (
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "unsupported_schema_version",
    "too_large",
    "processing_error",
)


class InvalidEvent(ValueError):
    """A message that is not a valid schema-v1 rollout event."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ErrorInfo(msgspec.Struct, frozen=True, gc=False):
    """What broke, when ``status`` is ``failed`` (or a tool/verifier error was seen)."""

    type: str
    where: ErrorWhere = "unknown"
    message: str = ""


class Timings(msgspec.Struct, frozen=True, gc=False):
    """Phase timings of one episode, in seconds."""

    generate_s: float | None = None
    env_s: float | None = None
    score_s: float | None = None
    queue_s: float | None = None
    total_s: float | None = None
    score_timeout_s: float | None = None


class RolloutEvent(msgspec.Struct, frozen=True, gc=False):
    """One finished episode (schema version 1). Unknown fields are ignored."""

    schema_version: int
    event_id: Identifier
    ts: float
    run_id: Identifier
    env_id: Identifier
    status: Status
    reward: float | None
    env_version: str | None = None
    phase: Phase = "train"
    episode_id: str | None = None
    task_id: str | None = None
    group_id: str | None = None
    group_size: NonNegInt | None = None
    policy_version: Int64 | None = None
    policy_version_end: Int64 | None = None
    trainer_version: Int64 | None = None
    stop_reason: StopReason = "unknown"
    reward_components: dict[str, float | None] | None = None
    reward_min: float | None = None
    reward_max: float | None = None
    prompt_tokens: NonNegInt | None = None
    completion_tokens: NonNegInt | None = None
    num_turns: NonNegInt | None = None
    num_tool_calls: NonNegInt | None = None
    num_tool_errors: NonNegInt | None = None
    max_completion_tokens: NonNegInt | None = None
    max_turns: NonNegInt | None = None
    error: ErrorInfo | None = None
    timings: Timings | None = None
    completion_hash: str | None = None
    repetition: float | None = None
    metrics: dict[str, float] | None = None


class _VersionOnly(msgspec.Struct):
    schema_version: Any = None


_decoder = msgspec.json.Decoder(RolloutEvent)
_version_decoder = msgspec.json.Decoder(_VersionOnly)
#: What msgspec raises besides DecodeError for unreadable input: a string that is not UTF-8
#: (UnicodeError) and nesting deeper than the interpreter's recursion limit (RecursionError).
_UNREADABLE = (UnicodeError, RecursionError)


def _classify_validation(message: str) -> str:
    if message.startswith("Object missing required field"):
        return "missing_field"
    if message.startswith("Expected `object`"):
        return "not_an_object"
    if message.startswith("Expected") and not any(op in message for op in (">", "<", "length")):
        return "wrong_type"
    return "invalid_value"


def _version_reason(data: bytes | str) -> str | None:
    """The refusal reason when the message declares another schema version, else None."""
    try:
        version = _version_decoder.decode(data).schema_version
    except (msgspec.DecodeError, *_UNREADABLE):
        return None
    if version is None or version == SCHEMA_VERSION:
        return None
    return "unsupported_schema_version"


def _check_values(event: RolloutEvent) -> None:
    if event.schema_version != SCHEMA_VERSION:
        raise InvalidEvent(
            "unsupported_schema_version", f"schema_version {event.schema_version!r} is not 1"
        )
    if not math.isfinite(event.ts):
        raise InvalidEvent("invalid_value", "ts is not finite - at `$.ts`")
    if event.reward is not None and not math.isfinite(event.reward):
        raise InvalidEvent("invalid_value", "reward is not finite - at `$.reward`")


def decode_event(data: bytes | str, max_bytes: int = 1 << 20) -> RolloutEvent:
    """Decode one JSON message into a :class:`RolloutEvent`.

    Raises :class:`InvalidEvent` with a reason from :data:`INVALID_REASONS`.

    >>> e = decode_event(b'{"schema_version":1,"event_id":"a","ts":1.0,"run_id":"r",'
    ...                  b'"env_id":"math","status":"completed","reward":0.5}')
    >>> (e.env_id, e.reward, e.phase)
    ('math', 0.5, 'train')
    >>> decode_event(b'{"schema_version":2}').__class__
    Traceback (most recent call last):
    ...
    monitor.events.InvalidEvent: unsupported_schema_version: schema_version 2 is not 1
    """
    if len(data) > max_bytes:
        raise InvalidEvent("too_large", f"message of {len(data)} bytes exceeds {max_bytes}")
    try:
        event = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        reason = _version_reason(data) or _classify_validation(str(exc))
        if reason == "unsupported_schema_version":
            version = _version_decoder.decode(data).schema_version
            raise InvalidEvent(reason, f"schema_version {version!r} is not 1") from None
        raise InvalidEvent(reason, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent("invalid_json", str(exc)) from None
    except RecursionError:
        raise InvalidEvent("invalid_json", "JSON nested deeper than the recursion limit") from None
    except UnicodeError as exc:
        raise InvalidEvent("invalid_json", f"not valid UTF-8: {exc}") from None
    # The checks of _check_values inline (x - x is 0.0 exactly for a finite x): this runs
    # once per message; _check_values raises with the reason when one fails.
    reward = event.reward
    if (
        event.schema_version != SCHEMA_VERSION
        or event.ts - event.ts != 0.0
        or (reward is not None and reward - reward != 0.0)
    ):
        _check_values(event)
    return event


def event_from_mapping(obj: Any) -> RolloutEvent:
    """Validate an already-parsed object (a Parquet row, a dict) as an event."""
    if not isinstance(obj, dict):
        raise InvalidEvent("not_an_object", f"expected an object, got {type(obj).__name__}")
    obj = {k: v for k, v in obj.items() if v is not None or k == "reward"}
    try:
        event = msgspec.convert(obj, RolloutEvent)
    except msgspec.ValidationError as exc:
        version = obj.get("schema_version")
        if version is not None and version != SCHEMA_VERSION:
            raise InvalidEvent(
                "unsupported_schema_version", f"schema_version {version!r} is not 1"
            ) from None
        raise InvalidEvent(_classify_validation(str(exc)), str(exc)) from None
    _check_values(event)
    return event


def encode_event(event: RolloutEvent) -> bytes:
    """Encode an event as compact JSON (omitting nothing: defaults included)."""
    return msgspec.json.encode(event)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a schema-v1 rollout event."""
    schema: dict[str, Any] = msgspec.json.schema(RolloutEvent)
    return schema
