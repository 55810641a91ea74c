"""Brush RLE: byte-identical to label_studio_sdk's mask2rle, and decodable with decode_rle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from label_studio_sdk.converter import brush

from function.adapters.labelstudio.brush import mask_to_rle

from .support import (
    examples,
    rle_mask,
)


def sdk_rle(mask: np.ndarray) -> list[int]:
    return list(brush.mask2rle(mask))


def assert_same_as_sdk(mask: np.ndarray) -> list[int]:
    ours = mask_to_rle(mask)
    assert ours == sdk_rle(mask)
    h, w = mask.shape
    assert np.array_equal(rle_mask(ours, w, h), mask)
    return ours


def test_all_zero_640x480_spec_anchor() -> None:
    rle = assert_same_as_sdk(np.zeros((480, 640), np.uint8))
    assert len(rle) == 71
    assert rle[:6] == [0, 18, 192, 0, 57, 27]


def test_rectangle_spec_anchor() -> None:
    mask = np.zeros((480, 640), np.uint8)
    mask[150:330, 200:400] = 255
    assert len(assert_same_as_sdk(mask)) == 1259


@pytest.mark.parametrize(
    "mask",
    [
        np.full((1, 1), 255, np.uint8),
        np.zeros((1, 1), np.uint8),
        np.full((480, 640), 255, np.uint8),
        np.tile(np.array([0, 255], np.uint8), (7, 9))[:, :17],  # runs of one pixel
        np.eye(33, dtype=np.uint8) * 255,
        np.pad(np.full((3, 3), 255, np.uint8), 5),
        # runs of 1-2, 3-4 and 5-64 pixels: each RLE size class, and the class boundaries
        np.repeat(np.array([0, 255, 0, 255, 0, 255, 0], np.uint8), [1, 2, 3, 4, 63, 64, 65])[None, :],
        # a run longer than 65536 values (16384 pixels) is split into pieces
        np.zeros((200, 300), np.uint8),
    ],
    ids=["1px-on", "1px-off", "full", "stripes", "diagonal", "padded-square", "classes", "long-run"],
)
def test_examples_match_sdk(mask: np.ndarray) -> None:
    assert_same_as_sdk(mask)


def test_long_run_exactly_at_piece_boundary() -> None:
    # 16384 pixels = 65536 values: exactly one full piece; one more pixel: two pieces.
    for n in (16384, 16385, 32768, 32769):
        mask = np.zeros((1, n), np.uint8)
        mask[0, -1] = 255
        assert_same_as_sdk(mask)


def test_rejects_non_2d() -> None:
    with pytest.raises(ValueError):
        mask_to_rle(np.zeros((2, 2, 2), np.uint8))


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    h = draw(st.integers(1, 60))
    w = draw(st.integers(1, 60))
    density = draw(st.floats(0.0, 1.0))
    blocky = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if blocky:  # long runs: rows of a few rectangles
        mask = np.zeros((h, w), np.uint8)
        for _ in range(draw(st.integers(0, 4))):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            mask[y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = 255
        return mask
    return (rng.random((h, w)) < density).astype(np.uint8) * 255


@settings(max_examples=examples(150), deadline=None)
@given(masks())
def test_property_identical_to_sdk_and_round_trips(mask: np.ndarray) -> None:
    assert_same_as_sdk(mask)


@settings(max_examples=examples(20), deadline=None)
@given(st.integers(1, 4), st.integers(20_000, 70_000), st.integers(0, 2**32 - 1))
def test_property_wide_masks_with_long_runs(rows: int, width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = np.zeros((rows, width), np.uint8)
    for start in rng.integers(0, width, 3):
        mask[:, start : start + int(rng.integers(1, 30_000))] = 255
    assert_same_as_sdk(mask)
