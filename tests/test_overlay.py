"""Drawing Label Studio result regions (brush, polygon, rectangle) and parsing probe prompts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from function.adapters.labelstudio.brush import mask_to_rle
from function.tools.overlay import DrawnPrompt, RegionError, region_shape, render_cutout, render_overlay
from function.tools.probe_prompt import PromptError, build_prompt, parse_geometry, parse_point

W, H = 200, 100


def region(kind: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": kind,
        "from_name": "x",
        "to_name": "image",
        "original_width": W,
        "original_height": H,
        "value": value,
    }


def test_brush_region_decodes_the_exact_mask() -> None:
    mask = np.zeros((H, W), bool)
    mask[10:30, 50:120] = True
    mask[60, 5] = True  # a lone pixel: literal runs in the RLE
    shape = region_shape(
        region("brushlabels", {"format": "rle", "rle": mask_to_rle(mask.astype(np.uint8) * 255)}), W, H
    )
    assert shape.kind == "brush" and np.array_equal(shape.mask, mask)
    assert shape.bbox == (5, 10, 120, 61)


def test_polygon_region_from_percent_points() -> None:
    value = {"points": [[25, 10], [75, 10], [75, 90], [25, 90]], "closed": True, "polygonlabels": ["a"]}
    shape = region_shape(region("polygonlabels", value), W, H)
    assert shape.kind == "polygon"
    assert shape.mask[50, 100] and not shape.mask[50, 20] and not shape.mask[5, 100]
    assert shape.bbox == (50, 10, 151, 91)  # pixel corners included
    assert np.allclose(shape.outlines[0], [[50, 10], [150, 10], [150, 90], [50, 90]])


def test_rectangle_region_and_its_cutout() -> None:
    value = {"x": 10, "y": 20, "width": 30, "height": 50, "rotation": 0, "rectanglelabels": ["a"]}
    shape = region_shape(region("rectanglelabels", value), W, H)
    assert shape.kind == "rectangle" and shape.bbox == (20, 20, 81, 71)
    image = np.full((H, W, 3), 50, np.uint8)
    cutout = render_cutout(image, shape)
    assert cutout is not None and cutout.size == (61, 51)
    assert (np.asarray(cutout)[:, :, 3] == 255).all()  # a box's crop stays opaque


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"format": "rle", "rle": mask_to_rle(np.zeros((10, 10), np.uint8))}, "holds 100 pixels"),
        ({"points": [[1, 2], [3, 4]]}, "fewer than 3 points"),
        ({"points": [[1, "x"], [3, 4], [5, 6]]}, "malformed polygon"),
        ({"x": 1, "y": 2}, "no rle, points or box"),
    ],
)
def test_undrawable_regions_raise_region_error(value: dict[str, Any], message: str) -> None:
    with pytest.raises(RegionError, match=message):
        region_shape(region("whatever", value), W, H)


def test_overlay_keeps_the_image_size_and_tints_only_the_region() -> None:
    image = np.full((H, W, 3), 100, np.uint8)
    mask = np.zeros((H, W), bool)
    mask[40:60, 140:180] = True
    shape = region_shape(
        region("brush", {"format": "rle", "rle": mask_to_rle(mask.astype(np.uint8) * 255)}), W, H
    )
    out = np.asarray(render_overlay(image, [shape], DrawnPrompt(positive=[(20, 20)], box=(100, 10, 120, 30))))
    assert out.shape == (H, W, 3)
    assert (out[45:55, 145:175] != 100).any(axis=2).all()  # tinted
    assert (out[80:, :100] == 100).all()  # untouched far away
    assert tuple(out[20, 20]) == (40, 220, 60)  # the positive click
    assert tuple(out[10, 110]) == (255, 230, 0)  # the prompt box outline


def test_cutout_is_transparent_outside_the_mask_and_none_when_empty() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    value = {"points": [[10, 10], [40, 10], [10, 90]]}
    cutout = render_cutout(image, region_shape(region("polygon", value), W, H))
    assert cutout is not None
    alpha = np.asarray(cutout)[:, :, 3]
    assert alpha[2, 2] == 255 and alpha[-2, -2] == 0
    empty = region_shape(
        region("brush", {"format": "rle", "rle": mask_to_rle(np.zeros((H, W), np.uint8))}), W, H
    )
    assert empty.bbox is None and render_cutout(image, empty) is None


def test_geometry_units() -> None:
    assert parse_geometry("10,20", 2, "p").pixels(640, 480) == (10, 20)
    assert parse_geometry("0.5,0.25", 2, "p").pixels(640, 480) == (320, 120)
    assert parse_geometry([0.0, 1.0, 0.5, 0.5], 4, "b").pixels(640, 480) == (0, 480, 320, 240)
    assert parse_geometry([1, 2, 3, 4], 4, "b").fractional is False
    with pytest.raises(PromptError, match="mixes integers"):
        parse_geometry([1, 0.5], 2, "p")
    with pytest.raises(PromptError, match="expected 2 numbers"):
        parse_geometry([True, 1], 2, "p")
    assert parse_point(" 3, 4 ,neg") == (parse_geometry("3,4", 2, "p"), False)
    assert parse_point("3,4,+")[1] is True


def test_prompt_json_and_options_combine_into_label_studio_regions() -> None:
    spec = build_prompt(
        ["50,25"],
        None,
        '[{"type": "RectangleLabels", "label": "car", "geometry": [0.1, 0.2, 0.5, 0.5]},'
        ' {"type": "KeyPoint", "geometry": [100, 75], "positive": false}]',
        None,
    )
    assert spec.label == "car"
    box, first, second = spec.regions(200, 100)
    assert box["type"] == "rectanglelabels" and box["value"]["rectanglelabels"] == ["car"]
    assert box["value"]["x"] == pytest.approx(10) and box["value"]["height"] == pytest.approx(50)
    assert (first["value"]["x"], first["value"]["y"], first["is_positive"]) == (25.0, 25.0, True)
    assert (second["value"]["x"], second["value"]["y"], second["is_positive"]) == (50.0, 75.0, False)
    drawn = spec.drawn(200, 100)
    assert drawn.positive == [(50, 25)] and drawn.negative == [(100, 75)]
    assert drawn.box == pytest.approx((20, 20, 120, 70))
