"""Both consumer backends through a broker outage, on a private broker this file starts.

The broker is the one of the local stack (jars in ``KAFKA_LIBS_DIR``, default
``.stack/kafka/libs``, run with ``java``) on free loopback ports, killed and restarted on
the same data directory. Without the jars or java the tests fail and say what is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, Producer

from monitor.source import BACKENDS, make_source

REPO = Path(__file__).resolve().parents[1]
LIBS = Path(os.environ.get("KAFKA_LIBS_DIR", REPO / ".stack" / "kafka" / "libs"))
LOG4J_CONFIG = REPO / "deploy" / "kafka" / "log4j2.properties"

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Broker:
    """A single KRaft node on loopback that a test can kill and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port, controller = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.workdir = workdir
        self.config = workdir / "server.properties"
        self.config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={workdir / 'data'}",
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "num.partitions=4",
                    "offsets.topic.num.partitions=4",
                    "group.initial.rebalance.delay.ms=0",
                    # A node restarted after a kill registers again only once the
                    # controller has given up on its previous session.
                    "broker.session.timeout.ms=2000",
                    "broker.heartbeat.interval.ms=500",
                ]
            )
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
        logging = (
            [f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", f"-Dkafka.logs.dir={self.workdir}"]
            if LOG4J_CONFIG.exists()
            else []
        )
        return ["java", "-Xmx256m", *logging, "-cp", f"{LIBS}/*", main, *args]

    def _java(self, main: str, *args: str) -> str:
        done = subprocess.run(
            self._command(main, *args), capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"{main} {' '.join(args)} failed: {done.stderr[-2000:]}", pytrace=False)
        return done.stdout

    def start(self, timeout_s: float = 30.0) -> None:
        log = (self.workdir / "broker.log").open("ab")
        self.process = subprocess.Popen(
            self._command("kafka.Kafka", str(self.config)), stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"the private broker did not listen on {self.bootstrap}", pytrace=False)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
        self.process = None


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if shutil.which("java") is None:
        pytest.fail("java is not on PATH; deploy/install.sh installs it", pytrace=False)
    if not any(LIBS.glob("kafka_2.13-*.jar")):
        pytest.fail(
            f"no Kafka broker jars in {LIBS}; deploy/install.sh fetches them", pytrace=False
        )
    broker = Broker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def produce(bootstrap: str, topic: str, count: int) -> None:
    failed: list[KafkaError] = []

    def delivered(error: KafkaError | None, _msg: Message) -> None:
        if error is not None:
            failed.append(error)

    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(count):
        producer.produce(topic, value=b"%d" % i, partition=i % 4, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert not failed


@pytest.mark.parametrize("backend", BACKENDS)
def test_source_rides_out_a_broker_outage(broker: Broker, backend: str) -> None:
    topic = f"outage-{uuid.uuid4().hex[:12]}"
    produce(broker.bootstrap, topic, 100)
    source = make_source(
        backend,  # type: ignore[arg-type]
        broker.bootstrap,
        [topic],
        f"g-{topic}",
        extra_config={
            "reconnect.backoff.max.ms": 1000,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        },
    )
    try:
        got = 0
        deadline = time.monotonic() + 20
        while got < 100:
            assert time.monotonic() < deadline
            got += len(source.poll_batch(500, 0.2))
        assert source.connected

        broker.kill()
        deadline = time.monotonic() + 10
        while source.connected:
            assert time.monotonic() < deadline, "still connected with the broker down"
            assert source.poll_batch(500, 0.2) == []
        for _ in range(5):
            assert source.poll_batch(500, 0.2) == []

        broker.start()
        produce(broker.bootstrap, topic, 100)
        got = 0
        deadline = time.monotonic() + 30
        while got < 100 or not source.connected:
            assert time.monotonic() < deadline, f"{got} messages after the restart"
            got += len(source.poll_batch(500, 0.2))
    finally:
        source.close()
