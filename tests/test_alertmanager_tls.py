"""Alerts posted to an Alertmanager behind TLS: verified against the configured CA, refused
by default for a certificate no trusted CA signed, accepted with verification switched off;
the settings refuse a CA file while verification is off; refused alerts are exported."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from self_signed import make_self_signed
from stack import wait_until

from detectors.alarm import Alarm
from monitor.alertmanager import AlertmanagerClient, tls_context
from monitor.alerts import AlertTracker
from monitor.config import AlertmanagerSettings
from monitor.metrics import AlertDeliveryCollector

ALARM = Alarm("error_rate", "page", 0.2, 0.05, "failure share 25%")


class HttpsAlertmanager:
    """Accepts alert posts over TLS; answers 422 to alerts of env ``refuse``."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.accepted: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                refused = any(a["labels"]["env"] == "refuse" for a in body)
                if not refused:
                    fake.accepted.extend(body)
                self.send_response(422 if refused else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def tls_am(tmp_path: Path) -> Iterator[tuple[HttpsAlertmanager, Path]]:
    cert, key = make_self_signed(tmp_path)
    fake = HttpsAlertmanager(cert, key)
    yield fake, cert
    fake.server.shutdown()
    fake.server.server_close()


def post_one(client: AlertmanagerClient, env: str) -> None:
    AlertTracker(60, "d.md", [client]).on_alarm("r", env, ALARM, 0, 0.0)


def test_the_configured_ca_verifies_the_certificate(tls_am: tuple[HttpsAlertmanager, Path]) -> None:
    fake, cert = tls_am
    settings = AlertmanagerSettings(url=fake.url, ca_file=cert)
    client = AlertmanagerClient(
        fake.url, ssl_context=tls_context(settings.verify_tls, settings.ca_file)
    ).start()
    post_one(client, "math")
    wait_until(lambda: client.sent_ok >= 1, 15.0)
    client.close()
    assert [a["labels"]["env"] for a in fake.accepted] == ["math"]


def test_an_untrusted_certificate_is_refused_by_default(
    tls_am: tuple[HttpsAlertmanager, Path],
) -> None:
    fake, _ = tls_am
    client = AlertmanagerClient(
        fake.url, max_backoff_seconds=0.2, ssl_context=tls_context(True, None)
    ).start()
    post_one(client, "math")
    wait_until(lambda: client.sent_error >= 2, 15.0)
    client.close()
    assert fake.accepted == [] and client.sent_ok == 0


def test_verification_can_be_switched_off(tls_am: tuple[HttpsAlertmanager, Path]) -> None:
    fake, _ = tls_am
    client = AlertmanagerClient(fake.url, ssl_context=tls_context(False, None)).start()
    post_one(client, "code")
    wait_until(lambda: client.sent_ok >= 1, 15.0)
    client.close()
    assert [a["labels"]["env"] for a in fake.accepted] == ["code"]


def test_a_ca_file_with_verification_off_is_refused(tmp_path: Path) -> None:
    cert, _ = make_self_signed(tmp_path)
    with pytest.raises(ValidationError, match="verify_tls"):
        AlertmanagerSettings(ca_file=cert, verify_tls=False)
    with pytest.raises(ValidationError, match="ca_file"):
        AlertmanagerSettings(ca_file=tmp_path / "missing.pem")


def test_refused_alerts_are_counted_and_exported(tls_am: tuple[HttpsAlertmanager, Path]) -> None:
    fake, cert = tls_am
    client = AlertmanagerClient(fake.url, ssl_context=tls_context(True, cert)).start()
    post_one(client, "refuse")
    wait_until(lambda: client.rejected >= 1, 15.0)
    post_one(client, "tool")
    wait_until(lambda: client.sent_ok >= 1, 15.0)
    client.close()
    registry = CollectorRegistry()
    registry.register(AlertDeliveryCollector(client))
    assert registry.get_sample_value("rollout_monitor_alerts_rejected_total") == 1
    assert [a["labels"]["env"] for a in fake.accepted] == ["tool"]
