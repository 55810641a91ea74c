"""Views (resize, crop) map exactly both ways; subpatch planning meets SAM2Plus's anchors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from function.core.errors import PatchTooSmall, ResizeNotPossible
from function.core.geometry import Box, Crop, PatchSpec, Resize, ResizeSpec, View, holds, plan_patch

from .support import examples

sizes = st.integers(1, 64)
offsets = st.integers(-80, 80)
# Multiples of 1/256: shifts by whole pixels are then exact in floating point, as they are
# for the pixel coordinates Label Studio percentages become at realistic sizes.
coords = st.integers(-500 * 256, 500 * 256).map(lambda n: n / 256)


@st.composite
def crops(draw: st.DrawFn) -> Crop:
    fw, fh = draw(sizes), draw(sizes)
    return Crop(draw(offsets), draw(offsets), draw(sizes), draw(sizes), (fw, fh), (7, 8, 9))


@st.composite
def resizes(draw: st.DrawFn) -> Resize:
    w, h = draw(sizes), draw(sizes)
    return Resize((w, h), (draw(st.integers(1, w)), draw(st.integers(1, h))))


def masks(h: int, w: int) -> st.SearchStrategy[np.ndarray]:
    """Random masks of any density, from a seed (drawing pixel by pixel is slow)."""
    return st.tuples(st.integers(0, 2**32 - 1), st.floats(0, 1)).map(
        lambda seed_density: np.random.default_rng(seed_density[0]).random((h, w)) < seed_density[1]
    )


# -- crop ----------------------------------------------------------------------------------


@given(crops(), coords, coords)
def test_crop_points_and_boxes_round_trip_exactly(crop: Crop, x: float, y: float) -> None:
    p = np.array([[x, y]])
    assert np.array_equal(crop.points_backward(crop.points_forward(p)), p)
    box = Box.from_corners(x, y, x + 13.25, y + 7.5)
    assert crop.box_backward(crop.box_forward(box)) == box


@given(crops(), st.data())
def test_crop_masks_round_trip_exactly(crop: Crop, data: st.DataObject) -> None:
    fw, fh = crop.frame
    window = data.draw(masks(crop.height, crop.width))
    frame = crop.mask_backward(window)
    assert frame.shape == (fh, fw)
    # Window pixels on the frame come back unchanged; pixels on the padding are dropped.
    inside = crop.mask_forward(np.ones((fh, fw), bool))
    assert np.array_equal(crop.mask_forward(frame), window & inside)
    full = data.draw(masks(fh, fw))
    back = crop.mask_backward(crop.mask_forward(full))
    assert np.array_equal(back, full & crop.mask_backward(np.ones((crop.height, crop.width), bool)))


@given(crops(), st.data())
def test_crop_pixels_match_the_mask_mapping(crop: Crop, data: st.DataObject) -> None:
    fw, fh = crop.frame
    frame = np.arange(fh * fw * 3, dtype=np.int64).reshape(fh, fw, 3) % 251
    out = crop.pixels(frame.astype(np.uint8))
    assert out.shape == (crop.height, crop.width, 3)
    inside = crop.mask_forward(np.ones((fh, fw), bool))
    assert (out[~inside] == (7, 8, 9)).all()
    # A pixel at window (r, c) inside the frame is frame pixel (r + y0, c + x0).
    rows, cols = np.nonzero(inside)
    assert np.array_equal(out[rows, cols], frame[rows + crop.y0, cols + crop.x0])


@given(crops(), coords, coords)
def test_crop_backward_clamps_into_the_frame(crop: Crop, x: float, y: float) -> None:
    fw, fh = crop.frame
    ((bx, by),) = crop.points_backward(np.array([[x, y]]), clamp=True)
    assert 0 <= bx <= fw and 0 <= by <= fh
    box = crop.box_backward(Box.from_corners(x, y, x + 40, y + 40), clamp=True)
    assert 0 <= box.x0 <= box.x1 <= fw and 0 <= box.y0 <= box.y1 <= fh


def test_crop_key_names_the_fill_only_when_it_pads() -> None:
    inside = Crop(2, 3, 10, 10, (100, 100), (255, 0, 0))
    padded = Crop(-2, 3, 10, 10, (100, 100), (255, 0, 0))
    assert inside.key == "c2,3,10x10" and not inside.is_padded
    assert padded.key == "c-2,3,10x10#ff0000"
    assert Crop(-2, 3, 10, 10, (100, 100), (0, 0, 0)).key != padded.key


# -- resize --------------------------------------------------------------------------------


@given(resizes(), coords, coords)
def test_resize_points_and_boxes_round_trip(resize: Resize, x: float, y: float) -> None:
    p = np.array([[x, y]])
    np.testing.assert_allclose(resize.points_backward(resize.points_forward(p)), p, rtol=1e-12, atol=1e-9)
    box = Box.from_corners(x, y, x + 3, y + 5)
    back = resize.box_backward(resize.box_forward(box))
    np.testing.assert_allclose(back.as_tuple(), box.as_tuple(), rtol=1e-12, atol=1e-9)


@given(resizes(), st.data())
def test_resize_masks_round_trip_exactly(resize: Resize, data: st.DataObject) -> None:
    """Every pixel of the (smaller) working frame survives working -> original -> working."""
    dw, dh = resize.dst
    small = data.draw(masks(dh, dw))
    big = resize.mask_backward(small)
    assert big.shape == (resize.src[1], resize.src[0])
    assert np.array_equal(resize.mask_forward(big), small)


@given(resizes(), st.data())
def test_resize_mask_mapping_agrees_with_the_point_mapping(resize: Resize, data: st.DataObject) -> None:
    """An original pixel lands in the working pixel under its centre, and back."""
    sw, sh = resize.src
    col, row = data.draw(st.integers(0, sw - 1)), data.draw(st.integers(0, sh - 1))
    ((x, y),) = resize.points_forward(np.array([[col + 0.5, row + 0.5]]))
    small = np.zeros((resize.dst[1], resize.dst[0]), bool)
    small[int(y), int(x)] = True
    assert resize.mask_backward(small)[row, col]


def test_resize_spec_plans() -> None:
    assert ResizeSpec(scale=0.5).plan(2000, 1501) == Resize((2000, 1501), (1000, 750))
    assert ResizeSpec(scale=1.0).plan(2000, 1500) is None
    assert ResizeSpec(size=(1024, 1024)).plan(2000, 1500) == Resize((2000, 1500), (1024, 1024))
    assert ResizeSpec(size=(2000, 1500)).plan(2000, 1500) is None
    assert ResizeSpec(scale=0.0001).plan(100, 100) == Resize((100, 100), (1, 1))
    with pytest.raises(ResizeNotPossible, match=r"resize target .* only downscaling"):
        ResizeSpec(size=(1024, 1024)).plan(2000, 800)


# -- composed views ------------------------------------------------------------------------


@given(resizes(), offsets, offsets, sizes, sizes, coords, coords, st.data())
def test_view_round_trips(
    resize: Resize, x0: int, y0: int, w: int, h: int, x: float, y: float, data: st.DataObject
) -> None:
    view = View(resize.src, resize, Crop(x0, y0, w, h, resize.dst))
    p = np.array([[x, y]])
    np.testing.assert_allclose(view.points_backward(view.points_forward(p)), p, rtol=1e-12, atol=1e-9)
    window = data.draw(masks(h, w))
    on_frame = view.crop.mask_forward(np.ones((resize.dst[1], resize.dst[0]), bool))  # type: ignore[union-attr]
    assert view.mask_backward(window).shape == (resize.src[1], resize.src[0])
    assert np.array_equal(view.mask_forward(view.mask_backward(window)), window & on_frame)
    assert view.size == (w, h)


def test_view_keys() -> None:
    assert View((100, 80)).key == ""
    resize = Resize((100, 80), (50, 40))
    assert View((100, 80), resize).key == "r50x40"
    assert View((100, 80), resize, Crop(0, 0, 32, 32, (50, 40))).key == "r50x40/c0,0,32x32"


# -- subpatch planning ---------------------------------------------------------------------

SPEC = PatchSpec()


def test_anchor_box_in_the_middle() -> None:
    crop = plan_patch(Box(900, 650, 1100, 850), 2000, 1500, SPEC)
    assert crop is not None and (crop.x0, crop.y0, crop.width, crop.height) == (488, 238, 1024, 1024)


def test_anchor_oversize_box_grows_the_patch_by_five_percent() -> None:
    crop = plan_patch(Box(400, 150, 1600, 1350), 2000, 1500, SPEC)
    assert crop is not None and (crop.width, crop.height) == (1260, 1260)
    assert crop.x0 >= 0 and crop.y0 >= 0 and crop.x0 + 1260 <= 2000 and crop.y0 + 1260 <= 1500


def test_anchor_oversize_side_is_truncated_then_made_even() -> None:
    crop = plan_patch(Box(100, 100, 1338, 1338), 2000, 1500, SPEC)  # 1238 * 1.05 = 1299.9
    assert crop is not None and (crop.width, crop.height) == (1298, 1298)


def test_anchor_box_too_large_for_the_image_falls_back_to_full_frame() -> None:
    assert plan_patch(Box(100, 100, 1550, 300), 2000, 1500, SPEC) is None  # 1522.5 > 1500


def test_anchor_padding_mode_around_the_corner() -> None:
    crop = plan_patch(Box(0, 0, 100, 100), 2000, 1500, PatchSpec(mode="padding"))
    assert crop is not None and (crop.x0, crop.y0) == (-462, -462) and crop.is_padded


def test_oversize_refused_when_not_allowed() -> None:
    with pytest.raises(PatchTooSmall, match="oversize patches are not allowed"):
        plan_patch(Box(0, 0, 1100, 100), 2000, 1500, PatchSpec(allow_oversize=False))


def test_only_the_short_axis_is_padded() -> None:
    """SAM2Plus padded and centred both axes when one was short; here only the short one."""
    crop = plan_patch(Box(1000, 300, 1010, 310), 2000, 600, SPEC)
    assert crop is not None
    assert (crop.x0, crop.width) == (1005 - 512, 1024)  # centred on x, inside the frame
    assert (crop.y0, crop.height) == (0, 1024)  # frame flush at the top, padding below
    assert crop.x0 + crop.width <= 2000


def test_image_smaller_than_the_patch_is_padded() -> None:
    crop = plan_patch(Box(10, 10, 20, 20), 300, 200, PatchSpec(size=(512, 256)))
    assert crop == Crop(0, 0, 512, 256, (300, 200))
    assert crop.pixels(np.full((200, 300, 3), 9, np.uint8))[250, 400].tolist() == [0, 0, 0]


@settings(max_examples=examples(300))
@given(
    st.integers(16, 3000),
    st.integers(16, 3000),
    st.integers(16, 1500),
    st.integers(16, 1500),
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(0, 0.8),
    st.floats(0, 0.8),
    st.sampled_from(["default", "padding"]),
)
def test_planned_patch_holds_the_prompt(
    fw: int, fh: int, pw: int, ph: int, fx: float, fy: float, fwid: float, fhei: float, mode: str
) -> None:
    x0, y0 = fx * fw * 0.99, fy * fh * 0.99
    extent = Box(x0, y0, min(x0 + fwid * fw, fw), min(y0 + fhei * fh, fh))
    spec = PatchSpec(size=(pw, ph), mode=mode)  # type: ignore[arg-type]
    crop = plan_patch(extent, fw, fh, spec)
    if crop is None:  # only when the grown patch would exceed the frame
        span = max(np.ceil(extent.x1) - np.floor(extent.x0), np.ceil(extent.y1) - np.floor(extent.y0))
        assert span > min(pw, ph) and span * 1.05 > min(fw, fh) - 2
        return
    assert crop.x0 <= extent.x0 and crop.y0 <= extent.y0
    assert extent.x1 <= crop.x0 + crop.width and extent.y1 <= crop.y0 + crop.height
    if mode == "default":
        # Inside the frame on every axis the frame is long enough for; flush at 0 otherwise.
        for start, size, frame in ((crop.x0, crop.width, fw), (crop.y0, crop.height, fh)):
            assert (0 <= start <= frame - size) if frame >= size else start == 0


def test_holds_keeps_a_margin_only_from_edges_that_cut_the_frame() -> None:
    crop = Crop(100, 0, 200, 200, (1000, 200))
    assert holds(crop, Box(130, 0, 150, 20), 25)  # top edge is the frame's: no margin needed
    assert not holds(crop, Box(110, 50, 150, 60), 25)  # 10 px from the left cut
    assert holds(crop, Box(125, 50, 275, 60), 25)
    assert not holds(crop, Box(125, 50, 276, 60), 25)
