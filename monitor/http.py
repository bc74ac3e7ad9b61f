"""The daemon's HTTP endpoints: ``/metrics``, ``/healthz`` (alive), ``/readyz`` (consuming).

Bound to loopback by default; optional basic auth and TLS protect every endpoint.
"""

from __future__ import annotations

import base64
import hmac
import ssl
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

#: Seconds a client may take to complete the TLS handshake or to send its request. A silent
#: client then loses its connection; it only ever holds its own thread, never the accept loop.
CLIENT_TIMEOUT_S = 10.0


#: Chunks of a response body shorter than this are gathered before they are written.
WRITE_CHUNK = 256 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: MonitorHTTPServer
    timeout = CLIENT_TIMEOUT_S
    # The body goes out in several writes: without TCP_NODELAY a short write that follows
    # another could wait for the client's delayed ACK (up to 40 ms on Linux).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        if not self.server.authorized(self.headers.get("Authorization")):
            self._send(
                401, b"unauthorized\n", extra={"WWW-Authenticate": 'Basic realm="rollout-monitor"'}
            )
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body = [generate_latest(self.server.registry)]
            if self.server.extra is not None:
                extra = self.server.extra()
                if isinstance(extra, bytes):
                    body.append(extra)
                else:
                    body.extend(extra)  # written one after the other, never joined whole
            self._send(200, body, CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n")
        elif path == "/readyz":
            ready, why = self.server.readiness()
            self._send(200 if ready else 503, (why + "\n").encode())
        else:
            self._send(404, b"not found: try /metrics, /healthz, /readyz\n")

    def _send(
        self,
        code: int,
        body: bytes | Sequence[bytes],
        content_type: str = "text/plain; charset=utf-8",
        extra: dict[str, str] | None = None,
    ) -> None:
        chunks = [body] if isinstance(body, bytes) else body
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(map(len, chunks))))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        for piece in _coalesced(chunks):
            self.wfile.write(piece)

    def log_message(self, format: str, *args: object) -> None:
        return  # scrapes every second would flood the log


def _coalesced(chunks: Sequence[bytes]) -> list[bytes]:
    """``chunks`` with runs of short ones joined (up to about :data:`WRITE_CHUNK`), so that
    a body of many small pieces is not written as many small packets.

    >>> [len(c) for c in _coalesced([b"a" * 10, b"b" * 20, b"c" * WRITE_CHUNK, b"d"])]
    [30, 262144, 1]
    """
    out: list[bytes] = []
    pending: list[bytes] = []
    size = 0
    for chunk in chunks:
        if len(chunk) >= WRITE_CHUNK:
            if pending:
                out.append(b"".join(pending))
                pending, size = [], 0
            out.append(chunk)
            continue
        pending.append(chunk)
        size += len(chunk)
        if size >= WRITE_CHUNK:
            out.append(b"".join(pending))
            pending, size = [], 0
    if pending:
        out.append(b"".join(pending))
    return out


class MonitorHTTPServer(ThreadingHTTPServer):
    """Serves the endpoints from a daemon thread; ``close()`` stops it."""

    daemon_threads = True

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        readiness: Callable[[], tuple[bool, str]],
        *,
        basic_auth: tuple[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
        extra: Callable[[], bytes | Sequence[bytes]] | None = None,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.registry = registry
        self.readiness = readiness
        # More exposition text after the registry's: bytes, or chunks to write in turn (as
        # SegmentExposition.chunks returns them, which avoids a copy of the whole text).
        self.extra = extra
        self._expected_auth = (
            "Basic " + base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
            if basic_auth
            else None
        )
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile=str(tls[0]), keyfile=str(tls[1]))
            # The handshake runs in the connection's thread (finish_request), not in accept():
            # there a client that connects and sends nothing would stall every other scrape.
            self.socket = context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread: threading.Thread | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(CLIENT_TIMEOUT_S)
            try:
                request.do_handshake()
            except (OSError, ValueError):
                return  # not TLS, or too slow; the caller closes the connection
        super().finish_request(request, client_address)

    def authorized(self, header: str | None) -> bool:
        if self._expected_auth is None:
            return True
        return header is not None and hmac.compare_digest(header, self._expected_auth)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> MonitorHTTPServer:
        self._thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()
