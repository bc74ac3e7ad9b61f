"""A daemon started as its own process (``python -m monitor.cli run``), for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from stack import REPO_DIR, http_problem, wait_until


def free_listen() -> str:
    """A loopback address with a port nothing listens on now (for daemons Prometheus ignores)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


class DaemonProcess:
    """``start()`` waits for /readyz; ``stop()`` sends SIGTERM and returns the exit code."""

    def __init__(self, env: Mapping[str, str], listen: str, log_path: Path) -> None:
        self.env = {**os.environ, **env, "ROLLOUT_MONITOR_HTTP__LISTEN": listen}
        self.listen = listen
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    def start(self, timeout: float = 60.0) -> DaemonProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run"],
            env=self.env,
            cwd=REPO_DIR,
            stdout=log,
            stderr=log,
        )
        try:
            wait_until(
                lambda: (
                    self.proc is not None
                    and (self.proc.poll() is not None or http_problem(self.url + "/readyz") is None)
                ),
                timeout=timeout,
                interval=0.2,
                message="daemon /readyz",
            )
        except TimeoutError:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon not ready; log:\n{self.log_tail()}") from None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
        return self

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as response:
            text: str = response.read().decode()
        return text

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``."""
        total = 0.0
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                    total += s.value
        return total

    def sample_labels(self, name: str) -> list[dict[str, str]]:
        """The label sets of the samples called ``name``."""
        return [
            dict(s.labels)
            for family in text_string_to_metric_families(self.metrics_text())
            for s in family.samples
            if s.name == name
        ]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"daemon did not stop in {timeout}s:\n{self.log_tail()}") from None

    def processed_at_stop(self) -> int:
        """The event count the daemon logged when it stopped cleanly."""
        found = re.findall(r"stopped after processing (\d+) events", self.log_path.read_text())
        assert found, f"no clean-stop line in the log:\n{self.log_tail()}"
        return int(found[-1])

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
