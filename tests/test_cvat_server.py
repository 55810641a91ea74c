"""The CVAT interactor behind the local server (Nuclio's event semantics, `POST /`), under
concurrent clicks, and with the real SAM2 (random weights) through the whole stack."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nuclio_sdk
import numpy as np
import pytest

import handler
from function.service.app import App
from function.service.server import LocalServer

from .cvat_support import H, W, body, full_frame, interact
from .fakes import FakeModel
from .support import encode_image, make_app, running, sample_array


@pytest.fixture
def app(tmp_path: Path, fake_model: FakeModel) -> App:
    return make_app(tmp_path, fake_model)


@pytest.fixture
def server(app: App) -> Iterator[LocalServer]:
    context = handler_context(app)
    srv = LocalServer(("127.0.0.1", 0), handler.handler, context)
    with running(srv):
        yield srv


def handler_context(app: App) -> Any:
    context = nuclio_sdk.Context(nuclio_sdk.Logger(logging.INFO, "test"), worker_id=0)
    context.user_data.app = app
    return context


def post(
    url: str, data: bytes, content_type: str = "application/json", headers: dict[str, str] | None = None
) -> tuple[int, str, Any]:
    headers = {"Content-Type": content_type, **(headers or {})}
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, resp.headers["Content-Type"], json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], json.loads(err.read())


# What the dashboard adds when CVAT invokes through it (Kubernetes); direct calls add nothing.
DASHBOARD_HEADERS = {
    "x-nuclio-function-name": "pth-sam2-interactor",
    "x-nuclio-path": "/",
    "x-nuclio-project-name": "cvat",
    "x-nuclio-invoke-timeout": "120s",
}


@pytest.mark.parametrize(
    ("content_type", "headers"),
    [
        ("application/json", {}),
        ("application/json", DASHBOARD_HEADERS),
        ("application/json; charset=utf-8", {}),  # Nuclio hands the handler bytes then
    ],
)
def test_local_server_answers_a_cvat_call_on_root(
    server: LocalServer, content_type: str, headers: dict[str, str]
) -> None:
    payload = json.dumps(body(pos=[[300.5, 240.25]])).encode()
    status, ctype, reply = post(server.url + "/", payload, content_type, headers)
    assert status == 200 and ctype == "application/json"
    mask = full_frame(reply, W, H)
    assert mask[240, 300]


def test_local_server_answers_bad_cvat_calls_with_json_errors(server: LocalServer) -> None:
    status, ctype, reply = post(server.url + "/", b'{"image": "@@@", "pos_points": [[1, 2]]}')
    assert status == 400 and ctype == "application/json" and "error" in reply
    # NaN is not JSON, but Python's parser (and so Nuclio's) lets it through.
    raw = json.dumps(body(pos=[[1.0, 2.0]])).replace("1.0", "NaN").encode()
    status, _, reply = post(server.url + "/", raw)
    assert status == 422 and "finite" in reply["error"]
    status, _, reply = post(server.url + "/", json.dumps(body(pos=[[300, 240]])).encode())
    assert status == 200 and reply["bounds"] == [280, 220, 320, 260]


def test_local_server_accepts_a_30_mb_frame(server: LocalServer, fake_model: FakeModel) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (2600, 3000, 3), np.uint8)  # incompressible: ~23 MB as PNG
    frame = encode_image(noise, compress_level=0)
    payload = json.dumps(body(frame, pos=[[1500, 1300]])).encode()
    assert 28 * 2**20 < len(payload) < 64 * 2**20
    status, _, reply = post(server.url + "/", payload)
    assert status == 200
    assert reply["bounds"] == [1480, 1280, 1520, 1320]
    assert fake_model.encode_calls == 1


def test_concurrent_clicks_on_one_frame_share_one_encoder_pass(tmp_path: Path) -> None:
    model = FakeModel(encode_seconds=0.2)
    app = make_app(tmp_path, model)
    replies: list[dict[str, Any]] = []

    def click(x: int) -> None:
        replies.append(interact(app, body(pos=[[x, 240]])))

    threads = [threading.Thread(target=click, args=(280 + 10 * i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(replies) == 4 and model.encode_calls == 1


# -- the real SAM2 (random weights) through the whole stack ------------------------------


@pytest.mark.sam2
def test_real_sam2_reply_is_a_valid_cvat_mask(tmp_path: Path, sam2_model: Any) -> None:
    app = make_app(tmp_path, sam2_model)
    frame = encode_image(sample_array(320, 240))
    first = interact(app, body(frame, pos=[[150.5, 120.0]], neg=[[20, 20]]))
    mask = full_frame(first, 320, 240)
    second = interact(app, body(frame, box=[[100, 75], [200, 165]]))
    full_frame(second, 320, 240)
    assert app.engine.stats.encoder_calls == 1 and app.engine.stats.decoder_calls == 2
    if mask.any():  # random weights may find nothing; the reply must be valid either way
        assert first["points"]
