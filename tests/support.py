"""Test helpers: sample images, app construction, a fake Label Studio server."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import hypothesis
import numpy as np
from PIL import Image

from function.core.model import SegmentationModel
from function.service.app import App, Reply, Request
from function.service.compose import build_app
from function.settings import Settings

# Requests recorded from a real Label Studio 1.23.2 (tests/fixtures/labelstudio/README.md).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "labelstudio"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


# Examples per property test under the "quick" hypothesis profile (tests/conftest.py); 100 otherwise.
QUICK_EXAMPLES = 20


def examples(thorough: int) -> int:
    """`max_examples` for a property test that wants `thorough` examples in the full run: scaled
    like the loaded hypothesis profile (100 examples thorough, QUICK_EXAMPLES quick)."""
    return max(1, thorough * hypothesis.settings.default.max_examples // 100)


def sample_array(width: int = 640, height: int = 480) -> np.ndarray:
    """The fixtures' test image: dark (30) background, light (220) rectangle x 200-399, y 150-329
    (scaled with the size)."""
    img = np.full((height, width, 3), 30, np.uint8)
    sx, sy = width / 640, height / 480
    img[int(150 * sy) : int(330 * sy), int(200 * sx) : int(400 * sx)] = 220
    return img


def encode_image(pixels: np.ndarray, fmt: str = "PNG", **save: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **save)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base = Settings(project_store_dir=tmp_path / "projects", warmup=False)
    return replace(base, **overrides)


def make_app(tmp_path: Path, model: SegmentationModel, **overrides: Any) -> App:
    return build_app(make_settings(tmp_path, **overrides), model=model)


def call(app: App, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
    reply = app.handle(Request(method, path, body, headers or {}))
    json.loads(reply.text)  # every reply must be valid JSON
    return reply


def keypoint(
    x_pct: float, y_pct: float, positive: bool | None = True, w: int = 640, h: int = 480
) -> dict[str, Any]:
    region: dict[str, Any] = {
        "type": "keypointlabels",
        "from_name": "tag2",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {"x": x_pct, "y": y_pct, "width": 0.5, "keypointlabels": ["object"]},
    }
    if positive is not None:
        region["is_positive"] = positive
    return region


def rectangle(x: float, y: float, w: float, h: float) -> dict[str, Any]:
    return {
        "type": "rectanglelabels",
        "from_name": "tag3",
        "to_name": "image",
        "original_width": 640,
        "original_height": 480,
        "image_rotation": 0,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": ["object"]},
    }


LABEL_CONFIG = fixture("predict_interactive_keypointlabels.json")["body"]["label_config"]


def predict_body(
    image: str, regions: list[dict[str, Any]] | None, label_config: str = LABEL_CONFIG, task_id: int = 1
) -> dict[str, Any]:
    context = None if regions is None else {"result": regions}
    return {
        "tasks": [{"id": task_id, "data": {"image": image}}],
        "project": "1.1795445671",
        "label_config": label_config,
        "params": {"login": None, "password": None, "context": context},
    }


def rle_rgba(rle: list[int]) -> np.ndarray:
    """Label Studio brush RLE -> the flat RGBA bytes, by label_studio_sdk's own decoder (the reference)."""
    from label_studio_sdk.converter.brush import decode_rle

    return np.asarray(decode_rle(rle))


def rle_mask(rle: list[int], width: int, height: int) -> np.ndarray:
    """Brush RLE -> its (height, width) uint8 mask (the alpha channel), after checking that the RLE
    holds exactly width x height RGBA pixels."""
    flat = rle_rgba(rle)
    assert flat.size == width * height * 4, (flat.size, width, height)
    return flat.reshape(height, width, 4)[:, :, 3]


def region_mask(region: dict[str, Any]) -> np.ndarray:
    """A brush result region's (original_height, original_width) uint8 mask."""
    return rle_mask(region["value"]["rle"], region["original_width"], region["original_height"])


