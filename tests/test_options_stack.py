"""Per-project options through the whole stack: /setup with extra_params, then /predict.

With the deterministic FakeModel (a disc of `radius` around the first positive point in the
pixels the model sees, or the filled box) the mask that comes back in original coordinates
must be the disc or box drawn straight on the original image: exactly for subpatches (whole
pixel offsets), up to a pixel of rounding at the edge for resized frames.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from function.core.masks import dilate
from function.core.model import Segmentation
from function.core.prompts import POSITIVE, Prompt
from function.service.app import App

from .fakes import FakeModel
from .support import (
    call,
    data_uri,
    encode_image,
    keypoint,
    make_app,
    predict_body,
    rectangle,
    region_mask,
)

TYPES = ("BrushLabels", "Brush", "PolygonLabels", "Polygon", "RectangleLabels", "Rectangle")
PROJECT = "1.1795445671"


def label_config(output: str) -> str:
    out = (
        f'<{output} name="out" toName="image"><Label value="object"/></{output}>'
        if output.endswith("Labels")
        else f'<{output} name="out" toName="image"/>'
    )
    return (
        f'<View><Image name="image" value="$image"/>{out}'
        '<KeyPointLabels name="kp" toName="image" smart="true"><Label value="object" smart="true"/>'
        "</KeyPointLabels>"
        '<RectangleLabels name="box" toName="image" smart="true"><Label value="object"/></RectangleLabels>'
        "</View>"
    )


@functools.lru_cache(maxsize=8)
def image_uri(width: int, height: int) -> str:
    """A PNG whose pixels encode their own position, so crops can be checked exactly."""
    return data_uri(encode_image(image_array(width, height)))


@functools.lru_cache(maxsize=8)
def image_array(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return np.stack([xx % 251, yy % 241, (xx // 251 + 7 * (yy // 241)) % 256], axis=-1).astype(np.uint8)


def disc(width: int, height: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.ogrid[:height, :width]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2


def click(x: float, y: float, width: int, height: int, positive: bool = True) -> dict[str, Any]:
    return keypoint(x * 100 / width, y * 100 / height, positive, width, height)


def box_region(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> dict[str, Any]:
    r = rectangle(x0 * 100 / width, y0 * 100 / height, (x1 - x0) * 100 / width, (y1 - y0) * 100 / height)
    r["original_width"], r["original_height"] = width, height
    return r


def setup(app: App, params: Any, output: str = "BrushLabels") -> None:
    reply = call(
        app, "POST", "/setup", {"project": PROJECT, "schema": label_config(output), "extra_params": params}
    )
    assert reply.status == 200, reply.body


def predict(
    app: App,
    size: tuple[int, int],
    regions: list[dict[str, Any]],
    output: str = "BrushLabels",
    status: int = 200,
) -> Any:
    body = predict_body(image_uri(*size), regions, label_config(output))
    reply = call(app, "POST", "/predict", body)
    assert reply.status == status, reply.body
    return reply.body["results"][0]["result"] if status == 200 else reply.body["error"]


def brush_mask(region: dict[str, Any]) -> np.ndarray:
    return region_mask(region) > 0


def near_edge(mask: np.ndarray, expected: np.ndarray, band: int) -> bool:
    """Every differing pixel lies within `band` pixels of the expected outline."""
    edge = cv2.morphologyEx(expected.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    zone = cv2.dilate(edge, np.ones((2 * band + 1, 2 * band + 1), np.uint8)).astype(bool)
    return not ((mask ^ expected) & ~zone).any()


@pytest.fixture
def model() -> FakeModel:
    return FakeModel(radius=20)


@pytest.fixture
def app(tmp_path: Path, model: FakeModel) -> App:
    return make_app(tmp_path, model)


# -- every return format -------------------------------------------------------------------


@pytest.mark.parametrize("output", TYPES)
def test_every_return_format(app: App, output: str) -> None:
    W, H = 400, 300
    setup(app, {"return_format": {"type": output.lower()}}, output)
    (region,) = predict(app, (W, H), [click(150, 120, W, H)], output)
    assert region["from_name"] == "out" and region["to_name"] == "image"
    assert region["type"] == output.lower()
    assert (region["original_width"], region["original_height"]) == (W, H)
    labelled = output.endswith("Labels")
    assert (
        (region["value"].get(output.lower()) == ["object"])
        if labelled
        else output.lower() not in region["value"]
    )
    expected = disc(W, H, 150, 120, 20)
    value = region["value"]
    if output.startswith("Brush"):
        assert np.array_equal(brush_mask(region), expected)
    elif output.startswith("Rectangle"):
        assert value["x"] * W / 100 == pytest.approx(130) and value["width"] * W / 100 == pytest.approx(41)
        assert value["y"] * H / 100 == pytest.approx(100) and value["height"] * H / 100 == pytest.approx(41)
    else:
        points = np.array(value["points"]) * [W / 100, H / 100]
        drawn = np.zeros((H, W), np.uint8)
        cv2.fillPoly(drawn, [np.round(points - 0.5).astype(np.int32)], 1)
        assert (drawn.astype(bool) & expected).sum() / (drawn.astype(bool) | expected).sum() > 0.9
        assert value["closed"] is True and 3 <= len(points) <= 100


def test_missing_output_tag_is_a_422_naming_it(app: App) -> None:
    setup(app, {"return_format": {"type": "PolygonLabels"}}, "BrushLabels")
    error = predict(app, (400, 300), [click(150, 120, 400, 300)], "BrushLabels", status=422)
    assert "<PolygonLabels>" in error


def test_brushlabels_falls_back_to_a_brush_control(app: App) -> None:
    setup(app, {}, "Brush")
    (region,) = predict(app, (400, 300), [click(150, 120, 400, 300)], "Brush")
    assert region["type"] == "brush" and "brushlabels" not in region["value"]


# -- subpatching ---------------------------------------------------------------------------


def test_subpatch_click_round_trips_pixel_for_pixel(app: App, model: FakeModel) -> None:
    W, H = 2000, 1500
    setup(app, {"subpatching": {"patch_size": 512}})
    (region,) = predict(app, (W, H), [click(1500, 300, W, H)])
    assert np.array_equal(brush_mask(region), disc(W, H, 1500, 300, 20))
    # The encoder saw the 512 x 512 window centred on the click: x 1244-1755, y 44-555.
    assert np.array_equal(model.encoded_images[-1], image_array(W, H)[44:556, 1244:1756])


def test_subpatch_box_round_trips_pixel_for_pixel(app: App, model: FakeModel) -> None:
    W, H = 2000, 1500
    setup(app, {"subpatching": {"patch-size": [600, 400]}})
    (region,) = predict(app, (W, H), [box_region(200, 300, 500, 450, W, H)])
    expected = np.zeros((H, W), bool)
    expected[300:450, 200:500] = True
    assert np.array_equal(brush_mask(region), expected)
    assert model.encoded_images[-1].shape == (400, 600, 3)


def test_padding_mode_pads_past_the_edge_with_the_fill(app: App, model: FakeModel) -> None:
    W, H = 2000, 1500
    setup(app, {"subpatching": {"patch_size": 512, "mode": "padding", "padding_fill": "#ff0000"}})
    (region,) = predict(app, (W, H), [click(10, 10, W, H)])
    assert np.array_equal(brush_mask(region), disc(W, H, 10, 10, 20))
    seen = model.encoded_images[-1]  # window x0 = y0 = 10 - 256 = -246
    assert (seen[:246] == (255, 0, 0)).all() and (seen[:, :246] == (255, 0, 0)).all()
    assert np.array_equal(seen[246:, 246:], image_array(W, H)[:266, :266])


def test_image_smaller_than_the_patch_is_padded_on_the_short_sides_only(app: App, model: FakeModel) -> None:
    W, H = 300, 700
    setup(app, {"subpatching": {"patch_size": 512}})
    (region,) = predict(app, (W, H), [click(100, 650, W, H)])
    assert np.array_equal(brush_mask(region), disc(W, H, 100, 650, 20))
    seen = model.encoded_images[-1]  # x: 300 short of 512 -> padded after; y: slid inside
    assert seen.shape == (512, 512, 3)
    assert np.array_equal(seen[:, :300], image_array(W, H)[188:700]) and not seen[:, 300:].any()


def test_oversize_box_grows_the_patch_or_falls_back_to_full_frame(app: App, model: FakeModel) -> None:
    W, H = 2000, 1500
    setup(app, {"subpatching": {"patch_size": 512}})
    predict(app, (W, H), [box_region(100, 100, 700, 200, W, H)])
    assert model.encoded_images[-1].shape == (630, 630, 3)  # 600 * 1.05
    (region,) = predict(app, (W, H), [box_region(100, 100, 1550, 200, W, H)])
    assert model.encoded_images[-1].shape == (H, W, 3)  # 1522.5 > 1500: whole frame
    assert brush_mask(region)[100:200, 100:1550].all()


def test_oversize_refused_is_a_422_not_a_500(app: App) -> None:
    setup(app, {"subpatching": {"patch_size": 512, "allow_oversize": False}})
    error = predict(app, (2000, 1500), [box_region(100, 100, 700, 200, 2000, 1500)], status=422)
    assert error.startswith("extra_params.subpatching: ") and "oversize patches are not allowed" in error


def test_repeated_clicks_inside_one_patch_encode_once(app: App, model: FakeModel) -> None:
    W, H = 2000, 1500
    setup(app, {"subpatching": {"patch_size": 512}})
    first = click(1000, 750, W, H)
    predict(app, (W, H), [first])
    # Label Studio resends every connected region: the prompt grows, its centre moves.
    predict(app, (W, H), [first, click(1100, 800, W, H)])
    (region,) = predict(app, (W, H), [first, click(1100, 800, W, H), click(980, 700, W, H, positive=False)])
    assert model.encode_calls == 1
    assert np.array_equal(brush_mask(region), disc(W, H, 1000, 750, 20))
    predict(app, (W, H), [click(200, 200, W, H)])  # another object: another patch
    assert model.encode_calls == 2
    predict(app, (W, H), [click(1010, 760, W, H)])  # back to the first: still cached
    assert model.encode_calls == 2


# -- fullframe_resize ----------------------------------------------------------------------


@pytest.mark.parametrize(("resize", "seen"), [(0.5, (300, 400)), (256, (256, 256)), ([400, 200], (200, 400))])
def test_fullframe_resize_maps_the_mask_back(
    app: App, model: FakeModel, resize: Any, seen: tuple[int, int]
) -> None:
    W, H = 800, 600
    setup(app, {"fullframe_resize": resize})
    (region,) = predict(app, (W, H), [click(500, 300, W, H)])
    assert model.encoded_images[-1].shape[:2] == seen
    sx, sy = W / seen[1], H / seen[0]
    yy, xx = np.ogrid[:H, :W]
    expected = ((xx - 500) / sx) ** 2 + ((yy - 300) / sy) ** 2 <= 20**2  # the disc, stretched back
    # Up to resize rounding: differences only within a working pixel of the outline.
    assert near_edge(brush_mask(region), expected, band=int(np.ceil(max(sx, sy))) + 1)
    assert abs(int(brush_mask(region).sum()) - int(expected.sum())) < 0.1 * expected.sum()


def test_fullframe_resize_upscale_is_a_422(app: App) -> None:
    setup(app, {"fullframe_resize": [1024, 1024]})
    error = predict(app, (800, 600), [click(500, 300, 800, 600)], status=422)
    assert "fullframe_resize" in error and "downscaling" in error


def test_resize_then_subpatch(app: App, model: FakeModel) -> None:
    W, H = 2000, 1500
    setup(app, {"fullframe_resize": 0.5, "subpatching": {"patch_size": 256}})
    (region,) = predict(app, (W, H), [box_region(1400, 200, 1600, 400, W, H)])
    assert model.encoded_images[-1].shape == (256, 256, 3)  # of the 1000 x 750 frame
    expected = np.zeros((H, W), bool)
    expected[200:400, 1400:1600] = True
    assert np.array_equal(brush_mask(region), expected)  # even pixel offsets: exact here


# -- postprocess and several blobs ---------------------------------------------------------


class DiscsModel(FakeModel):
    """A disc around every positive point: radius 30 for the first, 10 for the others; with
    `hole`, each disc has a hole of half its radius."""

    def __init__(self, hole: bool = False) -> None:
        super().__init__()
        self.hole = hole

    def decode(self, features: Any, prompt: Prompt) -> Segmentation:
        h, w = features.image_hw
        mask = np.zeros((h, w), bool)
        for i, (x, y) in enumerate(prompt.points[prompt.labels == POSITIVE]):
            r = 30 if i == 0 else 10
            blob = disc(w, h, x, y, r)
            mask |= blob & ~disc(w, h, x, y, r / 2) if self.hole else blob
        return Segmentation(mask, 0.7)


def three_clicks(W: int, H: int) -> list[dict[str, Any]]:
    return [click(100, 100, W, H), click(300, 100, W, H), click(300, 250, W, H)]


@pytest.mark.parametrize("output", ["RectangleLabels", "Polygon"])
def test_one_region_per_surviving_blob(tmp_path: Path, output: str) -> None:
    W, H = 400, 300
    app = make_app(tmp_path, DiscsModel())
    setup(app, {"return_format": {"type": output}}, output)
    regions = predict(app, (W, H), three_clicks(W, H), output)
    assert len(regions) == 3 and all(r["score"] == 0.7 for r in regions)
    setup(app, {"return_format": {"type": output}, "postprocess": {"mask_size_threshold": 0.5}}, output)
    (big,) = predict(app, (W, H), three_clicks(W, H), output)
    if output == "RectangleLabels":
        v = big["value"]
        assert (v["x"] * W / 100, v["y"] * H / 100) == pytest.approx((70, 70))
        assert (v["width"] * W / 100, v["height"] * H / 100) == pytest.approx((61, 61))
    else:
        xs = [p[0] * W / 100 for p in big["value"]["points"]]
        assert min(xs) >= 70 and max(xs) <= 131


def test_fill_holes_and_dilate_through_the_stack(tmp_path: Path) -> None:
    W, H = 400, 300
    app = make_app(tmp_path, DiscsModel(hole=True))
    setup(app, {})
    (plain,) = predict(app, (W, H), [click(200, 150, W, H)])
    assert not brush_mask(plain)[150, 200]  # the hole
    setup(app, {"postprocess": {"fill_holes": True}})
    (filled,) = predict(app, (W, H), [click(200, 150, W, H)])
    assert np.array_equal(brush_mask(filled), disc(W, H, 200, 150, 30))
    setup(app, {"postprocess": {"fill_holes": True, "dilate": 4}})
    (grown,) = predict(app, (W, H), [click(200, 150, W, H)])
    assert np.array_equal(brush_mask(grown), dilate(disc(W, H, 200, 150, 30), 4))
    setup(app, {"postprocess": {"fill_holes": True, "dilate": 0.1}})  # 10 % of r = 30 -> 3 px
    (grown,) = predict(app, (W, H), [click(200, 150, W, H)])
    assert np.array_equal(brush_mask(grown), dilate(disc(W, H, 200, 150, 30), 3))


def test_polygon_formats_fill_holes_by_themselves(tmp_path: Path) -> None:
    W, H = 400, 300
    app = make_app(tmp_path, DiscsModel(hole=True))
    setup(app, {"return_format": {"type": "PolygonLabels", "max_points": 8}}, "PolygonLabels")
    (region,) = predict(app, (W, H), [click(200, 150, W, H)], "PolygonLabels")
    assert 3 <= len(region["value"]["points"]) <= 8


# -- the real SAM2 model (random weights): shape and validity ------------------------------


def check_region(region: dict[str, Any], output: str, size: tuple[int, int]) -> None:
    W, H = size
    assert region["type"] == output.lower() and (region["original_width"], region["original_height"]) == size
    assert (output.lower() in region["value"]) == output.endswith("Labels")
    value = region["value"]
    if output.startswith("Brush"):
        assert brush_mask(region).shape == (H, W)
    elif output.startswith("Polygon"):
        points = np.array(value["points"])
        assert points.ndim == 2 and 3 <= len(points) <= 100
        assert (points >= 0).all() and (points <= 100).all()
    else:
        assert value["x"] >= 0 and value["x"] + value["width"] <= 100 + 1e-9 and value["width"] > 0
        assert value["y"] >= 0 and value["y"] + value["height"] <= 100 + 1e-9 and value["height"] > 0


@pytest.mark.sam2
def test_real_sam2_every_return_format_on_one_encode(tmp_path: Path, sam2_model: Any) -> None:
    size = (640, 480)
    app = make_app(tmp_path, sam2_model)
    for output in TYPES:
        setup(app, {"return_format": {"type": output}}, output)
        regions = predict(app, size, [click(300, 240, *size)], output)
        assert regions, output
        for region in regions:
            check_region(region, output, size)
    assert app.engine.stats.encoder_calls == 1  # the format changes only the rendering


@pytest.mark.sam2
def test_real_sam2_resize_subpatch_and_postprocess(tmp_path: Path, sam2_model: Any) -> None:
    size = (2000, 1500)
    app = make_app(tmp_path, sam2_model)
    params = {
        "fullframe_resize": 0.5,
        "subpatching": {"patch_size": 384},
        "postprocess": {"mask_size_threshold": 1.0, "dilate": 2},
        "return_format": {"type": "PolygonLabels", "max_points": 30},
    }
    setup(app, params, "PolygonLabels")
    first = click(1200, 600, *size)
    (region,) = predict(app, size, [first], "PolygonLabels")  # threshold 1: the largest blob only
    check_region(region, "PolygonLabels", size)
    # The whole outline lies in the patch: 384 working px = 768 original px around the click.
    points = np.array(region["value"]["points"]) * [size[0] / 100, size[1] / 100]
    assert (points >= [1200 - 384 - 3, 600 - 384 - 3]).all()
    assert (points <= [1200 + 384 + 3, 600 + 384 + 3]).all()
    predict(app, size, [first, click(1260, 640, *size)], "PolygonLabels")
    assert app.engine.stats.encoder_calls == 1
