"""Local HTTP server that hands the Nuclio handler the same events Nuclio would.

Nuclio semantics kept: the body becomes a dict only when Content-Type is exactly
`application/json` (else bytes); header names are canonicalised (`content-type` ->
`Content-Type`); the path carries no query string (the query goes to `event.fields`); the
reply is built from the handler's `nuclio_sdk.Response` the way the Nuclio wrapper does.
A body over the limit gets 413 before the handler, as Nuclio's `maxRequestBodySize` does.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import nuclio_sdk
import nuclio_sdk.json_encoder

log = logging.getLogger(__name__)

# Extra GET routes only the local server has (the demo page), path -> (content type, bytes).
StaticRoute = Callable[[], tuple[str, bytes]]


def canonical_header(name: str) -> str:
    """What fasthttp does to header names before Nuclio sees them."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def make_event(method: str, target: str, headers: dict[str, str], raw: bytes) -> nuclio_sdk.Event:
    url = urlsplit(target)
    headers = {canonical_header(k): v for k, v in headers.items()}
    content_type = headers.get("Content-Type", "")
    body: Any = raw
    if content_type == "application/json" and raw:
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw  # Nuclio leaves bytes unchanged when JSON parsing fails
    return nuclio_sdk.Event(
        body=body,
        content_type=content_type,
        headers=headers,
        method=method,
        path=url.path or "/",
        fields=dict(parse_qsl(url.query)),
        size=len(raw),
        url=target,
        trigger=nuclio_sdk.TriggerInfo("http", "local"),
    )


def build_context(level: int = logging.INFO) -> Any:
    """A Nuclio context as one worker of a function sees it, logging to stderr."""
    logger = nuclio_sdk.Logger(level, "sam2-nuclio")
    logger.set_handler("default", sys.stderr, nuclio_sdk.logger.HumanReadableFormatter())
    return nuclio_sdk.Context(logger, worker_id=0, trigger=nuclio_sdk.TriggerInfo("http", "local"))


# The Nuclio entry signature: (context, event) -> Response.
EventHandler = Callable[[Any, Any], Any]


class _Handler(BaseHTTPRequestHandler):
    server: LocalServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # the app logs requests itself
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.server.max_body_bytes:
            self._send(413, "application/json", b'{"error":"request body too large"}', {})
            self.close_connection = True
            return
        raw = self.rfile.read(length) if length else b""
        static = self.server.static_routes.get(urlsplit(self.path).path.rstrip("/"))
        if self.command == "GET" and static is not None:
            content_type, payload = static()
            self._send(200, content_type, payload, {})
            return
        event = make_event(self.command, self.path, dict(self.headers.items()), raw)
        output = self.server.handler(self.server.context, event)
        reply = nuclio_sdk.Response.from_entrypoint_output(self.server.encode, output)
        body = reply["body"]
        payload = body.encode() if isinstance(body, str) else bytes(body or b"")
        headers = {k: str(v) for k, v in (reply.get("headers") or {}).items() if isinstance(v, str)}
        self._send(int(reply["status_code"]), reply.get("content_type") or "text/plain", payload, headers)

    def _send(self, status: int, content_type: str, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-type", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 resets connections when many clients connect at once.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: EventHandler,
        context: Any,
        *,
        max_body_bytes: int = 64 * 2**20,
        static_routes: dict[str, StaticRoute] | None = None,
    ) -> None:
        """`handler(context, event)` answers every event; `context` has had `init_context`."""
        super().__init__(address, _Handler)
        self.handler = handler
        self.context = context
        self.max_body_bytes = max_body_bytes
        self.static_routes = static_routes or {}
        self.encode = nuclio_sdk.json_encoder.Encoder().encode

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="sam2-local-server", daemon=True)
        thread.start()
        return thread
