#!/usr/bin/env python3
"""Record Alertmanager webhook notifications so tests and the demo can read them.

    POST <any path>  append the JSON body as one line to the notifications file
    GET  /           the recorded notifications, as a JSON list
    DELETE /         forget every recorded notification
    GET  /-/ready    200 once serving

Standard library only: it runs with any Python 3.11, with or without the project's venv.
The file survives restarts; DELETE truncates it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_FILE = Path(__file__).resolve().parent.parent / ".stack" / "webhook" / "notifications.jsonl"


class NotificationLog:
    """Notifications kept as JSON lines in one file; safe to share between request threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def append(self, notification: Any) -> None:
        line = json.dumps(notification, separators=(",", ":"), sort_keys=True)
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")

    def read(self) -> list[Any]:
        with self._lock:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def clear(self) -> None:
        with self._lock:
            self.path.write_text("", encoding="utf-8")


class Handler(BaseHTTPRequestHandler):
    server_version = "rollout-monitor-webhook/1"
    log: NotificationLog  # set on the subclass built by make_server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY_BYTES:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": f"body length {length} out of range"})
            return
        try:
            notification = json.loads(self.rfile.read(length))
        except ValueError as exc:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": f"body is not JSON: {exc}"})
            return
        self.log.append(notification)
        self._reply(HTTPStatus.OK, {"status": "recorded"})

    def do_GET(self) -> None:
        if self.path == "/-/ready":
            self._reply(HTTPStatus.OK, {"status": "ready"})
        elif self.path in ("/", ""):
            self._reply(HTTPStatus.OK, self.log.read())
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})

    def do_DELETE(self) -> None:
        if self.path in ("/", ""):
            self.log.clear()
            self._reply(HTTPStatus.OK, {"status": "cleared"})
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})

    def _reply(self, status: HTTPStatus, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # Polling GETs would bury the notifications in the log; record only what changes state.
        if self.command in ("POST", "DELETE"):
            super().log_message(format, *args)


def make_server(host: str, port: int, path: Path) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"log": NotificationLog(path)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("WEBHOOK_PORT", "9099")))
    parser.add_argument(
        "--file", type=Path, default=Path(os.environ.get("WEBHOOK_FILE", DEFAULT_FILE))
    )
    args = parser.parse_args(argv)

    server = make_server(args.host, args.port, args.file)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it must run off the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"webhook receiver on http://{args.host}:{args.port}/ recording to {args.file}",
        file=sys.stderr,
        flush=True,
    )
    with server:
        server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
