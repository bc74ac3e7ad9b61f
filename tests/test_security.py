"""The daemon's exposed surface: loopback by default, basic auth and TLS on every endpoint,
Kafka SSL/SASL settings passed through and validated, secrets kept out of output and logs,
Alertmanager credentials sent."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from pydantic import SecretStr
from self_signed import make_self_signed
from stack import REPO_DIR, Stack, wait_until

from monitor.config import ConfigError, KafkaSettings, load_settings
from monitor.simulate import Fault, SimulationConfig, generate_messages
from monitor.source._config import (
    CONSUMER_OWNED_KEYS,
    KAFKA_PYTHON_CONSUMER_KEYS,
    KAFKA_PYTHON_PRODUCER_KEYS,
    PRODUCER_OWNED_KEYS,
    kafka_python_kwargs,
)

SECRETS = {
    "ROLLOUT_MONITOR_KAFKA__SASL_PASSWORD": "sasl-pw-7f3a9c",
    "ROLLOUT_MONITOR_ALERTMANAGER__PASSWORD": "am-pw-0b12de",
    "ROLLOUT_MONITOR_ALERTMANAGER__BEARER_TOKEN": "am-token-5e6f71",
    "ROLLOUT_MONITOR_HTTP__BASIC_AUTH_PASSWORD": "http-pw-c4d8e2",
    "ROLLOUT_MONITOR_GRAFANA__TOKEN": "gf-token-9a8b7c",
    "ROLLOUT_MONITOR_GRAFANA__PASSWORD": "gf-pw-3d2e1f",
}
#: Alertmanager and Grafana take basic auth or a token, one at a time: every secret of
#: SECRETS appears in one of these two configurations.
WITH_PASSWORDS = {
    "ROLLOUT_MONITOR_KAFKA__SASL_PASSWORD": SECRETS["ROLLOUT_MONITOR_KAFKA__SASL_PASSWORD"],
    "ROLLOUT_MONITOR_HTTP__BASIC_AUTH_PASSWORD": SECRETS[
        "ROLLOUT_MONITOR_HTTP__BASIC_AUTH_PASSWORD"
    ],
    "ROLLOUT_MONITOR_ALERTMANAGER__USERNAME": "am-user",
    "ROLLOUT_MONITOR_ALERTMANAGER__PASSWORD": SECRETS["ROLLOUT_MONITOR_ALERTMANAGER__PASSWORD"],
    "ROLLOUT_MONITOR_GRAFANA__USERNAME": "gf-user",
    "ROLLOUT_MONITOR_GRAFANA__PASSWORD": SECRETS["ROLLOUT_MONITOR_GRAFANA__PASSWORD"],
}
WITH_TOKENS = {
    "ROLLOUT_MONITOR_KAFKA__SASL_PASSWORD": SECRETS["ROLLOUT_MONITOR_KAFKA__SASL_PASSWORD"],
    "ROLLOUT_MONITOR_HTTP__BASIC_AUTH_PASSWORD": SECRETS[
        "ROLLOUT_MONITOR_HTTP__BASIC_AUTH_PASSWORD"
    ],
    "ROLLOUT_MONITOR_ALERTMANAGER__BEARER_TOKEN": SECRETS[
        "ROLLOUT_MONITOR_ALERTMANAGER__BEARER_TOKEN"
    ],
    "ROLLOUT_MONITOR_GRAFANA__TOKEN": SECRETS["ROLLOUT_MONITOR_GRAFANA__TOKEN"],
}
USER, PASSWORD = "scraper", SECRETS["ROLLOUT_MONITOR_HTTP__BASIC_AUTH_PASSWORD"]
ENDPOINTS = ("/metrics", "/healthz", "/readyz")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_MONITOR_")}


def cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", *args],
        env={**clean_environ(), **(env or {})},
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get(
    url: str, auth: str | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, bytes, Mapping[str, str]]:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


# -- a daemon whose endpoints need credentials ---------------------------------------------


class SecuredDaemon:
    """``python -m monitor.cli run`` with its output in a log file; ready when ``probe`` is."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = {**clean_environ(), **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, probe: Callable[[], bool], timeout: float = 60.0) -> SecuredDaemon:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "monitor.cli", "run"],
                env=self.env,
                cwd=REPO_DIR,
                stdout=log,
                stderr=log,
            )
        try:
            wait_until(
                lambda: self.exited() or probe(),
                timeout=timeout,
                interval=0.2,
                retry_on=(OSError,),
                message="secured daemon ready",
            )
        except TimeoutError:
            self.stop()
            raise AssertionError(f"daemon not ready; log:\n{self.log()[-4000:]}") from None
        assert not self.exited(), self.log()[-4000:]
        return self

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def daemon_env(stack: Stack, topic: str, listen: str, **extra: str) -> dict[str, str]:
    return {
        "ROLLOUT_MONITOR_KAFKA__BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "ROLLOUT_MONITOR_KAFKA__TOPICS": topic,
        "ROLLOUT_MONITOR_KAFKA__GROUP_ID": "g-" + topic,
        "ROLLOUT_MONITOR_KAFKA__DEAD_LETTER_TOPIC": topic + ".dlq",
        "ROLLOUT_MONITOR_ALERTMANAGER__URL": "",
        "ROLLOUT_MONITOR_HTTP__LISTEN": listen,
        "ROLLOUT_MONITOR_HTTP__BASIC_AUTH_USERNAME": USER,
        "ROLLOUT_MONITOR_HTTP__BASIC_AUTH_PASSWORD": PASSWORD,
        "ROLLOUT_MONITOR_PIPELINE__BATCH_MAX_SECONDS": "0.1",
        **extra,
    }


