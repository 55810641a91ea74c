"""The click-to-segment demo page, served by the local server only (`GET /demo`).

The page is one static file; it talks to the function through /setup and /predict exactly
as Label Studio does. The label config it sends is the probe's, filled in here so the two
never drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path

from function.service.server import StaticRoute

from .sample import LABEL_CONFIG, sample_png

PAGE = Path(__file__).resolve().parent / "static" / "demo.html"
_CONFIG_SLOT = "/*LABEL_CONFIG*/null"


def demo_page() -> tuple[str, bytes]:
    # "</" escaped so no "</script>" can ever end the script block early.
    config = json.dumps(LABEL_CONFIG).replace("</", "<\\/")
    return "text/html; charset=utf-8", PAGE.read_text().replace(_CONFIG_SLOT, config, 1).encode()


def sample_image() -> tuple[str, bytes]:
    return "image/png", sample_png()


def demo_routes() -> dict[str, StaticRoute]:
    return {"/demo": demo_page, "/demo/sample.png": sample_image}
