"""The demo page at GET /demo: served by the local server, and driven in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from function.adapters.labelstudio.brush import mask_to_rle
from function.service.server import LocalServer
from function.tools.sample import BALL_CENTRE, SAMPLE_SIZE

from .browser import Page, chromium, chromium_or_skip
from .fakes import FakeModel
from .local_function import serve_app
from .support import make_app, rle_rgba


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    with serve_app(make_app(tmp_path, FakeModel(radius=20))) as srv:
        yield srv


def get(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.headers["Content-Type"], resp.read()


def test_demo_page_and_sample_are_served(server: LocalServer) -> None:
    for path in ("/demo", "/demo/"):
        content_type, html = get(server.url + path)
        assert content_type == "text/html; charset=utf-8"
        text = html.decode()
        assert "/*LABEL_CONFIG*/" not in text and "<KeyPointLabels" in text
        assert "http://" not in text and "https://" not in text  # nothing fetched from elsewhere
    content_type, png = get(server.url + "/demo/sample.png")
    assert content_type == "image/png"
    assert Image.open(io.BytesIO(png)).size == SAMPLE_SIZE


def wait_reply(page: Page, count: int) -> None:
    page.wait_for(f"Number(document.body.dataset.replies || 0) >= {count}")


def overlay_alpha(page: Page, x: int, y: int) -> int:
    return int(
        page.js(f"document.getElementById('overlay').getContext('2d').getImageData({x}, {y}, 1, 1).data[3]")
    )


@pytest.mark.browser
def test_click_drag_and_format_in_headless_chromium(server: LocalServer) -> None:
    binary = chromium_or_skip()
    with chromium(binary) as page:
        page.send("Network.enable")
        page.send("Page.navigate", url=server.url + "/demo?sample=1")
        page.wait_for("document.body.dataset.state === 'ready'")
        left, top, width, height = page.js(
            "(() => { const r = document.getElementById('overlay').getBoundingClientRect();"
            " return [r.left, r.top, r.width, r.height]; })()"
        )

        def screen(x: float, y: float) -> tuple[float, float]:
            return left + x * width / SAMPLE_SIZE[0], top + y * height / SAMPLE_SIZE[1]

        def shot_at(shot: np.ndarray, x: float, y: float) -> np.ndarray:
            sx, sy = screen(x, y)
            return shot[int(sy), int(sx)].astype(int)

        before = page.screenshot()
        bx, by = BALL_CENTRE
        page.click(*screen(bx, by))
        wait_reply(page, 1)
        after = page.screenshot()
        if os.environ.get("DEMO_SCREENSHOT"):
            Image.fromarray(after).save(os.environ["DEMO_SCREENSHOT"])
        # The fake model's mask is a disc of radius 20 around the click: tinted on screen there,
        # and nothing changed well outside it.
        assert np.abs(shot_at(after, bx + 14, by) - shot_at(before, bx + 14, by)).sum() > 60
        assert np.array_equal(shot_at(after, 60, 440), shot_at(before, 60, 440))
        assert overlay_alpha(page, bx + 14, by) > 0 and overlay_alpha(page, bx + 40, by) == 0
        assert '"type": "brushlabels"' in page.js("document.getElementById('json').textContent")

        # Right click: a negative point goes to the function as is_positive false (drawn red).
        page.click(*screen(100, 60), button="right")
        wait_reply(page, 2)
        assert page.js("state.points.map(p => p.positive).join()") == "true,false"
        dot = "document.getElementById('overlay').getContext('2d').getImageData(100, 60, 1, 1).data"
        assert page.js(f"Array.from({dot}.slice(0, 3)).join()") == "235,40,40"

        # Drag: a box prompt; the fake model fills the box.
        page.send("Input.dispatchMouseEvent", type="mouseMoved", x=screen(120, 330)[0], y=screen(120, 330)[1])
        page.mouse("mousePressed", *screen(120, 330))
        page.mouse("mouseMoved", *screen(200, 380))
        page.mouse("mouseMoved", *screen(260, 420))
        page.mouse("mouseReleased", *screen(260, 420))
        wait_reply(page, 3)
        assert overlay_alpha(page, 190, 375) > 0 and overlay_alpha(page, bx + 14, by) == 0

        # Format selector -> /setup with return_format for its own demo project, then /predict.
        page.js(
            "(() => { const f = document.getElementById('format'); f.value = 'PolygonLabels';"
            " f.dispatchEvent(new Event('change')); })()"
        )
        wait_reply(page, 4)
        assert '"type": "polygonlabels"' in page.js("document.getElementById('json').textContent")

        # Everything the page loaded came from the function itself (or was a data: URI).
        urls = [
            e["params"]["request"]["url"]
            for e in page.events
            if e.get("method") == "Network.requestWillBeSent"
        ]
        assert any(u.endswith("/predict") for u in urls) and any(u.endswith("/setup") for u in urls)
        assert all(u.startswith((server.url, "data:")) for u in urls), urls
        setups = [
            json.loads(e["params"]["request"]["postData"])
            for e in page.events
            if e.get("method") == "Network.requestWillBeSent"
            and e["params"]["request"]["url"].endswith("/setup")
        ]
        assert [(s["project"], json.loads(s["extra_params"])) for s in setups] == [
            ("demo-brushlabels", {"return_format": {"type": "BrushLabels"}}),
            ("demo-polygonlabels", {"return_format": {"type": "PolygonLabels"}}),
        ]


@pytest.mark.browser
def test_javascript_rle_decoder_matches_the_sdk(server: LocalServer) -> None:
    """Runs of every size class, pieces over 65536 and literal stretches, decoded both ways."""
    binary = chromium_or_skip()
    rng = np.random.default_rng(7)
    mask = np.zeros((300, 400), np.uint8)
    mask[20:40, 30:380] = 255
    mask[100:160, 100:140] = rng.integers(0, 2, (60, 40), dtype=np.uint8) * 255
    mask[299, 399] = 255
    rle = mask_to_rle(mask)
    with chromium(binary) as page:
        page.send("Page.navigate", url=server.url + "/demo")
        page.wait_for("document.body.dataset.state === 'ready'")
        encoded = page.js(
            f"(() => {{ const out = decodeRLE({json.dumps(rle)}); let s = '';"
            " for (let i = 0; i < out.length; i += 8192)"
            "   s += String.fromCharCode.apply(null, out.subarray(i, i + 8192));"
            " return btoa(s); })()"
        )
    decoded = np.frombuffer(base64.b64decode(encoded), np.uint8)
    assert np.array_equal(decoded, rle_rgba(rle))
    assert np.array_equal(decoded.reshape(300, 400, 4)[:, :, 3], mask)
