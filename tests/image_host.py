"""A scriptable image host on 127.0.0.1 for download-fault tests.

Each path answers with a `Route`: a status, a body, a content type, an optional delay before
the headers, an optional trickle (bytes sent slowly), a redirect, or no Content-Length. Every
request is recorded with its headers, so tests can check where credentials went.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .support import running


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "image/png"
    delay_s: float = 0.0  # before the status line
    trickle_s: float = 0.0  # pause between single bytes of the body
    location: str | None = None  # answer a 302 to this URL
    send_length: bool = True  # False: no Content-Length, body until the connection closes
    claimed_length: int | None = None  # a Content-Length other than len(body)


@dataclass
class ImageHost:
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def paths_requested(self) -> list[str]:
        return [path for path, _ in self.requests]

    def auth_headers_seen(self) -> list[str]:
        return [h["Authorization"] for _, h in self.requests if "Authorization" in h]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and hang up are what these tests are about


@contextmanager
def image_host(routes: dict[str, Route] | None = None) -> Iterator[ImageHost]:
    host = ImageHost(dict(routes or {}))
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            host.requests.append((self.path, dict(self.headers.items())))
            route = host.routes.get(self.path) or Route(b"<html>missing</html>", 404, "text/html")
            if route.delay_s:
                stop.wait(route.delay_s)
            self.send_response(route.status)
            if route.location is not None:
                self.send_header("Location", route.location)
            self.send_header("Content-Type", route.content_type)
            if route.send_length:
                length = route.claimed_length if route.claimed_length is not None else len(route.body)
                self.send_header("Content-Length", str(length))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            try:
                if route.trickle_s:
                    for i in range(len(route.body)):
                        if stop.wait(route.trickle_s):
                            return
                        self.wfile.write(route.body[i : i + 1])
                        self.wfile.flush()
                else:
                    self.wfile.write(route.body)
            except OSError:
                pass  # the client gave up: expected in the timeout and size tests

    with running(_QuietServer(("127.0.0.1", 0), Handler)) as host.url:
        try:
            yield host
        finally:
            stop.set()  # end trickling responses before the server shuts down
