"""SageMaker contract: GET /ping (503 while loading, 200 once loaded) and POST /invocations
with actions sam2 and langsam, masks as COCO RLE or polygons, errors as 4xx JSON."""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from function.adapters.sagemaker import coco_rle, rle_counts, rle_string
from function.service.app import App
from function.service.compose import build_app
from function.service.sagemaker_server import SageMakerServer

from .fakes import FakeModel
from .image_host import Route, image_host
from .support import call, data_uri, encode_image, make_settings, running, sample_array

W, H = 160, 120
PNG = encode_image(sample_array(W, H))
B64 = base64.b64encode(PNG).decode()


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """pycocotools' rleFrString + rleDecode, written out for the test."""
    counts: list[int] = []
    text, p = rle["counts"].encode(), 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            c = text[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    h, w = rle["size"]
    flat = np.zeros(h * w, bool)
    pos, value = 0, False
    for n in counts:
        flat[pos : pos + n] = value
        pos, value = pos + n, not value
    return flat.reshape((h, w), order="F")


@pytest.mark.parametrize("seed", range(5))
def test_coco_rle_round_trips(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((37, 53)) > 0.6
    mask[:, :3] = True  # long runs need multi-byte counts
    assert np.array_equal(decode_rle(coco_rle(mask)), mask)
    assert sum(rle_counts(mask)) == mask.size


def test_rle_string_matches_pycocotools_known_value() -> None:
    # A 3x3 mask with the centre pixel set: counts [4, 1, 4] -> "41" + "4" (diff 0 rule from i > 2)
    assert rle_string([4, 1, 4]) == "414"


@pytest.fixture
def app(tmp_path: Path, tiny_detector_dir: Path) -> App:
    settings = make_settings(tmp_path, detector_model=tiny_detector_dir, detector_text_threshold=0.0)
    return build_app(settings, model=FakeModel())


def invoke(app: App, body: Any) -> Any:
    return call(app, "POST", "/invocations", body)


def test_sam2_action_returns_one_mask_with_its_box(app: App) -> None:
    reply = invoke(
        app, {"action": "sam2", "image": B64, "points": [[80, 60]], "labels": [1], "box": [40, 30, 120, 90]}
    )
    assert reply.status == 200, reply.body
    body = reply.body
    assert (body["width"], body["height"]) == (W, H) and len(body["masks"]) == len(body["scores"]) == 1
    mask = decode_rle(body["masks"][0])
    x0, y0, x1, y1 = body["boxes"][0]
    ys, xs = np.nonzero(mask)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)


def test_sam2_accepts_the_seeds_single_point_and_polygons(app: App) -> None:
    reply = invoke(
        app, {"action": "sam2", "image_url": data_uri(PNG), "x": 80, "y": 60, "mask_format": "polygon"}
    )
    assert reply.status == 200, reply.body
    [outlines] = reply.body["masks"]
    assert outlines and all(0 <= x <= W and 0 <= y <= H for outline in outlines for x, y in outline)


def test_langsam_action_returns_boxes_scores_phrases_and_masks_inside_boxes(app: App) -> None:
    reply = invoke(app, {"action": "langsam", "image": B64, "text_prompt": "Car. cat", "box_threshold": 0.0})
    assert reply.status == 200, reply.body
    body = reply.body
    n = len(body["boxes"])
    assert n > 0 and len(body["scores"]) == len(body["phrases"]) == len(body["masks"]) == n
    assert set(body["phrases"]) <= {"car", "cat"}
    for rle, (x0, y0, x1, y1) in zip(body["masks"], body["boxes"], strict=True):
        ys, xs = np.nonzero(decode_rle(rle))
        assert len(xs) and xs.min() >= np.floor(x0) and xs.max() < np.ceil(x1)
        assert ys.min() >= np.floor(y0) and ys.max() < np.ceil(y1)
    strict = invoke(app, {"action": "langsam", "image": B64, "text_prompt": "car. cat", "box_threshold": 1.0})
    assert strict.status == 200 and len(strict.body["boxes"]) < n


def test_return_images_adds_three_pngs(app: App) -> None:
    reply = invoke(
        app,
        {
            "action": "langsam",
            "image": B64,
            "text_prompt": "car",
            "box_threshold": 0.0,
            "return_images": True,
        },
    )
    images = reply.body["images"]
    assert set(images) == {"original", "overlay", "mask_only"}
    for data in images.values():
        assert Image.open(io.BytesIO(base64.b64decode(data))).size == (W, H)


def test_image_urls_are_fetched_with_the_label_studio_safety_rules(
    tmp_path: Path, tiny_detector_dir: Path
) -> None:
    with image_host({"/a.png": Route(PNG)}) as host:
        base = host.url
        allowed = build_app(make_settings(tmp_path, allowed_image_hosts=("127.0.0.1",)), model=FakeModel())
        ok = invoke(allowed, {"action": "sam2", "image": f"{base}/a.png", "x": 10, "y": 10})
        assert ok.status == 200, ok.body
        denied = build_app(
            make_settings(tmp_path, allowed_image_hosts=("images.example.com",)), model=FakeModel()
        )
        refused = invoke(denied, {"action": "sam2", "image": f"{base}/a.png", "x": 10, "y": 10})
        assert 400 <= refused.status < 500 and "image" in refused.body["error"]


@pytest.mark.parametrize(
    "body,status,field",
    [
        ({"action": "segment", "image": B64}, 400, "action"),
        ({"image": B64}, 400, "action"),
        ({"action": "sam2"}, 400, "image"),
        ({"action": "sam2", "image": "!!notbase64!!", "x": 1, "y": 1}, 400, "image"),
        ({"action": "sam2", "image": B64, "points": [[1, "a"]]}, 422, "points[0][1]"),
        ({"action": "sam2", "image": B64, "points": [[1, 2]], "labels": [2]}, 422, "labels"),
        ({"action": "sam2", "image": B64}, 422, "points/box"),
        ({"action": "langsam", "image": B64, "text_prompt": ""}, 422, "text_prompt"),
        ({"action": "langsam", "image": B64}, 422, "text_prompt"),
        (
            {"action": "langsam", "image": B64, "text_prompt": ". ".join(f"red car {i}" for i in range(20))},
            422,
            "text_prompt",
        ),
        ({"action": "langsam", "image": B64, "text_prompt": "car", "box_threshold": 3}, 422, "box_threshold"),
        ({"action": "sam2", "image": B64, "x": 1, "y": 1, "mask_format": "png"}, 400, "mask_format"),
        ([1, 2], 400, "object"),
    ],
)
def test_bad_invocations_are_4xx_json_naming_the_field(app: App, body: Any, status: int, field: str) -> None:
    reply = invoke(app, body)
    assert reply.status == status and field in reply.body["error"], reply.body
    assert invoke(app, {"action": "sam2", "image": B64, "x": 5, "y": 5}).status == 200


def test_langsam_without_a_detector_is_a_422(tmp_path: Path) -> None:
    app = build_app(make_settings(tmp_path), model=FakeModel())
    reply = invoke(app, {"action": "langsam", "image": B64, "text_prompt": "car"})
    assert reply.status == 422 and "DETECTOR_MODEL" in reply.body["error"]


def test_the_server_answers_503_until_the_models_are_loaded(tmp_path: Path, tiny_detector_dir: Path) -> None:
    server = SageMakerServer(("127.0.0.1", 0))
    release = threading.Event()

    def build() -> App:
        release.wait(10)
        return build_app(make_settings(tmp_path, detector_model=tiny_detector_dir), model=FakeModel())

    with running(server) as url:
        loading = server.load_in_background(build)
        assert requests.get(f"{url}/ping", timeout=5).status_code == 503
        early = requests.post(f"{url}/invocations", json={"action": "sam2"}, timeout=5)
        assert early.status_code == 503 and "loading" in early.json()["error"]
        release.set()
        loading.join(30)
        assert requests.get(f"{url}/ping", timeout=5).status_code == 200
        body = json.dumps({"action": "langsam", "image": B64, "text_prompt": "car", "box_threshold": 0.0})
        reply = requests.post(
            f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=30
        )
        assert reply.status_code == 200 and reply.json()["phrases"]
        bad = requests.post(f"{url}/invocations", json={"action": "nope"}, timeout=5)
        assert bad.status_code == 400 and "action" in bad.json()["error"]


def test_a_failed_load_answers_500_with_the_reason(tmp_path: Path) -> None:
    server = SageMakerServer(("127.0.0.1", 0))

    def build() -> App:
        raise RuntimeError("no checkpoint at /opt/ml/model")

    with running(server) as url:
        server.load_in_background(build).join(5)
        reply = requests.get(f"{url}/ping", timeout=5)
        assert reply.status_code == 500 and "/opt/ml/model" in reply.json()["error"]


def test_the_image_answers_docker_run_serve() -> None:
    """SageMaker runs `docker run <image> serve`: a `serve` on PATH starts the SageMaker server."""
    import os

    from .dockerfile_stages import parse_dockerfile

    root = Path(__file__).resolve().parent.parent
    final = parse_dockerfile(root).final
    [copy] = [v for v in final.values("COPY") if "deploy/sagemaker/serve" in v]
    assert copy.split()[-1] == "/usr/local/bin/serve" and "--chmod=0755" in copy
    script = root / "deploy" / "sagemaker" / "serve"
    assert os.access(script, os.X_OK) and "python -m function serve --sagemaker" in script.read_text()
    assert "!deploy/sagemaker/serve" in (root / ".dockerignore").read_text().splitlines()
