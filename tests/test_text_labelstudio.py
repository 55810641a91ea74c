"""Label Studio text prompts, interactive: a TextArea result -> detector -> SAM2 per box ->
labelled regions. SAM2 is the fake (its mask fills the prompt box); the detector is a tiny
random Grounding DINO loaded through DETECTOR_MODEL like production."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from function.service.app import App
from function.service.compose import build_app

from .fakes import FakeModel
from .support import call, data_uri, encode_image, keypoint, make_settings, sample_array
from .text_support import number, text_body, text_config, textarea

W, H = 160, 120
IMAGE = data_uri(encode_image(sample_array(W, H)))
LOOSE = {"text_prompt": {"box_threshold": 0.0, "text_threshold": 0.0}}


def make_text_app(
    tmp_path: Path, detector_dir: Path | None, model: FakeModel | None = None, **kw: Any
) -> App:
    settings = make_settings(tmp_path, detector_model=detector_dir, **kw)
    return build_app(settings, model=model or FakeModel())


@pytest.fixture
def app(tmp_path: Path, tiny_detector_dir: Path) -> App:
    return make_text_app(tmp_path, tiny_detector_dir, default_extra_params=LOOSE)


def predict(app: App, regions: list[dict[str, Any]] | None, config: str, tasks: int = 1) -> Any:
    return call(app, "POST", "/predict", text_body(IMAGE, regions, config, tasks))


def test_a_text_prompt_returns_one_labelled_region_per_detection(app: App) -> None:
    reply = predict(app, [textarea("dog", "car")], text_config("BrushLabels"))
    assert reply.status == 200, reply.body
    [result] = reply.body["results"]
    regions = result["result"]
    brushes = [r for r in regions if r["type"] == "brushlabels"]
    boxes = [r for r in regions if r["type"] == "rectanglelabels"]
    assert brushes and len(brushes) == len(boxes)  # a rectangle per detection: the config has one
    for r in regions:
        assert r["to_name"] == "image" and (r["original_width"], r["original_height"]) == (W, H)
        assert r["value"][r["type"]] == ["Car"]  # phrase "car" -> label "Car" (case-insensitive)
        assert 0.0 <= r["score"] <= 1.0
    for b in boxes:
        v = b["value"]
        assert (
            v["x"] >= 0
            and v["y"] >= 0
            and v["x"] + v["width"] <= 100 + 1e-9
            and v["y"] + v["height"] <= 100 + 1e-9
        )
    assert result["model_version"] and result["score"] == max(r["score"] for r in regions)


def test_each_mask_lies_inside_its_detection_box(app: App) -> None:
    reply = predict(app, [textarea("car")], text_config("BrushLabels"))
    regions = reply.body["results"][0]["result"]
    brushes = [r for r in regions if r["type"] == "brushlabels"]
    boxes = [r for r in regions if r["type"] == "rectanglelabels"]
    for brush, box in zip(brushes, boxes, strict=True):
        mask = decode_rle(brush["value"]["rle"]).reshape(H, W, 4)[:, :, 3] > 0
        ys, xs = np.nonzero(mask)
        v = box["value"]
        assert xs.min() >= np.floor(v["x"] * W / 100) and xs.max() < np.ceil((v["x"] + v["width"]) * W / 100)
        assert ys.min() >= np.floor(v["y"] * H / 100) and ys.max() < np.ceil((v["y"] + v["height"]) * H / 100)


def test_unmatched_phrases_take_the_first_label(tmp_path: Path, tiny_detector_dir: Path) -> None:
    polygons = {**LOOSE, "return_format": {"type": "PolygonLabels"}}
    app = make_text_app(tmp_path, tiny_detector_dir, default_extra_params=polygons)
    regions = predict(app, [textarea("red tree")], text_config("PolygonLabels")).body["results"][0]["result"]
    assert regions and {r["value"][r["type"]][0] for r in regions} == {"Car"}
    assert {r["type"] for r in regions} <= {"polygonlabels", "rectanglelabels"}


def test_rectangle_projects_get_one_rectangle_per_detection(app: App, tmp_path: Path) -> None:
    config = text_config("RectangleLabels", rectangles=True, labels=("cat", "car"))
    call(
        app,
        "POST",
        "/setup",
        {
            "project": "7.1795445671",
            "schema": config,
            "extra_params": {**LOOSE, "return_format": {"type": "RectangleLabels"}},
        },
    )
    regions = predict(app, [textarea("car. cat")], config).body["results"][0]["result"]
    assert regions and all(r["type"] == "rectanglelabels" for r in regions)
    assert {r["value"]["rectanglelabels"][0] for r in regions} <= {"car", "cat"}
    assert len({r["id"] for r in regions}) == len(regions)


def test_one_encoder_pass_per_image_and_a_later_click_runs_none(
    tmp_path: Path, tiny_detector_dir: Path
) -> None:
    model = FakeModel()
    app = make_text_app(tmp_path, tiny_detector_dir, model, default_extra_params=LOOSE)
    config = text_config("BrushLabels")
    regions = predict(app, [textarea("car")], config).body["results"][0]["result"]
    assert len(regions) >= 2 and model.encode_calls == 1
    assert model.decode_calls == len(regions) // 2  # one SAM2 decode per detection box
    reply = predict(app, [keypoint(40, 50, w=W, h=H)], config)
    assert reply.status == 200 and reply.body["results"][0]["result"]
    assert model.encode_calls == 1  # the click reused the text prompt's features
    predict(app, [textarea("car")], config)
    assert model.encode_calls == 1 and app.metrics()["detector_calls"] == 1  # detections remembered


def test_number_controls_set_the_box_threshold(app: App) -> None:
    config = text_config("BrushLabels")
    loose = predict(app, [textarea("car"), number("box_threshold", 0.0)], config).body["results"][0]["result"]
    strict = predict(app, [textarea("car"), number("box_threshold", 1.0)], config).body["results"][0][
        "result"
    ]
    assert loose and strict == []


def test_a_click_after_text_in_the_same_context_is_a_click(app: App) -> None:
    reply = predict(app, [textarea("car"), keypoint(40, 50, w=W, h=H)], text_config("BrushLabels"))
    [region] = reply.body["results"][0]["result"]
    assert region["type"] == "brushlabels"


@pytest.mark.parametrize(
    "regions,field",
    [
        ([textarea("  ")], "context.result[0].value.text"),
        ([textarea(". ".join(f"red car {i}" for i in range(20)))], "context.result[0].value.text"),
        ([textarea("car"), number("box_threshold", 1.5)], "box_threshold"),
        ([textarea("car", from_name="other")], "context.result[0].from_name"),
        ([{**textarea("car"), "value": {"text": []}}], "context.result[0].value.text"),
    ],
)
def test_bad_text_input_is_a_422_naming_the_field(
    app: App, regions: list[dict[str, Any]], field: str
) -> None:
    reply = predict(app, regions, text_config("BrushLabels"))
    assert reply.status == 422 and field in reply.body["error"], reply.body
    assert predict(app, [textarea("car")], text_config("BrushLabels")).status == 200  # still serving


def test_a_config_without_textarea_refuses_text(app: App) -> None:
    config = (
        '<View><Image name="image" value="$image"/>'
        '<BrushLabels name="m" toName="image"><Label value="a"/></BrushLabels></View>'
    )
    reply = predict(app, [textarea("car")], config)
    assert reply.status == 422 and "TextArea" in reply.body["error"]


def test_without_a_detector_text_answers_422_saying_how_to_enable(tmp_path: Path) -> None:
    app = make_text_app(tmp_path, None)
    reply = predict(app, [textarea("car")], text_config("BrushLabels"))
    assert reply.status == 422 and "DETECTOR_MODEL" in reply.body["error"]
    assert "download-detector" in reply.body["error"]
    assert predict(app, [keypoint(40, 50, w=W, h=H)], text_config("BrushLabels")).status == 200


def test_project_thresholds_outside_zero_one_are_refused_at_setup(app: App) -> None:
    reply = call(
        app, "POST", "/setup", {"project": "7.1", "extra_params": {"text_prompt": {"box_threshold": 2}}}
    )
    assert reply.status == 400 and "extra_params.text_prompt.box_threshold" in reply.body["error"]
    reply = call(
        app, "POST", "/setup", {"project": "7.1", "extra_params": {"text_prompt": {"default": " . "}}}
    )
    assert reply.status == 400 and "extra_params.text_prompt.default" in reply.body["error"]


@pytest.mark.sam2
def test_real_sam2_masks_stay_inside_their_boxes_with_one_encode(
    tmp_path: Path, tiny_detector_dir: Path, sam2_model: Any
) -> None:
    settings = make_settings(tmp_path, detector_model=tiny_detector_dir, default_extra_params=LOOSE)
    app = build_app(settings, model=sam2_model)
    assert app.text is not None
    from function.core.detector import TextPrompt, Thresholds
    from function.core.images import LoadedImage

    image = LoadedImage.from_bytes(encode_image(sample_array(W, H)), 10**8)
    segments = app.text.segment(image, TextPrompt.parse("car. cat"), Thresholds(0.0, 0.0))
    assert segments and app.engine.stats.encoder_calls == 1
    assert app.engine.stats.decoder_calls == len(segments)
    for seg in segments:
        assert seg.mask.shape == (H, W)
        ys, xs = np.nonzero(seg.mask)
        if len(xs):
            assert xs.min() >= np.floor(seg.box.x0) and xs.max() < np.ceil(seg.box.x1)
            assert ys.min() >= np.floor(seg.box.y0) and ys.max() < np.ceil(seg.box.y1)
