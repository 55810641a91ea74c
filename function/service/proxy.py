"""Remote mode: with UPSTREAM_URL set this function is a thin proxy to another instance of it.

For a CPU-only cluster that keeps the Nuclio function (and what Label Studio or CVAT call)
while SAM2 runs on a GPU box elsewhere (`./dev.sh serve` there, or another deployment). The
proxy imports no torch, numpy or OpenCV (only the standard library): the slim image target
in the Dockerfile carries none of them.

Every request is forwarded as is: method, path (under the upstream URL's own path), query,
body and end-to-end headers. Hop-by-hop headers, `Host`, `Content-Length` and
`Accept-Encoding` are not copied; `UPSTREAM_USER`/`UPSTREAM_PASS` replace the caller's
`Authorization` when set (and when this proxy checks its own BASIC_AUTH_*, the caller's
credentials were for it and are never forwarded). The upstream's status and JSON body come
back unchanged. An upstream that cannot be reached answers 502, one that does not answer
within UPSTREAM_TIMEOUT_S answers 504, one that answers something other than JSON answers 502.
`/live` is answered here; `/health` says this is a proxy and whether the upstream answers.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from function.settings import Settings

from .messages import Reply, Request, basic_auth_ok, route_name
from .redact import Redactor

log = logging.getLogger(__name__)

# RFC 9110 7.6.1 connection-specific fields, plus what the transport sets itself.
HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    )
)
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "accept-encoding"}
NOT_RETURNED = HOP_BY_HOP | {"content-length", "content-type", "content-encoding", "date", "server"}


class UpstreamDown(Exception):
    """Could not connect, or the connection broke: 502."""


class UpstreamSlow(Exception):
    """Connected, but no complete answer within the read timeout: 504."""


@dataclass
class ProxyStats:
    forwarded: int = 0
    upstream_down: int = 0
    upstream_timeouts: int = 0
    upstream_not_json: int = 0
    forward_seconds: float = 0.0


class Proxy:
    """The App of remote mode: same `handle(Request) -> Reply` and `error_reply`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url = urlsplit(settings.upstream_url)
        self.scheme = url.scheme
        self.host = url.hostname or ""
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.base_path = url.path.rstrip("/")
        self.display_url = (
            f"{url.scheme}://{url.hostname}{f':{url.port}' if url.port else ''}{self.base_path}"
        )
        self.upstream_auth = (
            "Basic "
            + base64.b64encode(f"{settings.upstream_user}:{settings.upstream_pass}".encode()).decode()
            if settings.upstream_user
            else None
        )
        self.redact = Redactor(settings.secrets)
        self.stats = ProxyStats()
        self._lock = threading.Lock()

    # -- the App interface ------------------------------------------------------------------------
    def handle(self, request: Request) -> Reply:
        started = time.perf_counter()
        name = route_name(request.path)
        method = request.method.upper()
        try:
            s = self.settings
            if name == "live":
                reply = Reply(200, {"status": "live", "proxy": True})
            elif s.basic_auth_enabled and not basic_auth_ok(
                request.header("Authorization"), s.basic_auth_user, s.basic_auth_pass
            ):
                reply = self.error_reply(401, "authentication required")
            else:
                reply = self._route(name, method, request)
        except Exception:
            log.exception("proxy error on %s /%s", method, name)
            reply = self.error_reply(500, "internal error; see the function logs")
        log.info(
            "%s /%s -> %d in %.1f ms (proxied)",
            method,
            name,
            reply.status,
            (time.perf_counter() - started) * 1e3,
        )
        return reply

    def error_reply(self, status: int, message: str) -> Reply:
        headers = {"WWW-Authenticate": 'Basic realm="sam2-nuclio"'} if status == 401 else {}
        (log.error if status >= 500 else log.info)("answering %d: %s", status, message)
        return Reply(status, {"error": self.redact(message)}, headers)

    # -- forwarding -------------------------------------------------------------------------------
    def _route(self, name: str, method: str, request: Request) -> Reply:
        if method == "GET" and name in ("health", ""):
            return self._health(request)
        if method == "GET" and name == "metrics":
            return self._metrics(request)
        try:
            return self.forward(request)
        except UpstreamDown as exc:
            return self.error_reply(502, f"upstream {self.display_url} unreachable: {exc}")
        except UpstreamSlow:
            return self.error_reply(
                504,
                f"upstream {self.display_url} did not answer within {self.settings.upstream_timeout_s:g} s",
            )

    def forward(self, request: Request) -> Reply:
        """The upstream's answer to `request`; raises UpstreamDown / UpstreamSlow."""
        body = _body_bytes(request.body)
        headers = self._forward_headers(request, body)
        path = self.base_path + (request.path if request.path.startswith("/") else "/" + request.path)
        if request.query:
            path += "?" + request.query
        started = time.perf_counter()
        status, reply_headers, raw = self._exchange(request.method.upper(), path, body, headers)
        with self._lock:
            self.stats.forwarded += 1
            self.stats.forward_seconds += time.perf_counter() - started
        declared = next((v for k, v in reply_headers if k.lower() == "content-type"), "")
        try:
            text = raw.decode("utf-8")
            if "json" not in declared.lower():  # e.g. an ingress's HTML error page
                json.loads(text)
            elif text.lstrip()[:1] not in ("{", "["):
                raise ValueError("not a JSON document")
        except (UnicodeDecodeError, ValueError):
            with self._lock:
                self.stats.upstream_not_json += 1
            return self.error_reply(502, f"upstream answered {status} without a JSON body")
        passed = {k: v for k, v in reply_headers if k.lower() not in NOT_RETURNED}
        return Reply(status, {}, passed, raw=text)

    def _forward_headers(self, request: Request, body: bytes | None) -> dict[str, str]:
        named_in_connection = {
            token.strip().lower()
            for token in (request.header("Connection") or "").split(",")
            if token.strip()
        }
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            lower = key.lower()
            if lower in NOT_FORWARDED or lower in named_in_connection:
                continue
            if lower == "authorization" and (self.upstream_auth or self.settings.basic_auth_enabled):
                continue
            headers[key] = value
        if self.upstream_auth:
            headers["Authorization"] = self.upstream_auth
        if body is not None and isinstance(request.body, (dict, list)):
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            headers["Content-Type"] = "application/json"
        return headers

    def _exchange(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        s = self.settings
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(
                self.host,
                self.port,
                timeout=s.upstream_connect_timeout_s,
                context=ssl.create_default_context(),
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=s.upstream_connect_timeout_s)
        try:
            try:
                conn.connect()
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    self.stats.upstream_down += 1
                raise UpstreamDown(_why(exc)) from None
            assert conn.sock is not None
            conn.sock.settimeout(s.upstream_timeout_s)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.getheaders(), response.read()
            except TimeoutError:
                with self._lock:
                    self.stats.upstream_timeouts += 1
                raise UpstreamSlow() from None
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    self.stats.upstream_down += 1
                raise UpstreamDown(_why(exc)) from None
        finally:
            conn.close()

    def _health(self, request: Request) -> Reply:
        info: dict[str, Any] = {"proxy": True, "upstream": self.display_url}
        try:
            reply = self.forward(Request("GET", "/health", None, self._health_headers(request)))
        except (UpstreamDown, UpstreamSlow) as exc:
            why = "timed out" if isinstance(exc, UpstreamSlow) else str(exc)
            return Reply(
                502, {"status": "DOWN", **info, "upstream_reachable": False, "error": self.redact(why)}
            )
        body = json.loads(reply.text)
        if not isinstance(body, dict):
            body = {"upstream_body": body}
        return Reply(reply.status, {**body, **info, "upstream_reachable": reply.status == 200})

    def _metrics(self, request: Request) -> Reply:
        with self._lock:
            mine = asdict(self.stats)
        try:
            upstream = json.loads(
                self.forward(Request("GET", "/metrics", None, self._health_headers(request))).text
            )
        except (UpstreamDown, UpstreamSlow):
            upstream = None
        return Reply(200, {"proxy": {"upstream": self.display_url, **mine}, "upstream": upstream})

    def _health_headers(self, request: Request) -> dict[str, str]:
        auth = request.header("Authorization")
        return {"Authorization": auth} if auth else {}


def _body_bytes(body: Any) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, (dict, list)):
        return json.dumps(body, separators=(",", ":")).encode()
    if isinstance(body, str):
        return body.encode()
    return bytes(body)


def _why(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "connect timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    return type(exc).__name__
