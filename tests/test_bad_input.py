"""Bad input gets a 4xx JSON `{"error": ...}` with a status chosen per case, and the worker
keeps serving: after every failure the same app answers a valid click with a correct mask.

Statuses (docs/reliability.md): 400 malformed request, 413 too large, 422 well-formed but
unusable (not an image, invalid prompt), 502/504 upstream failed/timed out.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from function.service.app import App

from .fakes import FakeModel
from .image_host import Route, image_host
from .reliability_support import SMALL_URI, assert_json_error, assert_still_serves, predicted_mask
from .support import (
    call,
    data_uri,
    encode_image,
    keypoint,
    make_app,
    predict_body,
    rectangle,
    sample_array,
)


@pytest.fixture
def app(tmp_path: Path) -> App:
    return make_app(tmp_path, FakeModel(radius=5), download_timeout_s=0.5, connect_timeout_s=0.5)


def interactive(regions: list[dict[str, Any]], data: Any = None) -> dict[str, Any]:
    body = predict_body(SMALL_URI, regions)
    if data is not None:
        body["tasks"][0]["data"] = data
    return body


# -- malformed requests: 400 ---------------------------------------------------------------

MALFORMED: dict[str, Any] = {
    "not JSON": b"{tasks: [",
    "not UTF-8": b"\xff\xfe{\x00",
    "JSON string": b'"tasks"',
    "JSON number": b"42",
    "JSON list": [{"tasks": []}],
    "no tasks": {"params": {"context": None}},
    "tasks null": {"tasks": None},
    "tasks a string": {"tasks": "1"},
    "tasks an object": {"tasks": {"id": 1}},
    "tasks empty": {"tasks": []},
    "task a number": {"tasks": [1]},
    "params a string": {"tasks": [{"id": 1, "data": {"image": SMALL_URI}}], "params": "x"},
    "context a list": {"tasks": [{"id": 1, "data": {"image": SMALL_URI}}], "params": {"context": [1]}},
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_predict_is_400_and_the_worker_serves_on(app: App, body: Any) -> None:
    assert_json_error(call(app, "POST", "/predict", body), 400)
    assert_still_serves(app)


@pytest.mark.parametrize("route", ["/setup", "/predict", "/"])
def test_malformed_json_on_every_post_route_is_400(app: App, route: str) -> None:
    assert_json_error(call(app, "POST", route, b'{"a": 1,,}'), 400)
    assert_json_error(call(app, "POST", route, ["not", "an", "object"]), 400)
    assert_still_serves(app)


def test_setup_with_wrong_types_is_400(app: App) -> None:
    assert_json_error(call(app, "POST", "/setup", {"extra_params": [1, 2]}), 400)
    assert_json_error(call(app, "POST", "/setup", {"extra_params": "{not json"}), 400)
    assert_json_error(call(app, "POST", "/setup", {"extra_params": {"return_format": 7}}), 400)


# -- tasks without a usable image: 422 -----------------------------------------------------

NO_IMAGE: dict[str, Any] = {
    "data missing": {},
    "data a list": ["image"],
    "no image key": {"text": "a cat", "other": "x"},
    "image a number": {"image": 5},
    "image empty": {"image": "  "},
    "unsupported scheme": {"image": "ftp://example.org/a.png"},
}


@pytest.mark.parametrize("data", NO_IMAGE.values(), ids=NO_IMAGE.keys())
def test_task_without_a_usable_image_is_422(app: App, data: Any) -> None:
    body = interactive([keypoint(50, 50)])
    if data == {}:
        del body["tasks"][0]["data"]
    else:
        body["tasks"][0]["data"] = data
    assert_json_error(call(app, "POST", "/predict", body), 422)
    assert_still_serves(app)


def test_label_studio_path_without_label_studio_url_is_422(app: App) -> None:
    error = assert_json_error(
        call(app, "POST", "/predict", interactive([keypoint(50, 50)], {"image": "/data/upload/1/a.png"})),
        422,
    )
    assert "LABEL_STUDIO_URL" in error


# -- image bytes that are not a usable image -----------------------------------------------


def _noise(fmt: str) -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    return encode_image(noise, fmt)


JPEG, PNG = _noise("JPEG"), _noise("PNG")


BAD_BYTES: dict[str, tuple[bytes, int]] = {
    "zero bytes": (b"", 422),
    "text": (b"hello, not an image", 422),
    "truncated JPEG (half)": (JPEG[: len(JPEG) // 2], 422),
    "truncated JPEG (header only)": (JPEG[:300], 422),
    "truncated PNG": (PNG[: len(PNG) // 2], 422),
}


@pytest.mark.parametrize(("data", "status"), BAD_BYTES.values(), ids=BAD_BYTES.keys())
def test_non_image_data_uri_is_answered_and_the_worker_serves_on(app: App, data: bytes, status: int) -> None:
    body = interactive([keypoint(50, 50)], {"image": data_uri(data)})
    assert_json_error(call(app, "POST", "/predict", body), status)
    assert_still_serves(app)


def test_bad_base64_in_a_data_uri_is_400(app: App) -> None:
    body = interactive([keypoint(50, 50)], {"image": "data:image/png;base64,@@not*base64@@"})
    assert "base64" in assert_json_error(call(app, "POST", "/predict", body), 400)
    assert_still_serves(app)


def test_data_uri_base64_with_line_breaks_still_decodes(app: App) -> None:
    """Line-wrapped base64 (MIME style) is valid input, not a decoding error."""
    payload = base64.encodebytes(encode_image(sample_array(64, 48))).decode()
    mask = predicted_mask(
        call(
            app,
            "POST",
            "/predict",
            interactive([keypoint(50, 50)], {"image": f"data:image/png;base64,{payload}"}),
        )
    )
    assert mask[24, 32]


def test_decompression_bomb_is_413_before_decoding(tmp_path: Path) -> None:
    model = FakeModel()
    app = make_app(tmp_path, model, max_image_pixels=10_000)
    # 2000 x 2000 of one colour: a few kB of PNG, 12 MB of pixels.
    bomb = encode_image(np.zeros((2000, 2000, 3), np.uint8))
    assert len(bomb) < 50_000
    error = assert_json_error(
        call(app, "POST", "/predict", interactive([keypoint(50, 50)], {"image": data_uri(bomb)})), 413
    )
    assert "pixel" in error
    assert model.encode_calls == 0
    assert_still_serves(app)


# -- image URLs ------------------------------------------------------------------------------

URL_FAULTS: dict[str, tuple[Route, int]] = {
    "404": (Route(b"<html>gone</html>", 404, "text/html"), 422),
    "410 JSON": (Route(b'{"detail":"gone"}', 410, "application/json"), 422),
    "HTML page with 200": (Route(b"<!doctype html><html>login</html>", 200, "text/html; charset=utf-8"), 422),
    "zero bytes": (Route(b"", 200), 422),
    "truncated JPEG": (Route(JPEG[:5000], 200, "image/jpeg"), 422),
    "500": (Route(b"oops", 500, "text/plain"), 502),
    "headers too slow": (Route(encode_image(sample_array(64, 48)), delay_s=5.0), 504),
    "body trickles": (Route(encode_image(sample_array(64, 48)), trickle_s=0.02), 504),
}


@pytest.mark.parametrize(("route", "status"), URL_FAULTS.values(), ids=URL_FAULTS.keys())
def test_image_url_faults_get_their_status(app: App, route: Route, status: int) -> None:
    with image_host({"/img": route}) as host:
        body = interactive([keypoint(50, 50)], {"image": f"{host.url}/img"})
        error = assert_json_error(call(app, "POST", "/predict", body), status)
        if status >= 500:
            assert "127.0.0.1" in error  # says which upstream failed
    assert_still_serves(app)


def test_a_failed_download_is_not_cached(app: App) -> None:
    """A host that failed once and recovered is asked again, not answered from a cache."""
    png = encode_image(sample_array(64, 48))
    with image_host({"/img": Route(b"busy", 503, "text/plain")}) as host:
        body = interactive([keypoint(50, 50)], {"image": f"{host.url}/img"})
        assert_json_error(call(app, "POST", "/predict", body), 502)
        host.routes["/img"] = Route(png)
        assert predicted_mask(call(app, "POST", "/predict", body))[24, 32]


# -- prompts: 422 ------------------------------------------------------------------------------

BAD_PROMPTS: dict[str, list[dict[str, Any]]] = {
    "point right of the image": [keypoint(150, 50)],
    "point below the image": [keypoint(50, 110)],
    "negative coordinates": [keypoint(-20, 50)],
    "huge coordinates": [keypoint(1e308, 1e308)],
    "box outside": [rectangle(120, 120, 10, 10)],
    "zero-size rectangle": [rectangle(10, 10, 0, 0)],
    "zero-width rectangle": [rectangle(10, 10, 0, 30)],
    "thousands of points": [keypoint(10 + (i % 80), 10 + (i // 80) % 80) for i in range(5000)],
    "unknown control type": [{"type": "polygonlabels", "value": {"points": [[1, 2]]}, "to_name": "image"}],
    "no type": [{"value": {"x": 1, "y": 2}}],
    "x a string": [{"type": "keypointlabels", "value": {"x": "50", "y": 50}}],
    "x a bool": [{"type": "keypointlabels", "value": {"x": True, "y": 50}}],
    "value a list": [{"type": "keypointlabels", "value": [50, 50]}],
    "region a string": ["keypoint"],
    "is_positive nonsense": [{**keypoint(50, 50), "is_positive": "maybe"}],
    "rotation a string": [
        {**rectangle(10, 10, 20, 20), "value": {**rectangle(10, 10, 20, 20)["value"], "rotation": "x"}}
    ],
    "original_width a string on a rotated box": [
        {
            **rectangle(10, 10, 20, 20),
            "original_width": "wide",
            "value": {**rectangle(10, 10, 20, 20)["value"], "rotation": 30},
        }
    ],
}


@pytest.mark.parametrize("regions", BAD_PROMPTS.values(), ids=BAD_PROMPTS.keys())
def test_invalid_prompt_is_422_and_the_worker_serves_on(app: App, regions: list[dict[str, Any]]) -> None:
    assert_json_error(call(app, "POST", "/predict", interactive(regions)), 422)
    assert_still_serves(app)


def test_context_result_not_a_list_is_422(app: App) -> None:
    body = interactive([])
    body["params"]["context"] = {"result": {"type": "keypointlabels"}}
    assert_json_error(call(app, "POST", "/predict", body), 422)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_tokens_are_422(app: App, token: str) -> None:
    """Strict JSON cannot carry NaN, but Python's parser (and so Nuclio's) accepts the bare
    tokens. They parse, then are refused as a prompt: 422, naming the field."""
    text = json.dumps(interactive([keypoint(50, 50)])).replace('"x": 50', f'"x": {token}')
    assert token in text
    error = assert_json_error(call(app, "POST", "/predict", text.encode()), 422)
    assert "value.x" in error and "finite" in error
    assert_still_serves(app)


def test_points_on_the_border_are_clipped_not_refused(app: App) -> None:
    """Clicks on the very edge arrive as 100 % (x = W): they are inside the tolerance."""
    mask = predicted_mask(call(app, "POST", "/predict", interactive([keypoint(100, 100)])))
    assert mask[47, 63]


def test_many_points_under_the_limit_are_served(tmp_path: Path) -> None:
    app = make_app(tmp_path, FakeModel(radius=3), max_prompt_points=5000)
    regions = [keypoint(50, 50)] + [
        keypoint(1 + i % 90, 1 + (i // 90) % 90, positive=False) for i in range(4000)
    ]
    mask = predicted_mask(call(app, "POST", "/predict", interactive(regions)))
    assert mask[24, 32]


def test_only_negative_points_give_an_empty_prediction_not_an_error(app: App) -> None:
    reply = call(app, "POST", "/predict", interactive([keypoint(50, 50, positive=False)]))
    assert reply.status == 200
    assert json.loads(reply.text)["results"][0]["result"] == []


# -- unknown routes and methods --------------------------------------------------------------


def test_unknown_route_and_method_are_json_404_and_405(app: App) -> None:
    assert_json_error(call(app, "GET", "/admin/../../etc/passwd"), 404)
    assert_json_error(call(app, "DELETE", "/predict"), 405)
    assert_json_error(call(app, "BREW", "/health"), 405)
    assert_still_serves(app)


# -- request body size on the local server: 413 ----------------------------------------------


def test_body_over_the_limit_is_413_json_on_the_local_server(tmp_path: Path) -> None:
    from .test_concurrency import running_server

    app = make_app(tmp_path, FakeModel(radius=5))
    with running_server(app, max_body_bytes=4096) as url:
        big = json.dumps(interactive([keypoint(50, 50)], {"image": data_uri(b"x" * 8000)})).encode()
        request = urllib.request.Request(
            f"{url}/predict", big, {"Content-Type": "application/json"}, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 413
        assert "error" in json.loads(caught.value.read())
        # The next (small) request is served.
        small = json.dumps(interactive([keypoint(50, 50)])).encode()
        request = urllib.request.Request(
            f"{url}/predict", small, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
            assert json.loads(resp.read())["results"][0]["result"]


# -- CVAT mode (POST / with {"image": base64}): input validation ---------------------------

CVAT_BAD: dict[str, Any] = {
    "invalid base64": {"image": "@@@###", "pos_points": [[1, 1]], "neg_points": []},
    "base64 of text": {
        "image": base64.b64encode(b"plain text").decode(),
        "pos_points": [[1, 1]],
        "neg_points": [],
    },
    "image a number": {"image": 12, "pos_points": [[1, 1]], "neg_points": []},
    "empty image": {"image": "", "pos_points": [[1, 1]], "neg_points": []},
}


@pytest.mark.parametrize("body", CVAT_BAD.values(), ids=CVAT_BAD.keys())
def test_cvat_input_validation_bad_image_is_4xx_json(app: App, body: dict[str, Any]) -> None:
    assert_json_error(call(app, "POST", "/", body), 400, 415, 422)
    assert_still_serves(app)


def test_cvat_input_validation_bad_points_are_4xx_json(app: App) -> None:
    image = base64.b64encode(encode_image(sample_array(64, 48))).decode()
    for points in ("1,2", [[1]], [["a", "b"]], [[float("nan"), 1]], [[1e9, 1e9]]):
        body = {"image": image, "pos_points": points, "neg_points": []}
        assert_json_error(call(app, "POST", "/", body), 400, 422)
    assert_still_serves(app)


def test_post_root_without_image_or_tasks_is_400(app: App) -> None:
    assert_json_error(call(app, "POST", "/", {"pos_points": [[1, 2]]}), 400)
    assert_still_serves(app)
