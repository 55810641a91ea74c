"""Click latency through the real app: Label Studio `/predict` bodies into `App.handle`.

Images are JPEGs served from a local 127.0.0.1 HTTP server, as Label Studio serves uploads.
Ours: the feature cache on (later clicks on an image run only the prompt decoder). Baseline:
the same engine with `FEATURE_CACHE_MB=0`, which re-runs the image encoder on every click,
as the stock Label Studio SAM2 backend does. Both apps share one loaded model.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

import function.core.images as images_module
from function.core.model import SegmentationModel
from function.service.app import App, Request
from function.service.compose import build_app
from function.settings import Settings

from .common import Row, percentile

LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<BrushLabels name="tag" toName="image"><Label value="object"/></BrushLabels>'
    '<KeyPointLabels name="tag2" toName="image" smart="true"><Label value="object"/></KeyPointLabels>'
    "</View>"
)


def synthetic_jpeg(width: int, height: int, seed: int) -> bytes:
    """A photo-like JPEG: shaded background, texture noise and a few filled shapes."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 200, (max(height // 64, 2), max(width // 64, 2), 3), dtype=np.uint8)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(6):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(width // 20, width // 6)), int(rng.integers(height // 20, height // 6)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.ellipse(img, center, axes, float(rng.integers(0, 180)), 0, 360, color, -1)
    noise = rng.integers(0, 12, img.shape, dtype=np.uint8)
    img = np.minimum(img.astype(np.uint16) + noise, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


@contextlib.contextmanager
def image_server(files: dict[str, bytes]) -> Iterator[str]:
    """Serve `files` (path -> bytes) on 127.0.0.1; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            data = files.get(self.path)
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def click_body(url: str, width: int, height: int, x_pct: float, y_pct: float, task_id: int) -> dict[str, Any]:
    """What Label Studio sends when the annotator clicks with the smart keypoint tool."""
    region = {
        "type": "keypointlabels",
        "from_name": "tag2",
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "is_positive": True,
        "value": {"x": x_pct, "y": y_pct, "width": 0.5, "keypointlabels": ["object"]},
    }
    return {
        "tasks": [{"id": task_id, "data": {"image": url}}],
        "project": "1.1700000000",
        "label_config": LABEL_CONFIG,
        "params": {"login": None, "password": None, "context": {"result": [region]}},
    }


def click_positions(n: int) -> list[tuple[float, float]]:
    """Deterministic, distinct click positions (percent of width, height)."""
    rng = np.random.default_rng(7)
    return [(float(x), float(y)) for x, y in rng.uniform(10.0, 90.0, (n, 2))]


@dataclass
class Clicker:
    """Times `/predict` calls on one app, including the reply's JSON text (as the transport)."""

    app: App

    def click(self, body: dict[str, Any]) -> tuple[float, list[int]]:
        started = time.perf_counter()
        reply = self.app.handle(Request("POST", "/predict", body, {"Content-Type": "application/json"}))
        text = reply.text
        elapsed = (time.perf_counter() - started) * 1e3
        if reply.status != 200:
            raise RuntimeError(f"/predict answered {reply.status}: {text[:300]}")
        result = json.loads(text)["results"][0]["result"]
        return elapsed, result[0]["value"]["rle"] if result else []


@contextlib.contextmanager
def counting_decodes() -> Iterator[list[int]]:
    """Count JPEG decodes (`function.core.images.decode_rgb` calls) while inside."""
    original = images_module.decode_rgb
    count = [0]

    def counted(data: bytes, expected_size: tuple[int, int]) -> np.ndarray:
        count[0] += 1
        return original(data, expected_size)

    images_module.decode_rgb = counted
    try:
        yield count
    finally:
        images_module.decode_rgb = original


@dataclass(frozen=True)
class ClickPlan:
    width: int
    height: int
    first: int  # new images, one first click each
    later: int  # later clicks on the last of them
    baseline: int  # clicks with the feature cache off


def run_clicks(model: SegmentationModel, settings: Settings, plan: ClickPlan, seed: int) -> list[Row]:
    w, h = plan.width, plan.height
    size = f"{w}x{h}"
    files = {
        f"/data/upload/1/{size}-{seed + i}.jpg": synthetic_jpeg(w, h, seed + i) for i in range(plan.first)
    }
    cache_bytes = max(settings.feature_cache_bytes, 256 << 20)
    ours = Clicker(build_app(replace(settings, feature_cache_bytes=cache_bytes), model))
    stock = Clicker(build_app(replace(settings, feature_cache_bytes=0), model))
    spots = click_positions(max(plan.later, plan.baseline) + 1)
    with image_server(files) as base, counting_decodes() as decodes:
        urls = [base + path for path in files]
        first_ms = [ours.click(click_body(u, w, h, *spots[0], i + 1))[0] for i, u in enumerate(urls)]
        url, task = urls[-1], len(urls)
        later = [ours.click(click_body(url, w, h, *p, task)) for p in spots[1 : plan.later + 1]]
        ours_decodes = decodes[0]
        stock_clicks = [stock.click(click_body(url, w, h, *p, task)) for p in spots[1 : plan.baseline + 1]]
    stats = ours.app.engine.stats
    fetches = ours.app.labelstudio.media.fetch_count
    # Each image fetched, decoded and encoded once; the cached path gives the stock masks.
    assert stats.encoder_calls == plan.first, stats
    assert fetches == plan.first and ours_decodes == plan.first, (fetches, ours_decodes)
    assert stock.app.engine.stats.encoder_calls == plan.baseline
    for (_, ours_rle), (_, stock_rle) in zip(later, stock_clicks, strict=False):
        assert ours_rle == stock_rle, "a cached-feature click differs from a re-encoded one"
    later_ms = [ms for ms, _ in later]
    stock_ms = [ms for ms, _ in stock_clicks]
    first = percentile(first_ms, 50)
    counts = f"{len(later_ms)} vs {len(stock_ms)} clicks"
    return [
        Row(
            f"click {size}: later p50, cache on vs off",
            percentile(later_ms, 50),
            percentile(stock_ms, 50),
            "ms",
            counts,
        ),
        Row(
            f"click {size}: later p95, cache on vs off",
            percentile(later_ms, 95),
            percentile(stock_ms, 95),
            "ms",
            counts,
        ),
        Row(
            f"click {size}: later p50 vs first click",
            percentile(later_ms, 50),
            first,
            "ms",
            f"{len(first_ms)} first",
        ),
        Row(f"click {size}: first click vs stock p50", first, percentile(stock_ms, 50), "ms"),
    ]
