"""Remote mode: the proxy in front of a real local server (fake model), and in front of an
upstream that is down, hangs, or answers garbage; a subprocess shows it imports no torch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from function.service.messages import Request
from function.service.proxy import Proxy

from .cvat_support import body as cvat_body
from .fakes import FakeModel
from .local_function import serve_app
from .redis_support import free_port
from .server_process import ROOT, http_json
from .support import (
    LABEL_CONFIG,
    data_uri,
    encode_image,
    keypoint,
    make_app,
    make_settings,
    predict_body,
    running,
    sample_array,
)

IMAGE = data_uri(encode_image(sample_array()))


@contextmanager
def proxy_to(tmp_path: Path, upstream: str, **overrides: Any) -> Iterator[str]:
    settings = replace(make_settings(tmp_path), upstream_url=upstream, **overrides)
    with serve_app(Proxy(settings)) as server:  # type: ignore[arg-type]
        yield server.url


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[str]:
    with serve_app(make_app(tmp_path / "up", FakeModel(), prewarm=False)) as server:
        yield server.url


SETUP = {"project": "1.1795445671", "schema": LABEL_CONFIG, "extra_params": {}}
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/versions", None),
    ("POST", "/setup", SETUP),
    ("POST", "/predict", predict_body(IMAGE, [keypoint(50, 50)])),
    ("POST", "/predict", predict_body(IMAGE, None)),  # task open, no context
    ("POST", "/", predict_body(IMAGE, [keypoint(40, 40)])),
    ("POST", "/", cvat_body(pos=[[300, 240]])),  # the CVAT interactor body
    ("POST", "/", cvat_body(pos=[[300, 240]], box=[250, 200, 350, 300])),
    ("POST", "/webhook", {"action": "PROJECT_UPDATED", "project": {"id": 1}}),
    ("POST", "/train", {"annotation": {}, "project": {"id": 1}}),
    # errors are passed through too: status and JSON body
    ("POST", "/predict", {"tasks": "nope"}),
    ("POST", "/", {"image": "@@@", "pos_points": [[1, 1]]}),
    ("GET", "/predict", None),
    ("GET", "/no-such-route", None),
]


@pytest.mark.parametrize(("method", "path", "payload"), ROUTES)
def test_every_route_answers_through_the_proxy_as_directly(
    tmp_path: Path, upstream: str, method: str, path: str, payload: Any
) -> None:
    with proxy_to(tmp_path, upstream) as proxy:
        direct = http_json(method, upstream + path, payload)
        proxied = http_json(method, proxy + path, payload)
    assert without_region_ids(proxied) == without_region_ids(direct)


def without_region_ids(value: Any) -> Any:
    """Brush/polygon regions get a fresh random id per answer; everything else must match."""
    if isinstance(value, dict):
        return {k: without_region_ids(v) for k, v in value.items() if k != "id" or "from_name" not in value}
    if isinstance(value, (list, tuple)):
        return [without_region_ids(v) for v in value]
    return value


def test_health_says_proxy_and_upstream_reachable(tmp_path: Path, upstream: str) -> None:
    with proxy_to(tmp_path, upstream) as proxy:
        status, health = http_json("GET", proxy + "/health")
        assert status == 200
        assert health["status"] == "UP" and health["proxy"] is True and health["upstream_reachable"] is True
        assert http_json("GET", proxy + "/")[1]["proxy"] is True
        assert http_json("GET", proxy + "/live") == (200, {"status": "live", "proxy": True})
        http_json("POST", proxy + "/", cvat_body(pos=[[300, 240]]))
        status, metrics = http_json("GET", proxy + "/metrics")
    assert status == 200
    assert metrics["proxy"]["forwarded"] >= 2 and metrics["upstream"]["encoder_calls"] == 1


def test_upstream_credentials_replace_the_callers(tmp_path: Path) -> None:
    app = make_app(tmp_path / "up", FakeModel(), basic_auth_user="gpu", basic_auth_pass="gpu-secret-1")
    with serve_app(app) as server:
        with proxy_to(tmp_path, server.url) as proxy:
            assert http_json("GET", proxy + "/versions")[0] == 401  # the upstream's 401, passed through
        with proxy_to(tmp_path, server.url, upstream_user="gpu", upstream_pass="gpu-secret-1") as proxy:
            assert http_json("GET", proxy + "/versions")[0] == 200
            assert http_json("POST", proxy + "/", cvat_body(pos=[[300, 240]]))[0] == 200


def test_the_proxys_own_basic_auth(tmp_path: Path, upstream: str) -> None:
    import base64

    good = "Basic " + base64.b64encode(b"ls:front-secret").decode()
    with proxy_to(tmp_path, upstream, basic_auth_user="ls", basic_auth_pass="front-secret") as proxy:
        assert http_json("GET", proxy + "/versions")[0] == 401
        assert http_json("GET", proxy + "/versions", headers={"Authorization": good})[0] == 200
        assert http_json("GET", proxy + "/live")[0] == 200


class Recorder(BaseHTTPRequestHandler):
    """Records what arrives; answers with what the test set on the server."""

    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, dict(self.headers.items()), raw))
        status, ctype, payload, extra = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _serve


@contextmanager
def recorder(answer: tuple[int, str, bytes, dict[str, str]]) -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.seen, server.answer = [], answer
    with running(server) as url:
        server.url = url
        yield server


def test_headers_hop_by_hop_host_and_length_not_copied(tmp_path: Path) -> None:
    answer = (418, "application/json", b'{"teapot":true}', {"X-Upstream": "1", "Keep-Alive": "timeout=5"})
    sent = {
        "X-Request-Id": "abc",
        "Connection": "keep-alive, X-Drop-Me",
        "X-Drop-Me": "1",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic eDp5",
        "Te": "trailers",
        "Upgrade": "h2c",
        "Host": "function.example:8080",
        "Content-Length": "999",
        "Authorization": "Token caller",
    }
    with recorder(answer) as up:
        # In process: an HTTP client between the test and the proxy would rewrite Connection.
        proxy = Proxy(replace(make_settings(tmp_path), upstream_url=up.url + "/base"))
        reply = proxy.handle(Request("POST", "/predict", {"tasks": []}, sent, "a=1"))
    assert (reply.status, json.loads(reply.text)) == (418, {"teapot": True})
    assert reply.headers == {"X-Upstream": "1"}
    ((method, path, headers, raw),) = up.seen
    assert (method, path) == ("POST", "/base/predict?a=1")
    assert json.loads(raw) == {"tasks": []}
    assert headers["Content-Length"] == str(len(raw)) and headers["Content-Type"] == "application/json"
    assert headers["X-Request-Id"] == "abc" and headers["Authorization"] == "Token caller"
    assert headers["Host"] == up.url.split("//")[1]  # the upstream's own, set by the transport
    for dropped in ("X-Drop-Me", "Keep-Alive", "Proxy-Authorization", "Te", "Upgrade"):
        assert dropped not in headers


def test_upstream_down_is_502(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    with proxy_to(tmp_path, f"http://127.0.0.1:{port}") as proxy:
        status, reply = http_json("POST", proxy + "/", cvat_body(pos=[[300, 240]]))
        assert status == 502 and "unreachable" in reply["error"]
        status, health = http_json("GET", proxy + "/health")
        assert status == 502 and health["proxy"] is True and health["upstream_reachable"] is False


def test_upstream_that_hangs_is_504_within_the_timeout(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with proxy_to(tmp_path, url, upstream_timeout_s=0.5) as proxy:
            started = time.monotonic()
            status, reply = http_json("POST", proxy + "/predict", predict_body(IMAGE, [keypoint(5, 5)]))
            waited = time.monotonic() - started
    finally:
        listener.close()
    assert status == 504 and "did not answer within 0.5 s" in reply["error"]
    assert waited < 30  # bounded by UPSTREAM_TIMEOUT_S, not the caller's own timeout


def test_upstream_answering_html_is_502(tmp_path: Path) -> None:
    with (
        recorder((502, "text/html", b"<html>bad gateway</html>", {})) as up,
        proxy_to(tmp_path, up.url) as proxy,
    ):
        status, reply = http_json("GET", proxy + "/versions")
    assert status == 502 and "without a JSON body" in reply["error"]


def test_remote_mode_imports_no_torch(tmp_path: Path, upstream: str) -> None:
    script = f"""
