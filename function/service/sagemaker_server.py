"""The SageMaker container server: `GET /ping` and `POST /invocations` on port 8080.

SageMaker wants connections accepted within 250 ms of start and `/ping` answered within 2 s,
passing within 4 minutes: the socket is bound first and the models load on a background
thread; until then `/ping` and `/invocations` answer 503, and `/ping` turns 200 once the app
is built. A failed load keeps answering 500 with the reason (the endpoint then fails
creation with that message in its logs). Routing, auth and error mapping are `App.handle`'s.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .app import App
from .messages import Request

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080


class _Handler(BaseHTTPRequestHandler):
    server: SageMakerServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.server.max_body_bytes:
            self.close_connection = True
            return self._send(413, {"error": "request body too large"})
        raw = self.rfile.read(length) if length else b""
        app = self.server.app
        if app is None:
            if self.server.load_error is not None:
                return self._send(500, {"error": f"model loading failed: {self.server.load_error}"})
            return self._send(503, {"error": "models are loading; retry shortly"})
        path = urlsplit(self.path).path or "/"
        reply = app.handle(Request(self.command, path, raw, dict(self.headers.items())))
        self._send(reply.status, reply.body, reply.headers)

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class SageMakerServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], max_body_bytes: int = 64 * 2**20) -> None:
        super().__init__(address, _Handler)
        self.max_body_bytes = max_body_bytes
        self.app: App | None = None
        self.load_error: str | None = None

    def load_in_background(self, build: Callable[[], App]) -> threading.Thread:
        """Build the app (load the models) off the serving thread."""

        def run() -> None:
            try:
                self.app = build()
                log.info("models loaded: /ping answers 200")
            except Exception as exc:  # say why once; /ping keeps answering 500 with it
                self.load_error = f"{type(exc).__name__}: {exc}"
                log.error("model loading failed: %s", self.load_error)

        thread = threading.Thread(target=run, name="sagemaker-load", daemon=True)
        thread.start()
        return thread
