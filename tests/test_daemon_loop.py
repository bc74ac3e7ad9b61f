"""Daemon._loop: how long each poll may wait for its batch to fill."""

from __future__ import annotations

import time
from typing import Any

from monitor.config import PipelineSettings, Settings
from monitor.daemon import Daemon
from monitor.source.base import Batch, RawMessage


class ScriptedSource:
    """Hands out one message per poll and records the timeout of each poll."""

    def __init__(self, daemon: Daemon, polls: int) -> None:
        self.daemon = daemon
        self.polls = polls
        self.timeouts: list[float] = []
        self.connected = True

    def poll_batch(self, max_messages: int, timeout_s: float) -> Batch:
        self.timeouts.append(timeout_s)
        if len(self.timeouts) >= self.polls:
            self.daemon.stop()
        offset = len(self.timeouts)
        return Batch.of([RawMessage(b"{}", None, "t", 0, offset, None)])

    def assignment(self) -> list[tuple[str, int]]:
        return [("t", 0)]

    def lag(self) -> dict[tuple[str, int], int]:
        return {}


class SlowPipeline:
    """Takes ``seconds[i]`` to process the i-th batch."""

    def __init__(self, seconds: list[float]) -> None:
        self.seconds = seconds
        self.batches = 0

    def process_messages(self, batch: Any, release: bool = False) -> None:
        time.sleep(self.seconds[self.batches])
        self.batches += 1

    def end_batch(self) -> None:  # pragma: no cover - every poll returns a message
        raise AssertionError("no poll came back empty")


def run_loop(seconds: list[float], batch_max_seconds: float) -> list[float]:
    settings = Settings(
        pipeline=PipelineSettings(batch_max_seconds=batch_max_seconds, commit_every_seconds=600)
    )
    daemon = Daemon(settings)
    source = ScriptedSource(daemon, polls=len(seconds))
    daemon.source = source  # type: ignore[assignment]
    daemon.pipeline = SlowPipeline(seconds)  # type: ignore[assignment]
    daemon._loop()
    return source.timeouts


def test_a_poll_after_a_slow_batch_does_not_wait_for_more() -> None:
    """Messages that arrived while a batch was processed have waited that long already."""
    timeouts = run_loop([0.3, 0.0, 0.05, 0.0], batch_max_seconds=0.2)
    assert timeouts[0] > 0.19  # nothing processed yet: the whole wait
    assert timeouts[1] == 0.0  # after 0.3 s of processing: take what is there
    assert 0.15 < timeouts[2] <= 0.2  # after an instant batch: almost the whole wait
    assert 0.05 < timeouts[3] <= 0.15  # after 0.05 s of processing: at most what is left
