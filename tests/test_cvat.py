"""CVAT interactor contract (the cases that need no CVAT server) through `App`: shapes and
values, clicks, boxes, image modes, empty results, polygons, reply size, feature cache and bad
input. The local server and the real SAM2 are in test_cvat_server.py.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from function.adapters.cvat import empty_result, render
from function.core.model import ImageFeatures, Segmentation
from function.core.prompts import NEGATIVE, Prompt
from function.service.app import App

from .cvat_support import EMPTY, FRAME, H, W, b64, body, disc, full_frame, interact
from .fakes import FakeModel
from .support import call, data_uri, encode_image, make_app, predict_body, sample_array


class CarvingModel(FakeModel):
    """Like FakeModel, and each negative point removes a disc of radius/2 around it."""

    def decode(self, features: ImageFeatures, prompt: Prompt) -> Segmentation:
        seg = super().decode(features, prompt)
        mask = seg.mask.copy()
        h, w = features.image_hw
        for x, y in prompt.points[prompt.labels == NEGATIVE]:
            mask &= ~disc(x, y, self.radius // 2, w, h)
        return Segmentation(mask, seg.score)


class BlankModel(FakeModel):
    """Finds nothing, whatever the prompt."""

    def decode(self, features: ImageFeatures, prompt: Prompt) -> Segmentation:
        super().decode(features, prompt)
        return Segmentation(np.zeros(features.image_hw, bool), 0.1)


@pytest.fixture
def app(tmp_path: Path, fake_model: FakeModel) -> App:
    return make_app(tmp_path, fake_model)


# -- shape, values, clicks --------------------------------------------------------------


def test_one_click_gives_the_models_mask_cropped_to_inclusive_bounds(app: App) -> None:
    reply = interact(app, body(pos=[[300, 240]]))
    assert reply["bounds"] == [280, 220, 320, 260]
    mask = full_frame(reply, W, H)
    assert mask[240, 300]
    np.testing.assert_array_equal(mask, disc(300, 240, 20))


def test_float_coordinates_are_pixels(app: App) -> None:
    reply = interact(app, body(pos=[[12.1, 43.99]]))
    mask = full_frame(reply, W, H)
    assert mask[44, 12]
    np.testing.assert_array_equal(mask, disc(12.1, 43.99, 20))
    assert reply["bounds"][0] == 0  # clipped at the image's left edge


@pytest.mark.parametrize(
    ("click", "pixel"),
    [
        ((W - 1, 0), (W - 1, 0)),
        ((0, H - 1), (0, H - 1)),
        ((W, H), (W - 1, H - 1)),  # on the far border: clipped onto the last pixel
        ((W + 1.5, -1.5), (W - 1, 0)),  # a hair outside: clipped
    ],
)
def test_border_clicks_are_clipped_onto_the_image(
    app: App, click: tuple[float, float], pixel: tuple[int, int]
) -> None:
    mask = full_frame(interact(app, body(pos=[list(click)])), W, H)
    assert mask[pixel[1], pixel[0]]


def test_clicks_far_outside_the_image_are_422(app: App) -> None:
    assert "outside" in interact(app, body(pos=[[W + 50, 10]]), 422)["error"]


def test_negative_point_on_a_sub_part_shrinks_the_mask(tmp_path: Path) -> None:
    app = make_app(tmp_path, CarvingModel(radius=40))
    whole = full_frame(interact(app, body(pos=[[300, 240]])), W, H)
    carved = full_frame(interact(app, body(pos=[[300, 240]], neg=[[330, 240]])), W, H)
    assert carved.sum() < whole.sum()
    assert whole[240, 330] and not carved[240, 330]
    assert carved[240, 300]


# -- boxes -----------------------------------------------------------------------------

BOX = (100.0, 120.0, 250.0, 200.0)


@pytest.mark.parametrize(
    "obj_bbox",
    [
        [[100.0, 120.0], [250.0, 200.0]],
        [100.0, 120.0, 250.0, 200.0],
        [[250.0, 200.0], [100.0, 120.0]],  # reversed corners
        [250, 120, 100, 200],  # mixed order, ints
        [[250.0, 120.0], [100.0, 200.0]],
    ],
)
def test_box_only_prompt_returns_a_mask_within_the_box(app: App, obj_bbox: Any) -> None:
    reply = interact(app, body(box=obj_bbox))
    mask = full_frame(reply, W, H)
    x0, y0, x1, y1 = reply["bounds"]
    assert abs(x0 - BOX[0]) <= 2 and abs(y0 - BOX[1]) <= 2
    assert abs(x1 - BOX[2]) <= 2 and abs(y1 - BOX[3]) <= 2
    assert mask[160, 175]


def test_box_with_points_and_a_null_box_both_work(app: App) -> None:
    with_box = interact(app, body(pos=[[175, 160]], box=[[100, 120], [250, 200]]))
    assert with_box["bounds"] == [100, 120, 249, 199]
    without = interact(app, body(pos=[[175, 160]], box=None))
    assert without["bounds"] == [155, 140, 195, 180]


def test_box_partly_outside_is_clipped(app: App) -> None:
    reply = interact(app, body(box=[600, 400, 700, 520]))
    full_frame(reply, W, H)
    assert reply["bounds"] == [600, 400, W - 1, H - 1]


# -- image modes -----------------------------------------------------------------------


def image_in_mode(mode: str) -> bytes:
    rgb = Image.fromarray(sample_array(W, H))
    buf = io.BytesIO()
    if mode == "JPEG":
        rgb.save(buf, "JPEG", quality=95)
    elif mode == "I;16":
        Image.fromarray(sample_array(W, H)[..., 0].astype(np.uint16) * 257).save(buf, "PNG")
    elif mode == "RGBA":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(128)
        rgba.save(buf, "PNG")
    else:
        rgb.convert(mode).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("mode", "opens_as"), [("RGBA", "RGBA"), ("L", "L"), ("P", "P"), ("I;16", "I"), ("JPEG", "RGB")]
)
def test_image_modes_decode_to_rgb(tmp_path: Path, mode: str, opens_as: str) -> None:
    model = FakeModel()
    app = make_app(tmp_path, model)
    data = image_in_mode(mode)
    assert Image.open(io.BytesIO(data)).mode.startswith(opens_as)
    full_frame(interact(app, body(data, pos=[[300, 240]])), W, H)
    (seen,) = model.encoded_images
    assert seen.shape == (H, W, 3) and seen.dtype == np.uint8
    assert seen[240, 300].min() > 150 and seen[20, 20].max() < 80  # object light, background dark


def test_jpeg_exif_rotation_is_applied(tmp_path: Path) -> None:
    """Stored 320x240 with Orientation 6 (rotate 90° clockwise): shown 240 wide, 320 high."""
    model = FakeModel(radius=10)
    app = make_app(tmp_path, model)
    stored = np.full((240, 320, 3), 30, np.uint8)
    stored[:60, :80] = 220  # top-left when stored -> top-right when shown
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    # A click at the bottom of the shown frame is outside the stored one.
    reply = interact(app, body(buf.getvalue(), pos=[[200, 300]]))
    mask = full_frame(reply, 240, 320)
    assert mask[300, 200]
    (seen,) = model.encoded_images
    assert seen.shape == (320, 240, 3)
    assert seen[20, 220].min() > 150 and seen[20, 20].max() < 80


def test_data_uri_prefix_and_wrapped_base64_are_tolerated(app: App, fake_model: FakeModel) -> None:
    plain = interact(app, body(pos=[[300, 240]]))
    assert interact(app, body(data_uri(FRAME), pos=[[300, 240]])) == plain
    wrapped = base64.encodebytes(FRAME).decode()  # newline every 76 chars
    assert interact(app, body(wrapped, pos=[[300, 240]])) == plain
    unpadded = b64(FRAME).rstrip("=")
    assert interact(app, body(unpadded, pos=[[300, 240]])) == plain
    assert fake_model.encode_calls == 1  # same bytes every time: one encoder pass


# -- empty results ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        body(),  # no prompt at all
        body(neg=[[300, 240]]),  # negative only (min_pos_points: 0)
        {"image": b64(FRAME)},  # CVAT drops keys whose value is None
    ],
)
def test_prompt_without_an_object_gives_the_empty_result(
    app: App, fake_model: FakeModel, payload: dict[str, Any]
) -> None:
    assert interact(app, payload) == EMPTY
    assert fake_model.encode_calls == 0


def test_nothing_found_gives_the_empty_result(tmp_path: Path) -> None:
    app = make_app(tmp_path, BlankModel())
    blank = encode_image(np.zeros((H, W, 3), np.uint8))
    assert interact(app, body(blank, pos=[[5, 5]])) == EMPTY
    assert empty_result() == EMPTY and empty_result() is not empty_result()


# -- polygons --------------------------------------------------------------------------


def test_polygon_follows_the_largest_of_several_components() -> None:
    mask = disc(100, 100, 10) | disc(400, 300, 30) | disc(600, 50, 5)
    reply = render(mask)
    frame = full_frame(reply, W, H)
    np.testing.assert_array_equal(frame, mask)
    xs = [x for x, _ in reply["points"]]
    ys = [y for _, y in reply["points"]]
    assert min(xs) == 370 and max(xs) == 430 and min(ys) == 270 and max(ys) == 330


@pytest.mark.parametrize(
    "pixels",
    [
        [(0, 0)],  # a single pixel in the corner
        [(W - 1, H - 1)],
        [(10, 20), (11, 20), (12, 20)],  # a one-pixel line: no area of its own
        [(5, 5), (6, 6), (7, 7)],  # a diagonal line
    ],
)
def test_thin_masks_still_get_an_enclosing_polygon(pixels: list[tuple[int, int]]) -> None:
    mask = np.zeros((H, W), bool)
    for x, y in pixels:
        mask[y, x] = True
    reply = render(mask)
    np.testing.assert_array_equal(full_frame(reply, W, H), mask)
    xs = [p[0] for p in reply["points"]]
    ys = [p[1] for p in reply["points"]]
    for x, y in pixels:
        assert min(xs) <= x <= max(xs) and min(ys) <= y <= max(ys)


def test_mask_with_a_hole_keeps_the_hole_and_the_outer_polygon() -> None:
    mask = disc(300, 200, 40) & ~disc(300, 200, 15)
    reply = render(mask)
    np.testing.assert_array_equal(full_frame(reply, W, H), mask)
    assert reply["mask"][40][40] == 0  # the hole's centre, relative to bounds


# -- size and cache ----------------------------------------------------------------------


def test_small_object_on_a_4000x3000_frame_gives_a_small_reply(tmp_path: Path) -> None:
    width, height = 4000, 3000
    app = make_app(tmp_path, FakeModel(radius=20))
    frame = encode_image(sample_array(width, height))
    reply = call(app, "POST", "/", body(frame, pos=[[2000.5, 1500.5]]))
    assert reply.status == 200
    full_frame(reply.body, width, height)
    # A full-frame mask as JSON takes at least 2 characters ("0,") per pixel.
    full_frame_json = 2 * width * height
    assert len(reply.text) < 0.01 * full_frame_json
    assert len(reply.text) < 8_000


def test_repeated_clicks_on_one_frame_encode_it_once(app: App, fake_model: FakeModel) -> None:
    first = interact(app, body(pos=[[300, 240]]))
    second = interact(app, body(pos=[[300, 240]], neg=[[330, 250]]))
    third = interact(app, body(FRAME, pos=[[310, 250]], box=[[200, 150], [400, 330]]))
    assert fake_model.encode_calls == 1 and app.engine.stats.encoder_calls == 1
    assert first["bounds"] == second["bounds"] != third["bounds"]
    pixels = sample_array(W, H)
    pixels[0, 0] = 31  # one pixel differs: another frame
    other = encode_image(pixels)
    interact(app, body(other, pos=[[300, 240]]))
    assert fake_model.encode_calls == 2
    interact(app, body(other, pos=[[100, 100]]))
    interact(app, body(pos=[[100, 100]]))
    assert fake_model.encode_calls == 2


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"pos_points": [[1, 2]], "neg_points": [], "obj_bbox": None}, 400, "image"),
        ({"image": None, "pos_points": [[1, 2]]}, 400, "image"),
        (body(b64(FRAME)) | {"image": 12345}, 400, "base64"),
        (body("@@@ not base64 @@@", pos=[[1, 2]]), 400, "base64"),
        (body("aGVsbG8=é", pos=[[1, 2]]), 400, "base64"),
        (body("", pos=[[1, 2]]), 400, "empty"),
        (body(b"hello, this is not an image", pos=[[1, 2]]), 400, "image"),
        (body("data:image/png,notbase64", pos=[[1, 2]]), 400, "base64"),
        (body(pos="12,34"), 422, "pos_points"),
        (body(pos=[1, 2]), 422, "pos_points[0]"),
        (body(pos=[[1, 2, 3]]), 422, "pos_points[0]"),
        (body(pos=[[1, "2"]]), 422, "pos_points[0][1]"),
        (body(pos=[[True, 2]]), 422, "pos_points[0][0]"),
        (body(pos=[[10, 10]], neg={"x": 1}), 422, "neg_points"),
        (body(pos=[[math.nan, 10]]), 422, "finite"),
        (body(pos=[[10, 10]], neg=[[10, math.inf]]), 422, "finite"),
        (body(box=[1, 2, 3]), 422, "obj_bbox"),
        (body(box=[[1, 2], [3, math.nan]]), 422, "finite"),
        (body(box="10,10,20,20"), 422, "obj_bbox"),
        (body(box=[50, 50, 50, 80]), 422, "zero size"),
        (body(box=[5000, 5000, 6000, 6000]), 422, "outside"),
    ],
)
def test_bad_input_gets_a_json_4xx_and_the_worker_keeps_serving(
    app: App, payload: dict[str, Any], status: int, words: str
) -> None:
    reply = interact(app, payload, status)
    assert set(reply) == {"error"} and words in reply["error"]
    assert interact(app, body(pos=[[300, 240]]))["bounds"] == [280, 220, 320, 260]


def test_unknown_keys_and_threshold_are_ignored(app: App) -> None:
    reply = interact(app, body(pos=[[300, 240]], threshold=0.5, frame=3, task=7, whatever={"a": 1}))
    assert reply["bounds"] == [280, 220, 320, 260]


def test_label_studio_bodies_on_root_still_go_to_label_studio(app: App) -> None:
    reply = call(app, "POST", "/", predict_body(data_uri(FRAME), None))
    assert reply.status == 200 and "results" in reply.body
