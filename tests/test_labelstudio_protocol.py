"""Every request Label Studio 1.23.2 was recorded sending, replayed on the app (FakeModel).

The task image is served by a fake Label Studio at the path the fixtures name, so the whole
path runs: PAT exchange, authorised download, decode, prompt mapping, RLE rendering.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from function.service.app import App

from .fakes import FakeModel
from .support import (
    FakeLabelStudio,
    call,
    encode_image,
    fake_label_studio,
    fixture,
    keypoint,
    make_app,
    rectangle,
    region_mask,
    sample_array,
)

IMAGE_PATH = "/data/upload/1/4a4247ed-test_image.png"
W, H = 640, 480
REQUIRED_KEYS = {
    "id",
    "from_name",
    "to_name",
    "original_width",
    "original_height",
    "image_rotation",
    "value",
    "score",
    "type",
    "readonly",
}


@pytest.fixture
def ls() -> Iterator[FakeLabelStudio]:
    with fake_label_studio(FakeLabelStudio(files={IMAGE_PATH: encode_image(sample_array())})) as server:
        yield server


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def app(tmp_path: Path, ls: FakeLabelStudio, model: FakeModel) -> App:
    return make_app(tmp_path, model, label_studio_url=ls.url, label_studio_api_key=ls.pat)


def image_fetches(ls: FakeLabelStudio) -> int:
    return sum(1 for method, path, _ in ls.requests if method == "GET" and path.startswith("/data/"))


def body_of(name: str) -> Any:
    return copy.deepcopy(fixture(name)["body"])


def assert_brush_region(region: dict[str, Any]) -> np.ndarray:
    assert set(region) >= REQUIRED_KEYS
    assert region["from_name"] == "tag" and region["to_name"] == "image"
    assert (region["original_width"], region["original_height"], region["image_rotation"]) == (W, H, 0)
    assert region["value"]["format"] == "rle"
    assert region["value"]["brushlabels"] == ["object"]
    assert region["type"] == "brushlabels" and region["readonly"] is False
    assert isinstance(region["score"], float)
    return region_mask(region)


# -- /setup ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "unknown"),
    [
        ("setup_extra_params_object.json", "points_per_side"),
        ("setup_extra_params_string_basic_auth.json", "as"),
    ],
)
def test_recorded_setup_with_unknown_extra_params_is_a_400_naming_the_key(
    app: App, name: str, unknown: str
) -> None:
    reply = call(app, "POST", "/setup", body_of(name))
    assert reply.status == 400
    assert unknown in reply.body["error"] and "extra_params" in reply.body["error"]


@pytest.mark.parametrize(
    "name", ["setup_extra_params_object.json", "setup_extra_params_string_basic_auth.json"]
)
@pytest.mark.parametrize(
    "extra",
    [None, "", {}, "{}", {"return_format": {"type": "BrushLabels"}}, '{"return_format": {"type": "brush"}}'],
)
def test_recorded_setup_with_valid_extra_params(app: App, ls: FakeLabelStudio, name: str, extra: Any) -> None:
    body = body_of(name)
    body["extra_params"] = extra
    reply = call(app, "POST", "/setup", body)
    assert reply.status == 200, reply.body
    assert reply.body == {"model_version": app.labelstudio.version}
    assert ls.requests == []  # /setup does no network and no model work
    assert app.engine.stats.encoder_calls == 0


def test_setup_is_idempotent(app: App) -> None:
    body = body_of("setup_extra_params_object.json")
    body["extra_params"] = {}
    assert [call(app, "POST", "/setup", body).body for _ in range(3)] == [
        {"model_version": app.labelstudio.version}
    ] * 3


# -- /predict, interactive --------------------------------------------------------------------


def predict(app: App, body: Any) -> dict[str, Any]:
    reply = call(app, "POST", "/predict", body)
    assert reply.status == 200, reply.body
    return reply.body


def test_keypoint_fixture(app: App, ls: FakeLabelStudio, model: FakeModel) -> None:
    version = call(
        app, "POST", "/setup", {**body_of("setup_extra_params_object.json"), "extra_params": {}}
    ).body
    body = predict(app, body_of("predict_interactive_keypointlabels.json"))
    (prediction,) = body["results"]
    assert prediction["model_version"] == version["model_version"]
    (region,) = prediction["result"]
    mask = assert_brush_region(region)
    assert mask[240, 300] == 255  # the positive click (46.9 %, 50 %)
    assert mask[48, 64] == 0  # the negative click (10 %, 10 %)
    assert prediction["score"] == region["score"]
    # The PAT was exchanged and the download authorised with the access token.
    assert ls.refreshes == 1
    (get,) = [r for r in ls.requests if r[0] == "GET"]
    assert get[1] == IMAGE_PATH and get[2]["Authorization"].startswith("Bearer ")
    assert model.encode_calls == 1


def test_rectangle_fixture(app: App, model: FakeModel) -> None:
    (prediction,) = predict(app, body_of("predict_interactive_rectanglelabels.json"))["results"]
    mask = assert_brush_region(prediction["result"][0]) > 0
    # Rectangle 30 %, 30 %, 35 % x 40 % -> pixels x 192..416, y 144..336 (FakeModel fills the box).
    assert mask[144:336, 192:416].all()
    assert mask.sum() == (416 - 192) * (336 - 144)


def test_second_click_reuses_the_image(app: App, ls: FakeLabelStudio, model: FakeModel) -> None:
    predict(app, body_of("predict_interactive_keypointlabels.json"))
    predict(app, body_of("predict_interactive_rectanglelabels.json"))
    assert model.encode_calls == 1
    assert image_fetches(ls) == 1


@pytest.mark.parametrize("name", ["predict_no_context_test.json", "predict_no_context_batch_retrieve.json"])
def test_no_context_answers_empty_without_fetching(
    app: App, ls: FakeLabelStudio, model: FakeModel, name: str
) -> None:
    assert predict(app, body_of(name)) == {"results": []}
    assert ls.requests == [] and model.encode_calls == 0


def test_empty_context_result_gives_one_empty_prediction_per_task(app: App, ls: FakeLabelStudio) -> None:
    body = body_of("predict_interactive_keypointlabels.json")
    body["params"]["context"] = {"result": []}
    body["tasks"] = [body["tasks"][0], {**body["tasks"][0], "id": 2}]
    results = predict(app, body)["results"]
    assert len(results) == 2
    assert all(r["result"] == [] and r["model_version"] == app.labelstudio.version for r in results)
    assert image_fetches(ls) == 0


def test_several_tasks_one_prediction_each_in_order(tmp_path: Path, model: FakeModel) -> None:
    images = {f"/data/upload/1/img{i}.png": encode_image(sample_array(320 + 64 * i, 240)) for i in range(3)}
    with fake_label_studio(FakeLabelStudio(files=images)) as fake:
        app = make_app(tmp_path, model, label_studio_url=fake.url, label_studio_api_key=fake.pat)
        body = body_of("predict_interactive_keypointlabels.json")
        body["tasks"] = [{"id": i + 10, "data": {"image": path}} for i, path in enumerate(images)]
        results = predict(app, body)["results"]
    assert [r["result"][0]["original_width"] for r in results] == [320, 384, 448]
    assert model.encode_calls == 3


@pytest.mark.parametrize(
    ("flag", "positive"),
    [(None, True), (True, True), ("true", True), (1, True), (False, False), ("false", False), (0, False)],
)
def test_is_positive_forms(app: App, flag: Any, positive: bool) -> None:
    """A missing is_positive means positive (the stock backend gets this wrong)."""
    body = body_of("predict_interactive_keypointlabels.json")
    region = keypoint(46.9, 50.0, positive=None)
    if flag is not None:
        region["is_positive"] = flag
    anchor = keypoint(10.0, 10.0, positive=True)
    body["params"]["context"]["result"] = [region, anchor]
    (region_out,) = predict(app, body)["results"][0]["result"]
    mask = region_mask(region_out)
    # FakeModel draws around the first positive point: the flagged one if positive, else the anchor.
    assert bool(mask[240, 300] == 255) is positive
    assert bool(mask[48, 64] == 255) is (not positive)


def test_unlabeled_keypoint_and_rectangle_types(app: App) -> None:
    body = body_of("predict_interactive_keypointlabels.json")
    point = keypoint(46.9, 50.0)
    point["type"] = "keypoint"
    del point["value"]["keypointlabels"]
    body["params"]["context"]["result"] = [point]
    mask = assert_brush_region(predict(app, body)["results"][0]["result"][0])
    assert mask[240, 300] == 255

    box = rectangle(30, 30, 35, 40)
    box["type"] = "rectangle"
    del box["value"]["rectanglelabels"]
    body["params"]["context"]["result"] = [box]
    mask = assert_brush_region(predict(app, body)["results"][0]["result"][0])
    assert mask[144:336, 192:416].all()


def test_keypoints_and_rectangle_together(app: App) -> None:
    body = body_of("predict_interactive_rectanglelabels.json")
    body["params"]["context"]["result"].append(keypoint(46.9, 50.0))
    (region,) = predict(app, body)["results"][0]["result"]
    assert region_mask(region)[144:336, 192:416].all()  # FakeModel answers the box


@pytest.mark.parametrize("config", ["", None])
def test_no_label_config_falls_back_to_the_default_interface(app: App, config: Any) -> None:
    body = body_of("predict_interactive_keypointlabels.json")
    body["label_config"] = config
    (region,) = predict(app, body)["results"][0]["result"]
    mask = assert_brush_region(region)
    assert mask[240, 300] == 255


def test_label_config_from_setup_when_predict_has_none(app: App) -> None:
    setup = body_of("setup_extra_params_object.json")
    setup["extra_params"] = {}
    setup["schema"] = setup["schema"].replace('name="tag"', 'name="mask"')
    assert call(app, "POST", "/setup", setup).status == 200
    body = body_of("predict_interactive_keypointlabels.json")
    body["label_config"] = ""
    (region,) = predict(app, body)["results"][0]["result"]
    assert region["from_name"] == "mask"


def test_bad_context_is_a_4xx_json(app: App) -> None:
    body = body_of("predict_interactive_keypointlabels.json")
    body["params"]["context"]["result"][0]["value"]["x"] = "left"
    reply = call(app, "POST", "/predict", body)
    assert reply.status == 422 and "value.x" in reply.body["error"]
    reply = call(app, "POST", "/predict", {"tasks": []})
    assert reply.status == 400


# -- other routes -------------------------------------------------------------------------------


def test_health_fixture(app: App) -> None:
    rec = fixture("health.json")
    reply = call(app, rec["method"], rec["path"], rec["body"], rec["headers"])
    assert reply.status == 200 and reply.body["status"] == "UP" and reply.body["model_class"] == "SAM2"


def test_versions_fixture(app: App) -> None:
    rec = fixture("versions.json")
    reply = call(app, rec["method"], rec["path"], rec["body"], rec["headers"])
    assert reply.status == 200 and reply.body == {"versions": [app.labelstudio.version]}


@pytest.mark.parametrize(
    ("name", "status"), [("webhook_start_training.json", 201), ("webhook_annotation_created.json", 200)]
)
def test_webhook_fixtures(app: App, ls: FakeLabelStudio, name: str, status: int) -> None:
    rec = fixture(name)
    reply = call(app, rec["method"], rec["path"], rec["body"], rec["headers"])
    assert reply.status == status and reply.body["status"] == "ok"
    assert ls.requests == [] and app.engine.stats.encoder_calls == 0


def test_webhook_accepts_any_action(app: App) -> None:
    for body in ({"action": "TASKS_CREATED"}, {"action": "PROJECT_DELETED"}, {}, None):
        assert call(app, "POST", "/webhook", body).status == 200


def test_train_says_not_supported(app: App) -> None:
    reply = call(app, "POST", "/train", json.dumps({"project": 1}))
    assert reply.status == 200 and "not supported" in json.dumps(reply.body)
