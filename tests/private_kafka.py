"""A private Kafka broker for tests that stop and restart it (never the shared one).

The broker is the local stack's: the jars in ``KAFKA_LIBS_DIR`` (default ``.stack/kafka/libs``)
run with ``java``, configured from ``deploy/kafka/server.properties.template`` on free
loopback ports and a data directory under the test's ``tmp_path``, logging through
``deploy/kafka/log4j2.properties``. ``stop()`` sends SIGTERM and waits for a clean shutdown;
``start()`` runs it again on the same ports and data.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stack import REPO_DIR, kafka_problem, wait_until

LIBS = Path(os.environ.get("KAFKA_LIBS_DIR", REPO_DIR / ".stack" / "kafka" / "libs"))
TEMPLATE = REPO_DIR / "deploy" / "kafka" / "server.properties.template"
LOG4J_CONFIG = REPO_DIR / "deploy" / "kafka" / "log4j2.properties"
HEAP = os.environ.get("KAFKA_HEAP_OPTS", "-Xmx512m").split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def render(template: str, values: dict[str, str]) -> str:
    """``template`` with each ``${NAME}`` replaced; every placeholder must have a value.

    >>> render("a=${X}", {"X": "1"})
    'a=1'
    """
    text = re.sub(r"\$\{([A-Z][A-Z0-9_]*)\}", lambda m: values.get(m[1], m[0]), template)
    left = re.findall(r"\$\{[A-Z][A-Z0-9_]*\}", text)
    if left:
        raise ValueError(f"no value for {sorted(set(left))}")
    return text


class PrivateKafka:
    """One KRaft node (broker and controller) that a test can stop and start again."""

    def __init__(self, workdir: Path, extra: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port, self.controller_port = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.data_dir = workdir / "data"
        self.log_dir = workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "server.properties"
        self.config.write_text(
            render(
                TEMPLATE.read_text(),
                {
                    "KAFKA_PORT": str(self.port),
                    "KAFKA_CONTROLLER_PORT": str(self.controller_port),
                    "KAFKA_DATA_DIR": str(self.data_dir),
                },
            )
            + "".join(f"\n{key}={value}" for key, value in (extra or {}).items())
            + "\n"
        )
        self.process: subprocess.Popen[bytes] | None = None
        cluster_id = self._java("kafka.tools.StorageTool", "random-uuid").strip()
        self._java(
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster_id,
            "-c",
            str(self.config),
        )

    def _command(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            *HEAP,
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp",
            f"{LIBS}/*",
            main,
            *args,
        ]

    def _java(self, main: str, *args: str) -> str:
        done = subprocess.run(
            self._command(main, *args), capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"{main} {' '.join(args)} failed: {done.stderr[-2000:]}", pytrace=False)
        return done.stdout

    def start(self, timeout_s: float = 60.0) -> PrivateKafka:
        """Start the node and return once it answers a metadata request."""
        assert self.process is None, "already running"
        with (self.log_dir / "kafka.out").open("ab") as out:
            self.process = subprocess.Popen(
                self._command("kafka.Kafka", str(self.config)),
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        try:
            wait_until(
                lambda: (
                    self.process is not None
                    and (self.process.poll() is not None or kafka_problem(self.bootstrap) is None)
                ),
                timeout=timeout_s,
                interval=0.5,
                message=f"private Kafka on {self.bootstrap}",
            )
        except TimeoutError:
            self.kill()
            pytest.fail(f"private Kafka not ready:\n{self.log_tail()}", pytrace=False)
        if self.process.poll() is not None:
            code = self.process.returncode
            self.process = None
            pytest.fail(f"private Kafka exited with {code}:\n{self.log_tail()}", pytrace=False)
        return self

    def stop(self, timeout_s: float = 60.0) -> float:
        """SIGTERM, wait for the clean shutdown; return the seconds it took."""
        started = time.monotonic()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"private Kafka ignored SIGTERM for {timeout_s}s", pytrace=False)
        self.process = None
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        path = self.log_dir / "kafka.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def require_kafka_jars() -> None:
    if shutil.which("java") is None:
        pytest.fail("java is not on PATH; deploy/install.sh installs it", pytrace=False)
    if not any(LIBS.glob("kafka_2.13-*.jar")):
        pytest.fail(f"no Kafka jars in {LIBS}; deploy/install.sh fetches them", pytrace=False)


@pytest.fixture(name="private_kafka")
def private_kafka_fixture(tmp_path: Path) -> Iterator[PrivateKafka]:
    """``private_kafka``: a started private broker, stopped after the test.

    A test module imports ``private_kafka_fixture`` to use it."""
    require_kafka_jars()
    broker = PrivateKafka(tmp_path / "kafka")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
