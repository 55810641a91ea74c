"""The real handler.py through nuclio_sdk's test Platform with real nuclio_sdk.Event objects.

`init_context` runs once per Platform and loads SAM2 tiny (random weights) from a checkpoint
file through the production path. Masks from random weights mean nothing, so with real SAM2
the checks are shape, size and decodability; "the mask covers the click" is checked with the
FakeModel swapped into the context.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nuclio_sdk
import nuclio_sdk.json_encoder
import numpy as np
import pytest
from nuclio_sdk.test import Platform

import handler
from function.core.engine import EncoderInput
from function.core.geometry import Box
from function.core.images import content_key
from function.core.prompts import Prompt

from .fakes import FakeModel
from .support import (
    data_uri,
    encode_image,
    keypoint,
    make_app,
    predict_body,
    rectangle,
    region_mask,
    rle_mask,
    sample_array,
)

W, H = 320, 240


def event(
    method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> nuclio_sdk.Event:
    """As Nuclio builds it: a dict body only for application/json, bytes otherwise."""
    headers = dict(headers or {})
    content_type = headers.get("Content-Type", "")
    if isinstance(body, (dict, list)) and content_type != "application/json":
        body = json.dumps(body).encode()
    return nuclio_sdk.Event(
        body=body if body is not None else b"",
        content_type=content_type,
        headers=headers,
        method=method,
        path=path,
        trigger=nuclio_sdk.TriggerInfo("http", "http"),
    )


JSON = {"Content-Type": "application/json"}


def check_response(response: Any) -> tuple[int, Any]:
    """Every answer is a Response with a JSON text body Nuclio's wrapper can serialise."""
    assert isinstance(response, nuclio_sdk.Response)
    assert response.content_type == "application/json"
    assert isinstance(response.body, str)
    body = json.loads(response.body)
    # What the Nuclio wrapper does with it: must not choke (no numpy scalars anywhere).
    out = nuclio_sdk.Response.from_entrypoint_output(nuclio_sdk.json_encoder.Encoder().encode, response)
    assert json.loads(out["body"]) == body
    return int(response.status_code), body


