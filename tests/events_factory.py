"""Small hand-built event streams for unit tests (the simulator makes the realistic ones)."""

from __future__ import annotations

import json
import random
from typing import Any


def make_event(i: int, **overrides: Any) -> dict[str, Any]:
    """A healthy completed episode number ``i``; keyword arguments override fields."""
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": f"ev-{i}",
        "ts": 1_764_000_000.0 + i * 0.1,
        "run_id": "run-a",
        "env_id": "math-v2",
        "status": "completed",
        "stop_reason": "stop",
        "reward": 1.0 if i % 2 else 0.0,
        "completion_tokens": 500 + (i * 37) % 200,
        "max_completion_tokens": 4096,
        "error": None,
    }
    event.update(overrides)
    return event


def healthy_stream(n: int, seed: int = 0, **overrides: Any) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        event = make_event(i, **overrides)
        event["reward"] = 1.0 if rng.random() < 0.5 else 0.0
        event["completion_tokens"] = int(rng.lognormvariate(6.2, 0.3))
        out.append(event)
    return out


def failing(event: dict[str, Any]) -> dict[str, Any]:
    return {
        **event,
        "status": "failed",
        "stop_reason": "error",
        "reward": None,
        "error": {"type": "VerifierTimeout", "where": "verifier", "message": "timed out"},
    }


def encode(events: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(e).encode() for e in events]
