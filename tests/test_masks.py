"""Mask post-processing, components, polygons and boxes (pure functions)."""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from function.adapters.labelstudio.interface import Control
from function.adapters.labelstudio.results import polygon_regions, rectangle_regions
from function.core.masks import (
    PostprocessSpec,
    component_boxes,
    component_masks,
    dilate,
    dilation_radius,
    fill_holes,
    keep_large_components,
    polygons,
    postprocess,
)

from .support import examples


def disc(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.ogrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2


@st.composite
def random_masks(draw: st.DrawFn, max_side: int = 40) -> np.ndarray:
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    seed, density = draw(st.integers(0, 2**32 - 1)), draw(st.floats(0, 0.7))
    return np.random.default_rng(seed).random((h, w)) < density


def reference_fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background pixels not 4-connected to the outside of the image, by breadth-first search."""
    h, w = mask.shape
    outside = np.zeros((h + 2, w + 2), bool)
    padded = np.zeros((h + 2, w + 2), bool)
    padded[1:-1, 1:-1] = mask
    queue = deque([(0, 0)])
    outside[0, 0] = True
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nr < h + 2 and 0 <= nc < w + 2 and not outside[nr, nc] and not padded[nr, nc]:
                outside[nr, nc] = True
                queue.append((nr, nc))
    return ~outside[1:-1, 1:-1]


# -- threshold -----------------------------------------------------------------------------


def two_blobs() -> np.ndarray:
    mask = np.zeros((100, 100), bool)
    mask[10:30, 10:30] = True  # 400 px
    mask[60:70, 60:70] = True  # 100 px
    return mask


def test_threshold_keeps_components_at_least_t_times_the_largest() -> None:
    mask = two_blobs()
    assert keep_large_components(mask, 0.0) is mask
    assert np.array_equal(keep_large_components(mask, 0.25), mask)  # 100 >= 0.25 * 400
    big_only = keep_large_components(mask, 0.26)
    assert big_only[10:30, 10:30].all() and big_only.sum() == 400
    assert keep_large_components(mask, 1.0).sum() == 400


def test_threshold_never_removes_a_lone_blob() -> None:
    mask = disc(50, 50, 25, 25, 10)
    assert np.array_equal(keep_large_components(mask, 1.0), mask)
    empty = np.zeros((5, 5), bool)
    assert not keep_large_components(empty, 1.0).any()


def test_diagonal_neighbours_are_one_component() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2, 2] = mask[3, 3] = mask[4, 4] = True
    assert len(component_masks(mask)) == 1
    assert np.array_equal(keep_large_components(mask, 1.0), mask)


@given(random_masks(), st.floats(0, 1))
def test_threshold_keeps_whole_components(mask: np.ndarray, t: float) -> None:
    kept = keep_large_components(mask, t)
    assert not (kept & ~mask).any()
    parts = component_masks(mask)
    largest = max((int(m.sum()) for m, _ in parts), default=0)
    for part, (x, y) in parts:
        window = kept[y : y + part.shape[0], x : x + part.shape[1]][part]
        assert window.all() or not window.any()  # all or nothing
        if t > 0 and len(parts) > 1:
            assert window.all() == (part.sum() >= t * largest)


# -- fill holes ----------------------------------------------------------------------------


def test_fill_holes_fills_a_ring_but_not_an_open_shape() -> None:
    ring = disc(60, 60, 30, 30, 20) & ~disc(60, 60, 30, 30, 10)
    assert np.array_equal(fill_holes(ring), disc(60, 60, 30, 30, 20))
    open_ring = ring.copy()
    open_ring[28:33, 30:] = False  # a channel from the hole to the outside
    assert np.array_equal(fill_holes(open_ring), open_ring)


def test_a_hole_cut_open_by_the_image_edge_is_not_filled() -> None:
    ring = disc(60, 60, 5, 30, 20) & ~disc(60, 60, 5, 30, 10)  # centre near the left edge
    assert np.array_equal(fill_holes(ring), ring)


@settings(max_examples=examples(200))
@given(random_masks(max_side=24))
def test_fill_holes_matches_a_flood_fill_from_outside(mask: np.ndarray) -> None:
    assert np.array_equal(fill_holes(mask), reference_fill_holes(mask))


# -- dilate --------------------------------------------------------------------------------


def test_dilation_radius_int_is_pixels_float_is_a_fraction_of_the_equivalent_radius() -> None:
    mask = disc(200, 200, 100, 100, 30)
    r_eq = np.sqrt(mask.sum() / np.pi)  # ~30
    assert dilation_radius(mask, 1) == 1
    assert dilation_radius(mask, 1.0) == round(r_eq)
    assert dilation_radius(mask, 0.1) == round(0.1 * r_eq) == 3
    assert dilation_radius(mask, 0) == 0


def test_dilate_grows_a_point_into_a_disc() -> None:
    mask = np.zeros((21, 21), bool)
    mask[10, 10] = True
    grown = dilate(mask, 4)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)).astype(bool)
    assert np.array_equal(grown[6:15, 6:15], kernel) and grown.sum() == kernel.sum()


@given(random_masks(), st.integers(0, 6))
def test_dilate_on_the_region_equals_dilating_the_whole_image(mask: np.ndarray, r: int) -> None:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    whole = cv2.dilate(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    assert np.array_equal(dilate(mask, r), whole.astype(bool) if r else mask)


# -- the whole post-process ----------------------------------------------------------------


def test_order_is_threshold_then_fill_then_dilate() -> None:
    # Dilating first would grow the 100 px blob to ~360 px, over 0.3 x the grown big one.
    mask = two_blobs()
    out = postprocess(mask, PostprocessSpec(mask_size_threshold=0.3, dilate=5))
    assert not out[60:70, 60:70].any()
    assert out[5:35, 10:30].all()
    # The float radius is measured on what is left after thresholding and filling.
    ring = disc(80, 80, 40, 40, 20) & ~disc(80, 80, 40, 40, 12)
    spec = PostprocessSpec(fill_holes=True, dilate=0.25)
    radius = dilation_radius(fill_holes(ring), 0.25)
    assert np.array_equal(postprocess(ring, spec), dilate(fill_holes(ring), radius))


def test_default_postprocess_changes_nothing() -> None:
    mask = two_blobs()
    assert PostprocessSpec().is_noop
    assert np.array_equal(postprocess(mask, PostprocessSpec()), mask)


# -- polygons and boxes --------------------------------------------------------------------


@settings(max_examples=examples(200))
@given(random_masks(), st.sampled_from([0.5, 1.0, 3.0, 0.01, 0.2]), st.integers(3, 40))
def test_polygons_stay_inside_the_image_and_meet_max_points(
    mask: np.ndarray, epsilon: float, max_points: int
) -> None:
    h, w = mask.shape
    for poly in polygons(mask, epsilon, max_points):
        assert 3 <= len(poly) <= max_points
        assert (poly >= 0).all() and (poly[:, 0] <= w).all() and (poly[:, 1] <= h).all()


@given(random_masks())
def test_boxes_bound_their_components_tightly(mask: np.ndarray) -> None:
    boxes = component_boxes(mask)
    assert len(boxes) == len(component_masks(mask))
    covered = np.zeros_like(mask)
    for box, (part, (x, y)) in zip(boxes, component_masks(mask), strict=True):
        rows, cols = np.nonzero(part)
        # Every pixel [c, c + 1) x [r, r + 1) of the component lies inside the box, and the
        # box touches the component on all four sides.
        assert box.x0 == x + cols.min() and box.x1 == x + cols.max() + 1
        assert box.y0 == y + rows.min() and box.y1 == y + rows.max() + 1
        covered[y + rows, x + cols] = True
    assert np.array_equal(covered, mask)


def test_polygon_of_a_disc_follows_its_outline() -> None:
    mask = disc(300, 400, 200, 150, 80)
    (poly,) = polygons(mask, epsilon=1.0, max_points=100)
    drawn = np.zeros((300, 400), np.uint8)
    cv2.fillPoly(drawn, [np.round(poly - 0.5).astype(np.int32)], 1)
    iou = (drawn.astype(bool) & mask).sum() / (drawn.astype(bool) | mask).sum()
    assert iou > 0.97


def test_max_points_is_met_by_a_search_on_epsilon() -> None:
    mask = disc(300, 400, 200, 150, 120)
    fine = polygons(mask, epsilon=1.0, max_points=10_000)[0]
    assert len(fine) > 20
    (coarse,) = polygons(mask, epsilon=1.0, max_points=12)
    assert 8 <= len(coarse) <= 12  # the search keeps as much detail as fits
    frac = polygons(mask, epsilon=0.05, max_points=100)[0]  # 5 % of the perimeter
    assert len(frac) < len(polygons(mask, epsilon=0.001, max_points=100)[0])
    # A fraction too coarse for the outline is refined instead of losing the blob.
    assert len(polygons(mask, epsilon=0.9, max_points=100)[0]) >= 3


def test_one_polygon_per_blob_and_none_for_specks() -> None:
    mask = two_blobs()
    mask[90, 5] = True  # a one-pixel speck has no area to outline
    assert len(polygons(mask)) == 2
    assert polygons(np.zeros((10, 10), bool)) == []


def test_regions_are_in_percent_of_the_mask_size() -> None:
    mask = np.zeros((200, 400), bool)
    mask[50:150, 100:300] = True
    control = Control("out", "RectangleLabels", "image", ("object",))
    (rect,) = rectangle_regions(mask, 0.8, control, "image", "object")
    assert rect["value"] == {
        "x": 25.0,
        "y": 25.0,
        "width": 50.0,
        "height": 50.0,
        "rotation": 0,
        "rectanglelabels": ["object"],
    }
    assert (rect["original_width"], rect["original_height"], rect["type"]) == (400, 200, "rectanglelabels")
    poly_control = Control("out", "Polygon", "image", ())
    (poly,) = polygon_regions(mask, 0.8, poly_control, "image", "ignored")
    assert "polygonlabels" not in poly["value"] and poly["value"]["closed"] is True
    xs = [p[0] for p in poly["value"]["points"]]
    ys = [p[1] for p in poly["value"]["points"]]
    assert min(xs) == 100.5 / 4 and max(xs) == 299.5 / 4 and min(ys) == 50.5 / 2 and max(ys) == 149.5 / 2