def wait_until(condition: Callable[[], object], timeout_s: float = 10.0, interval_s: float = 0.005) -> None:
    """Poll until `condition()` is truthy; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"condition not reached in {timeout_s} s"
        time.sleep(interval_s)


@contextmanager
def running(server: HTTPServer) -> Iterator[str]:
    """Serve `server` (bound to 127.0.0.1) from a daemon thread; yields its base URL.

    A short poll interval: `shutdown()` waits for the serving loop's next poll (0.5 s by default)."""
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- a fake Label Studio -----------------------------------------------------------------


def make_jwt(claims: dict[str, Any]) -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}.c2lnbmF0dXJl"


@dataclass
class FakeLabelStudio:
    """Serves /data/upload/* and /api/token/refresh/ like Label Studio 1.23 does."""

    files: dict[str, bytes] = field(default_factory=dict)
    pat: str = field(
        default_factory=lambda: make_jwt({"token_type": "refresh", "exp": 4102444800, "user_id": 1})
    )
    legacy: str = "0123456789abcdef0123456789abcdef01234567"
    access_ttl_s: float = 300.0
    refresh_status: int = 200
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    valid_access: set[str] = field(default_factory=set)
    refreshes: int = 0
    delay_s: float = 0.0
    on_request: Callable[[str], None] | None = None
    url: str = ""
    # project id -> tasks, listed by GET /api/tasks?project=&page=&page_size= as LS 1.23 does
    projects: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def task_page(self, query: str) -> tuple[int, dict[str, Any]]:
        params = dict(parse_qsl(query))
        tasks = self.projects.get(int(params.get("project", 0)), [])
        page, size = int(params.get("page", 1)), int(params.get("page_size", 30))
        chunk = tasks[(page - 1) * size : page * size]
        if page > 1 and not chunk:
            return 404, {"detail": "Invalid page."}
        return 200, {"tasks": chunk, "total": len(tasks), "total_annotations": 0, "total_predictions": 0}

    def issue_access(self) -> str:
        self.refreshes += 1
        token = make_jwt(
            {"token_type": "access", "exp": time.time() + self.access_ttl_s, "n": self.refreshes}
        )
        self.valid_access.add(token)
        return token

    def authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("Authorization", "")
        if auth == f"Token {self.legacy}":
            return True
        return auth.startswith("Bearer ") and auth[7:] in self.valid_access


@contextmanager
def fake_label_studio(ls: FakeLabelStudio | None = None) -> Iterator[FakeLabelStudio]:
    ls = ls or FakeLabelStudio()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            # The function may have hung up already: a slow reply past its timeout is a test case.
            with suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def do_GET(self) -> None:
            headers = dict(self.headers.items())
            ls.requests.append(("GET", self.path, headers))
            if ls.delay_s:
                time.sleep(ls.delay_s)
            path, _, query = self.path.partition("?")
            if path == "/api/tasks":
                if not ls.authorized(headers):
                    return self._reply(401, b'{"detail":"Authentication credentials were not provided."}')
                status, listing = ls.task_page(query)
                return self._reply(status, json.dumps(listing).encode())
            if self.path in ls.files:
                if not ls.authorized(headers):
                    return self._reply(401, b'{"detail":"Authentication credentials were not provided."}')
                return self._reply(200, ls.files[self.path], "image/png")
            self._reply(404, b"<html>not found</html>", "text/html")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            ls.requests.append(("POST", self.path, dict(self.headers.items())))
            if self.path == "/api/token/refresh/":
                if ls.refresh_status != 200:
                    return self._reply(ls.refresh_status, b'{"detail":"Token is invalid"}')
                if body.get("refresh") != ls.pat:
                    return self._reply(401, b'{"detail":"Token is invalid"}')
                return self._reply(200, json.dumps({"access": ls.issue_access()}).encode())
            self._reply(404, b"{}")

    with running(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as ls.url:
        yield ls