@pytest.fixture(scope="module")
def platform(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with pytest.MonkeyPatch.context() as mp:
        for key in (
            "MODEL_CONFIG",
            "MODEL_SIZE",
            "LABEL_STUDIO_URL",
            "LABEL_STUDIO_HOST",
            "BASIC_AUTH_USER",
            "RUNTIME",
        ):
            mp.delenv(key, raising=False)
        mp.setenv("MODEL_CHECKPOINT", str(tiny_checkpoint))
        mp.setenv("DEVICE", "cpu")
        mp.setenv("WARMUP", "false")
        mp.setenv("PROJECT_STORE_DIR", str(tmp_path_factory.mktemp("projects")))
        p = Platform()
        p.call_handler(handler.handler, event("GET", "/live"))  # runs init_context with this env
    yield p


def call(platform: Platform, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    return check_response(platform.call_handler(handler.handler, event(*args, **kwargs)))


@pytest.mark.sam2
def test_init_context_loads_sam2_once(platform: Platform) -> None:
    from function.core.runtime.model import RuntimeSam2Model

    app = platform._get_handler_context(handler.handler).user_data.app
    # RUNTIME=auto on CPU: SAM2 exported from this checkpoint, served by onnxruntime.
    assert isinstance(app.engine.model, RuntimeSam2Model)
    status, body = call(platform, "GET", "/health")
    assert status == 200
    assert body["status"] == "UP" and body["model_class"] == "SAM2"
    assert body["model_config"] == "configs/sam2.1/sam2.1_hiera_t.yaml" and body["device"] == "cpu"
    assert (body["runtime"], body["precision"]) == ("onnxruntime", "f32")
    assert call(platform, "GET", "/")[1]["status"] == "UP"
    assert call(platform, "GET", "/live") == (200, {"status": "live"})


@pytest.mark.sam2
def test_setup_and_versions(platform: Platform) -> None:
    status, body = call(
        platform, "POST", "/setup", {"project": "3.17", "schema": "", "extra_params": ""}, JSON
    )
    assert status == 200 and set(body) == {"model_version"}
    assert call(platform, "GET", "/versions")[1] == {"versions": [body["model_version"]]}


@pytest.mark.sam2
def test_predict_with_real_sam2_decodes_to_the_model_mask(platform: Platform) -> None:
    png = encode_image(sample_array(W, H))
    app = platform._get_handler_context(handler.handler).user_data.app
    encodes = app.engine.stats.encoder_calls
    prompts = [
        ([keypoint(46.9, 50.0, w=W, h=H)], Prompt.build([(0.469 * W, 0.5 * H)], [], None)),
        ([rectangle(30, 30, 35, 40)], Prompt.build([], [], Box(0.30 * W, 0.30 * H, 0.65 * W, 0.70 * H))),
    ]
    for regions, prompt in prompts:
        status, body = call(platform, "POST", "/predict", predict_body(data_uri(png), regions), JSON)
        assert status == 200, body
        (prediction,) = body["results"]
        (region,) = prediction["result"]
        assert region["type"] == "brushlabels" and region["value"]["format"] == "rle"
        assert (region["original_width"], region["original_height"]) == (W, H)
        mask = region_mask(region)
        # Random weights: the mask means nothing, but it must be exactly what SAM2 decoded.
        features, cached = app.engine.features(EncoderInput(content_key(png), lambda: sample_array(W, H)))
        assert cached
        expected = app.engine.model.decode(features, prompt)
        assert np.array_equal(mask, expected.mask.astype(np.uint8) * 255)
        assert prediction["score"] == pytest.approx(expected.score)
        assert isinstance(prediction["score"], float) and prediction["score"] == region["score"]
        assert prediction["model_version"] == call(platform, "GET", "/versions")[1]["versions"][0]
    assert app.engine.stats.encoder_calls - encodes == 1  # the rectangle reused the click's features


@pytest.fixture
def fake_platform(tmp_path: Path) -> Iterator[tuple[Platform, FakeModel, Any]]:
    """The real handler with a FakeModel app in its context (set the way init_context does)."""
    model = FakeModel()
    p = Platform()
    app = make_app(tmp_path, model)

    def use_fake(context: Any) -> Any:
        context.user_data.app = app
        return context

    p._handler_contexts[handler.handler] = use_fake(nuclio_sdk.Context(p._logger, p))
    yield p, model, app


def test_predict_mask_covers_the_click(fake_platform: tuple[Platform, FakeModel, Any]) -> None:
    p, model, _ = fake_platform
    image = data_uri(encode_image(sample_array()))
    status, body = call(p, "POST", "/predict", predict_body(image, [keypoint(46.9, 50.0)]), JSON)
    assert status == 200
    region = body["results"][0]["result"][0]
    mask = rle_mask(region["value"]["rle"], 640, 480)
    assert mask[240, 300] == 255 and mask[10, 10] == 0
    assert model.encode_calls == 1


@pytest.mark.parametrize("form", ["bytes", "str", "dict-with-other-content-type"])
def test_body_as_bytes_or_str_is_accepted(fake_platform: tuple[Platform, FakeModel, Any], form: str) -> None:
    p, _, _ = fake_platform
    body = predict_body(data_uri(encode_image(sample_array())), [keypoint(46.9, 50.0)])
    raw: Any = json.dumps(body)
    headers = {"Content-Type": "text/plain"}
    if form == "bytes":
        raw = raw.encode()
    elif form == "dict-with-other-content-type":
        raw, headers = raw.encode(), {"Content-Type": "application/json; charset=utf-8"}
    ev = nuclio_sdk.Event(
        body=raw, content_type=headers["Content-Type"], headers=headers, method="POST", path="/predict"
    )
    status, reply = check_response(p.call_handler(handler.handler, ev))
    assert status == 200 and len(reply["results"]) == 1


def test_not_found_and_wrong_method_are_json(fake_platform: tuple[Platform, FakeModel, Any]) -> None:
    p, _, _ = fake_platform
    status, body = call(p, "GET", "/nope")
    assert status == 404 and "error" in body
    status, body = call(p, "GET", "/predict")
    assert status == 405 and "GET" in body["error"]
    status, body = call(p, "POST", "/predict", b"{broken", {"Content-Type": "text/plain"})
    assert status == 400 and "JSON" in body["error"]


def test_unhandled_exception_is_a_json_500(fake_platform: tuple[Platform, FakeModel, Any]) -> None:
    p, model, _ = fake_platform

    def boom(*_: Any) -> Any:
        raise RuntimeError("secret internals")

    model.decode = boom  # type: ignore[method-assign]
    body = predict_body(data_uri(encode_image(sample_array())), [keypoint(50, 50)])
    status, reply = call(p, "POST", "/predict", body, JSON)
    assert status == 500 and "secret internals" not in reply["error"]


def test_basic_auth(tmp_path: Path) -> None:
    p = Platform()
    app = make_app(tmp_path, FakeModel(), basic_auth_user="ls", basic_auth_pass="s3cret")
    context = nuclio_sdk.Context(p._logger, p)
    context.user_data.app = app
    p._handler_contexts[handler.handler] = context

    response = p.call_handler(handler.handler, event("GET", "/health"))
    status, body = check_response(response)
    assert status == 401 and "error" in body
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    wrong = base64.b64encode(b"ls:wrong").decode()
    assert call(p, "GET", "/health", headers={"Authorization": f"Basic {wrong}"})[0] == 401
    good = base64.b64encode(b"ls:s3cret").decode()
    assert call(p, "GET", "/health", headers={"Authorization": f"Basic {good}"})[0] == 200
    assert call(p, "POST", "/setup", {}, {**JSON, "Authorization": f"Basic {good}"})[0] == 200
    assert call(p, "POST", "/setup", {}, JSON)[0] == 401
    assert call(p, "GET", "/live") == (200, {"status": "live"})  # liveness stays open


def test_init_context_without_a_checkpoint_logs_one_clear_line_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unittest.mock import MagicMock

    from function.core.checkpoints import CheckpointMissing

    monkeypatch.setenv("MODEL_CHECKPOINT", str(tmp_path / "sam2.1_hiera_tiny.pt"))
    logger = MagicMock()
    context = nuclio_sdk.Context(logger, worker_id=0)
    with pytest.raises(CheckpointMissing):
        handler.init_context(context)
    (line,), _ = logger.error.call_args
    assert "cannot start" in line and "download-checkpoint tiny" in line