import json, logging, sys
import nuclio_sdk
import handler
ctx = nuclio_sdk.Context(nuclio_sdk.Logger(logging.WARNING, "t"), worker_id=0)
handler.init_context(ctx)
body = {json.dumps(cvat_body(pos=[[300, 240]]))!r}
event = nuclio_sdk.Event(body=json.loads(body), method="POST", path="/", headers={{}},
                         content_type="application/json")
reply = handler.handler(ctx, event)
heavy = [m for m in ("torch", "numpy", "cv2", "PIL", "sam2") if m in sys.modules]
print(json.dumps({{"status": reply.status_code, "heavy": heavy}}))
"""
    env = {"PATH": "/usr/bin:/bin", "UPSTREAM_URL": upstream, "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"status": 200, "heavy": []}


def test_remote_mode_through_python_m_function_serve(tmp_path: Path, upstream: str) -> None:
    from .server_process import function_process

    with function_process({"UPSTREAM_URL": upstream}, tmp_path / "proxy.log") as proxy:
        assert http_json("POST", proxy + "/", cvat_body(pos=[[300, 240]])) == http_json(
            "POST", upstream + "/", cvat_body(pos=[[300, 240]])
        )
        assert http_json("GET", proxy + "/health")[1]["proxy"] is True


def test_settings_for_remote_mode() -> None:
    from function.settings import Settings, SettingsError

    s = Settings.from_env({"UPSTREAM_URL": "http://gpu:9090/", "UPSTREAM_TIMEOUT_S": "20"})
    assert s.upstream_url == "http://gpu:9090" and s.upstream_timeout_s == 20
    for bad in ({"UPSTREAM_URL": "gpu:9090"}, {"UPSTREAM_URL": "http://u:p@gpu"}, {"UPSTREAM_USER": "x"}):
        with pytest.raises(SettingsError):
            Settings.from_env({"UPSTREAM_URL": "http://gpu", **bad})