# -- loopback by default -------------------------------------------------------------------


def test_endpoints_bind_loopback_by_default() -> None:
    done = cli("check-config")
    assert done.returncode == 0, done.stderr
    http = json.loads(done.stdout)["http"]
    assert http["listen"] == "127.0.0.1:9108"
    settings = load_settings()
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 9108)


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the IPv4/IPv6 sockets listening on ``port`` (from /proc/net)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.stack
def test_running_daemon_listens_on_loopback_only(
    stack: Stack, kafka_topic: Callable[..., str], tmp_path: Path
) -> None:
    port = free_port()
    listen = f"127.0.0.1:{port}"
    daemon = SecuredDaemon(daemon_env(stack, kafka_topic(), listen), tmp_path / "d.log")
    daemon.start(lambda: get(f"http://{listen}/healthz", basic(USER, PASSWORD))[0] == 200)
    try:
        assert listening_addresses(port) == {"0100007F"}, "127.0.0.1 only, in /proc/net/tcp"
    finally:
        assert daemon.stop() == 0, daemon.log()[-4000:]


# -- basic auth ----------------------------------------------------------------------------


@pytest.mark.stack
def test_basic_auth_guards_every_endpoint(
    stack: Stack, kafka_topic: Callable[..., str], tmp_path: Path
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    url = f"http://{listen}"
    daemon = SecuredDaemon(daemon_env(stack, kafka_topic(), listen), tmp_path / "d.log")
    daemon.start(lambda: get(url + "/readyz", basic(USER, PASSWORD))[0] == 200)
    try:
        for path in ENDPOINTS:
            status, _, headers = get(url + path)
            assert status == 401, path
            assert headers.get("WWW-Authenticate", "").startswith("Basic"), path
            for wrong in (
                basic(USER, "wrong"),
                basic("someone", PASSWORD),
                basic(USER, PASSWORD + "x"),
                basic(USER, ""),
                "Bearer " + PASSWORD,
                "Basic not-base64",
                basic(USER, PASSWORD).lower(),
            ):
                assert get(url + path, wrong)[0] == 401, (path, wrong)
            status, body, _ = get(url + path, basic(USER, PASSWORD))
            assert status == 200, (path, body)
        assert b"rollout_monitor_build_info" in get(url + "/metrics", basic(USER, PASSWORD))[1]
    finally:
        assert daemon.stop() == 0, daemon.log()[-4000:]


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl command."""
    return make_self_signed(tmp_path)


@pytest.mark.stack
def test_tls_serves_metrics_over_https(
    stack: Stack,
    kafka_topic: Callable[..., str],
    tmp_path: Path,
    self_signed: tuple[Path, Path],
) -> None:
    cert, key = self_signed
    listen = f"127.0.0.1:{free_port()}"
    env = daemon_env(
        stack,
        kafka_topic(),
        listen,
        ROLLOUT_MONITOR_HTTP__TLS_CERT_FILE=str(cert),
        ROLLOUT_MONITOR_HTTP__TLS_KEY_FILE=str(key),
    )
    trusting = ssl.create_default_context(cafile=str(cert))
    https = f"https://{listen}"
    daemon = SecuredDaemon(env, tmp_path / "d.log")
    daemon.start(lambda: get(https + "/readyz", basic(USER, PASSWORD), trusting)[0] == 200)
    try:
        status, body, _ = get(https + "/metrics", basic(USER, PASSWORD), trusting)
        assert status == 200 and b"rollout_monitor_build_info" in body
        assert get(https + "/metrics", None, trusting)[0] == 401, "TLS does not replace auth"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            get(https + "/metrics", basic(USER, PASSWORD), ssl.create_default_context())
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            get(f"http://{listen}/metrics", basic(USER, PASSWORD))
        assert not daemon.exited(), "a plain-HTTP request must not take the daemon down"
        assert get(https + "/healthz", basic(USER, PASSWORD), trusting)[0] == 200
        # A client that connects and never starts the handshake must not block other scrapes.
        host, port = listen.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5):
            status, _, _ = get(https + "/metrics", basic(USER, PASSWORD), trusting)
            assert status == 200
    finally:
        assert daemon.stop() == 0, daemon.log()[-4000:]


# -- Kafka SSL / SASL settings -------------------------------------------------------------


def test_kafka_ssl_and_sasl_settings_reach_both_backends(tmp_path: Path) -> None:
    settings = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="monitor",
        sasl_password=SecretStr("sasl-secret"),
        ssl_ca_location=str(tmp_path / "ca.pem"),
        ssl_certificate_location=str(tmp_path / "client.pem"),
        ssl_key_location=str(tmp_path / "client.key"),
    )
    conf = settings.client_config()
    assert conf == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "monitor",
        "sasl.password": "sasl-secret",
        "ssl.ca.location": str(tmp_path / "ca.pem"),
        "ssl.certificate.location": str(tmp_path / "client.pem"),
        "ssl.key.location": str(tmp_path / "client.key"),
    }
    assert "sasl-secret" not in repr(settings) and "sasl-secret" not in str(settings)
    consumer = kafka_python_kwargs(conf, CONSUMER_OWNED_KEYS, KAFKA_PYTHON_CONSUMER_KEYS)
    producer = kafka_python_kwargs(conf, PRODUCER_OWNED_KEYS, KAFKA_PYTHON_PRODUCER_KEYS)
    for kwargs in (consumer, producer):
        assert kwargs == {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "monitor",
            "sasl_plain_password": "sasl-secret",
            "ssl_cafile": str(tmp_path / "ca.pem"),
            "ssl_certfile": str(tmp_path / "client.pem"),
            "ssl_keyfile": str(tmp_path / "client.key"),
        }
    assert KafkaSettings().client_config() == {}, "plaintext adds nothing"
    assert KafkaSettings(security_protocol="SSL").client_config() == {"security.protocol": "SSL"}


def test_kafka_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUT_MONITOR_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("ROLLOUT_MONITOR_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("ROLLOUT_MONITOR_KAFKA__SASL_USERNAME", "u")
    monkeypatch.setenv("ROLLOUT_MONITOR_KAFKA__SASL_PASSWORD", "p-env")
    conf = load_settings().kafka.client_config()
    assert conf == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "u",
        "sasl.password": "p-env",
    }


@pytest.mark.parametrize(
    ("var", "value", "field"),
    [
        ("ROLLOUT_MONITOR_KAFKA__SECURITY_PROTOCOL", "TLS", "kafka.security_protocol"),
        ("ROLLOUT_MONITOR_KAFKA__SECURITY_PROTOCOL", "ssl", "kafka.security_protocol"),
        ("ROLLOUT_MONITOR_KAFKA__SASL_MECHANISM", "GSSAPI", "kafka.sasl_mechanism"),
        ("ROLLOUT_MONITOR_KAFKA__SSL_PASSWORD", "x", "kafka.ssl_password"),
    ],
)
def test_bad_kafka_security_setting_is_a_config_error_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, field: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_settings()
    done = cli("check-config", env={var: value, **SECRETS})
    assert done.returncode == 2
    assert field in done.stderr
    for secret in SECRETS.values():
        assert secret not in done.stderr + done.stdout, "an error message must not echo secrets"


# -- secrets stay out of output and logs ---------------------------------------------------


@pytest.mark.parametrize(
    ("env", "masked"),
    [
        (
            WITH_PASSWORDS,
            [
                ("kafka", "sasl_password"),
                ("http", "basic_auth_password"),
                ("alertmanager", "password"),
                ("grafana", "password"),
            ],
        ),
        (
            WITH_TOKENS,
            [
                ("kafka", "sasl_password"),
                ("http", "basic_auth_password"),
                ("alertmanager", "bearer_token"),
                ("grafana", "token"),
            ],
        ),
    ],
    ids=["passwords", "tokens"],
)
def test_check_config_masks_every_secret(
    env: dict[str, str], masked: list[tuple[str, str]]
) -> None:
    done = cli("check-config", env=env)
    assert done.returncode == 0, done.stderr
    for secret in SECRETS.values():
        assert secret not in done.stdout + done.stderr
    shown = json.loads(done.stdout)
    for section, field in masked:
        assert shown[section][field] == "**********", (section, field)
    assert shown["alertmanager"]["username"] in (None, "am-user")


def test_check_config_masks_secrets_from_the_toml_file(tmp_path: Path) -> None:
    toml = tmp_path / "secrets.toml"
    sasl = SECRETS["ROLLOUT_MONITOR_KAFKA__SASL_PASSWORD"]
    token = SECRETS["ROLLOUT_MONITOR_ALERTMANAGER__BEARER_TOKEN"]
    grafana_password = SECRETS["ROLLOUT_MONITOR_GRAFANA__PASSWORD"]
    toml.write_text(
        f'[kafka]\nsasl_password = "{sasl}"\n[alertmanager]\nbearer_token = "{token}"\n'
        f'[grafana]\nusername = "gf-user"\npassword = "{grafana_password}"\n'
    )
    done = cli("check-config", "--config", str(toml))
    assert done.returncode == 0, done.stderr
    for secret in SECRETS.values():
        assert secret not in done.stdout + done.stderr
    shown = json.loads(done.stdout)
    assert shown["grafana"]["password"] == shown["alertmanager"]["bearer_token"] == "**********"


def test_a_refused_setting_never_echoes_a_secret() -> None:
    """Errors quote the value given, except for secrets and whole sections."""
    password = SECRETS["ROLLOUT_MONITOR_GRAFANA__PASSWORD"]
    for env in (
        {"ROLLOUT_MONITOR_GRAFANA__PASSWORD": password},  # no username
        {"ROLLOUT_MONITOR_GRAFANA__URL": f"http://admin:{password}@127.0.0.1:3000"},
        {"ROLLOUT_MONITOR_ALERTMANAGER__PASSWORD": password, "ROLLOUT_MONITOR_LOG__LEVEL": "?"},
    ):
        done = cli("check-config", env=env)
        assert done.returncode == 2, done.stdout
        assert "invalid configuration" in done.stderr and password not in done.stderr


class RecordingAlertmanager:
    """A fake Alertmanager v2 API that records every request's headers and body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.requests.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingAlertmanager:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_alertmanager() -> Iterator[RecordingAlertmanager]:
    with RecordingAlertmanager() as server:
        yield server


def produce_fault(bootstrap: str, topic: str, run: str) -> None:
    config = SimulationConfig(
        seed=21,
        runs=(run,),
        events=6000,
        faults=(Fault("error_burst", "code-sandbox", 2000, 0.5),),
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value in generate_messages(config):
        producer.produce(topic, value=value, key=key)
        producer.poll(0)
    assert producer.flush(30) == 0


@pytest.mark.stack
@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_alertmanager_credentials_are_sent_and_no_secret_is_logged(
    stack: Stack,
    kafka_topic: Callable[..., str],
    tmp_path: Path,
    fake_alertmanager: RecordingAlertmanager,
    scheme: str,
) -> None:
    topic = kafka_topic(partitions=2)
    run = f"sec-{uuid.uuid4().hex[:8]}"
    listen = f"127.0.0.1:{free_port()}"
    credentials = {
        k: v
        for k, v in (WITH_TOKENS if scheme == "bearer" else WITH_PASSWORDS).items()
        if k.startswith("ROLLOUT_MONITOR_ALERTMANAGER__")
    }
    env = daemon_env(
        stack,
        topic,
        listen,
        ROLLOUT_MONITOR_ALERTMANAGER__URL=fake_alertmanager.url,
        # SASL settings on a PLAINTEXT listener: the clients must not echo the password.
        ROLLOUT_MONITOR_KAFKA__SASL_USERNAME="sasl-user",
        ROLLOUT_MONITOR_KAFKA__SASL_PASSWORD=SECRETS["ROLLOUT_MONITOR_KAFKA__SASL_PASSWORD"],
        ROLLOUT_MONITOR_LOG__LEVEL="DEBUG",
        **credentials,
    )
    daemon = SecuredDaemon(env, tmp_path / "d.log")
    daemon.start(lambda: get(f"http://{listen}/readyz", basic(USER, PASSWORD))[0] == 200)
    try:
        produce_fault(stack.kafka_bootstrap, topic, run)
        wait_until(
            lambda: any(
                alert["labels"].get("run") == run
                for _, _, body in fake_alertmanager.requests
                for alert in body
            ),
            timeout=60,
            message="an alert of the run was posted",
        )
    finally:
        assert daemon.stop() == 0, daemon.log()[-4000:]
    path, _, _ = fake_alertmanager.requests[0]
    assert path == "/api/v2/alerts"
    expected = (
        "Bearer " + SECRETS["ROLLOUT_MONITOR_ALERTMANAGER__BEARER_TOKEN"]
        if scheme == "bearer"
        else basic("am-user", SECRETS["ROLLOUT_MONITOR_ALERTMANAGER__PASSWORD"])
    )
    assert {h["Authorization"] for _, h, _ in fake_alertmanager.requests} == {expected}
    log = daemon.log()
    assert "configuration:" in log and "**********" in log
    for name, secret in SECRETS.items():
        assert secret not in log, f"{name} appears in the daemon's log"
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert encoded not in log and expected.split()[1] not in log
