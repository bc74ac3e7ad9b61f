"""``rollout-monitor dashboards push`` takes Grafana's address and credentials from the
``grafana`` settings (environment, ``--config`` file), flags overriding them; the credentials
reach Grafana as the headers its API expects and never appear in the command's output.
Grafana is a local HTTP(S) server that records each request and checks the credentials."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from self_signed import make_self_signed
from stack import REPO_DIR

from dashboards import load_committed

TOKEN = "glsa_push-token-4c1d"
PASSWORD = "gf-admin-pw-88e0"
BEARER = f"Bearer {TOKEN}"
BASIC = "Basic Z2YtYWRtaW46Z2YtYWRtaW4tcHctODhlMA=="  # gf-admin:gf-admin-pw-88e0
DASHBOARDS = len(load_committed())


@dataclass
class RecordingGrafana:
    """Answers Grafana's folder and dashboard API under ``prefix``; 401 unless the request's
    Authorization header is ``accept``."""

    accept: str
    prefix: str = ""
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def serve(self, tls: tuple[Path, Path] | None = None) -> ThreadingHTTPServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((self.command, self.path, dict(self.headers.items())))
                path = self.path.split("?")[0].removeprefix(fake.prefix)
                if self.headers.get("Authorization") != fake.accept:
                    status, reply = 401, {"message": "invalid API key"}
                elif path == "/api/folders" and self.command == "GET":
                    status, reply = 200, []
                elif path == "/api/folders":
                    status, reply = 200, {"id": 1, "uid": body["uid"], "title": body["title"]}
                elif path == "/api/dashboards/db":
                    uid = body["dashboard"]["uid"]
                    status, reply = 200, {"status": "success", "uid": uid, "version": 1}
                else:
                    status, reply = 404, {"message": "not found"}
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            server.socket = context.wrap_socket(server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{server.server_address[1]}{self.prefix}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]


@pytest.fixture
def grafana_factory() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def make(accept: str, prefix: str = "", tls: tuple[Path, Path] | None = None) -> Any:
        fake = RecordingGrafana(accept, prefix)
        servers.append(fake.serve(tls))
        return fake

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def push(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_MONITOR_")}
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", "dashboards", "push", *args],
        env={**clean, **env},
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_token_from_the_environment_reaches_grafana_under_its_sub_path(
    grafana_factory: Any,
) -> None:
    grafana = grafana_factory(BEARER, prefix="/grafana")
    done = push(
        "--folder",
        "RL envs",
        env={"ROLLOUT_MONITOR_GRAFANA__URL": grafana.url, "ROLLOUT_MONITOR_GRAFANA__TOKEN": TOKEN},
    )
    assert done.returncode == 0, done.stderr
    assert (
        grafana.paths()
        == ["/grafana/api/folders", "/grafana/api/folders"]
        + ["/grafana/api/dashboards/db"] * DASHBOARDS
    )
    assert {h["Authorization"] for _, _, h in grafana.requests} == {BEARER}
    assert all("X-Grafana-Org-Id" not in h for _, _, h in grafana.requests)
    assert done.stdout.count("pushed ") == DASHBOARDS
    assert TOKEN not in done.stdout + done.stderr


def test_basic_auth_and_organisation_from_the_config_file(
    grafana_factory: Any, tmp_path: Path
) -> None:
    grafana = grafana_factory(BASIC)
    config = tmp_path / "monitor.toml"
    config.write_text(
        f'[grafana]\nurl = "{grafana.url}"\nusername = "gf-admin"\npassword = "{PASSWORD}"\n'
        "org_id = 4\ntimeout_seconds = 5\n"
    )
    done = push("--config", str(config), env={})
    assert done.returncode == 0, done.stderr
    assert len(grafana.requests) == DASHBOARDS, "no folder: the dashboards go to General"
    assert {h["Authorization"] for _, _, h in grafana.requests} == {BASIC}
    assert {h["X-Grafana-Org-Id"] for _, _, h in grafana.requests} == {"4"}
    assert PASSWORD not in done.stdout + done.stderr


def test_flags_override_the_settings(grafana_factory: Any) -> None:
    grafana = grafana_factory(BEARER)
    env = {
        "ROLLOUT_MONITOR_GRAFANA__URL": "http://127.0.0.1:9",  # nothing listens there
        "ROLLOUT_MONITOR_GRAFANA__USERNAME": "gf-admin",
        "ROLLOUT_MONITOR_GRAFANA__PASSWORD": PASSWORD,
    }
    done = push("--url", grafana.url, "--token", TOKEN, "--org-id", "2", env=env)
    assert done.returncode == 0, done.stderr
    assert {h["Authorization"] for _, _, h in grafana.requests} == {BEARER}
    assert {h["X-Grafana-Org-Id"] for _, _, h in grafana.requests} == {"2"}


def test_refused_credentials_fail_without_showing_them(grafana_factory: Any) -> None:
    grafana = grafana_factory(BEARER)
    wrong = "glsa_wrong-token-0000"
    done = push(
        env={"ROLLOUT_MONITOR_GRAFANA__URL": grafana.url, "ROLLOUT_MONITOR_GRAFANA__TOKEN": wrong}
    )
    assert done.returncode == 1 and "Grafana refused" in done.stderr
    assert wrong not in done.stdout + done.stderr
    assert len(grafana.requests) == 1, "the first refusal stops the push"


def test_missing_credentials_or_bad_settings_are_usage_errors(grafana_factory: Any) -> None:
    grafana = grafana_factory(BEARER)
    done = push(env={"ROLLOUT_MONITOR_GRAFANA__URL": grafana.url})
    assert done.returncode == 2 and "ROLLOUT_MONITOR_GRAFANA__TOKEN" in done.stderr
    done = push("--org-id", "0", env={"ROLLOUT_MONITOR_GRAFANA__TOKEN": TOKEN})
    assert done.returncode == 2 and "grafana.org_id" in done.stderr
    done = push("--url", "grafana:3000", env={"ROLLOUT_MONITOR_GRAFANA__TOKEN": TOKEN})
    assert done.returncode == 2 and "grafana.url" in done.stderr
    assert grafana.requests == []


def test_unreachable_grafana_is_a_runtime_failure() -> None:
    done = push(
        env={
            "ROLLOUT_MONITOR_GRAFANA__URL": "http://127.0.0.1:9",
            "ROLLOUT_MONITOR_GRAFANA__TOKEN": TOKEN,
            "ROLLOUT_MONITOR_GRAFANA__TIMEOUT_SECONDS": "2",
        }
    )
    assert done.returncode == 1 and "cannot reach Grafana" in done.stderr, done.stderr
    assert TOKEN not in done.stdout + done.stderr


def test_tls_is_verified_against_the_configured_ca(grafana_factory: Any, tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path)
    grafana = grafana_factory(BEARER, tls=(cert, key))
    env = {"ROLLOUT_MONITOR_GRAFANA__URL": grafana.url, "ROLLOUT_MONITOR_GRAFANA__TOKEN": TOKEN}
    done = push(env=env)
    assert done.returncode == 1, "a self-signed certificate is refused by default"
    assert grafana.requests == []
    done = push(env={**env, "ROLLOUT_MONITOR_GRAFANA__CA_FILE": str(cert)})
    assert done.returncode == 0, done.stderr
    assert len(grafana.requests) == DASHBOARDS
    done = push(env={**env, "ROLLOUT_MONITOR_GRAFANA__VERIFY_TLS": "false"})
    assert done.returncode == 0, done.stderr


def test_help_warns_that_a_token_flag_is_visible() -> None:
    done = push("--help", env={})
    assert done.returncode == 0
    assert "process list" in done.stdout and "ROLLOUT_MONITOR_GRAFANA__TOKEN" in done.stdout
    assert "--password" not in done.stdout
