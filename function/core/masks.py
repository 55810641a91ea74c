"""Pure mask operations: post-processing, connected components, polygons and boxes.

Masks are (H, W) bool arrays in pixels of the original image, pixel `i` covering
`[i, i + 1)`. Components are 8-connected (the background between them 4-connected), as
OpenCV's contour tracing sees them. Work is done on the mask's bounding region only, so a
small object on a 100-megapixel image costs what a small image would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .geometry import Box


@dataclass(frozen=True)
class PostprocessSpec:
    """`postprocess`: applied in the order threshold, fill holes, dilate.

    `mask_size_threshold` t in [0, 1]: keep the components whose area is >= t x the largest
    one's (0 keeps all, 1 only the largest). `dilate`: an int is a radius in pixels, a float a
    fraction of the equivalent-circle radius `sqrt(area / pi)` of the whole mask.
    """

    mask_size_threshold: float = 0.0
    fill_holes: bool = False
    dilate: int | float = 0

    @property
    def is_noop(self) -> bool:
        return self.mask_size_threshold <= 0 and not self.fill_holes and not self.dilate


def tight_bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive (x0, y0, x1, y1) of the set pixels; None when there are none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _roi(mask: np.ndarray, pad: int) -> tuple[slice, slice] | None:
    """Bounding rows/cols of the mask's pixels grown by `pad` (within the image); None if empty."""
    bounds = tight_bounds(mask)
    if bounds is None:
        return None
    x0, y0, x1, y1 = bounds
    h, w = mask.shape
    return slice(max(y0 - pad, 0), min(y1 + 1 + pad, h)), slice(max(x0 - pad, 0), min(x1 + 1 + pad, w))


def components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(count incl. background, labels, stats) of 8-connected components."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return n, labels, stats


def keep_large_components(mask: np.ndarray, threshold: float) -> np.ndarray:
    """Keep the components with area >= `threshold` x the largest component's area."""
    if threshold <= 0:
        return mask
    roi = _roi(mask, 0)
    if roi is None:
        return mask
    n, labels, stats = components(mask[roi])
    if n <= 2:  # background + at most one blob
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= threshold * areas.max()) + 1
    out = np.zeros_like(mask)
    out[roi] = np.isin(labels, keep)
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Set every background pixel that is not 4-connected to the outside of the image."""
    roi = _roi(mask, 1)
    if roi is None:
        return mask
    part = mask[roi]
    # A ring of background around the region stands for everything outside it.
    canvas = np.zeros((part.shape[0] + 2, part.shape[1] + 2), np.uint8)
    canvas[1:-1, 1:-1] = part
    flood = canvas.copy()
    cv2.floodFill(flood, np.zeros((flood.shape[0] + 2, flood.shape[1] + 2), np.uint8), (0, 0), 1)
    out = mask.copy()
    out[roi] = part | (flood[1:-1, 1:-1] == 0)
    return out


def dilation_radius(mask: np.ndarray, dilate: int | float) -> int:
    if isinstance(dilate, bool):
        raise TypeError("dilate must be a number, not a bool")
    if isinstance(dilate, int):
        return max(dilate, 0)
    return max(round(dilate * math.sqrt(int(mask.sum()) / math.pi)), 0)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow the mask by a disc of `radius` pixels (elliptical (2r+1) x (2r+1) kernel)."""
    if radius <= 0:
        return mask
    roi = _roi(mask, radius)
    if roi is None:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    out = mask.copy()
    # Pixels outside the image are background (not the default border replication).
    grown = cv2.dilate(mask[roi].astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    out[roi] = grown.astype(bool)
    return out


def postprocess(mask: np.ndarray, spec: PostprocessSpec) -> np.ndarray:
    mask = np.asarray(mask, bool)
    if spec.is_noop:
        return mask
    mask = keep_large_components(mask, spec.mask_size_threshold)
    if spec.fill_holes:
        mask = fill_holes(mask)
    return dilate(mask, dilation_radius(mask, spec.dilate))


def component_masks(mask: np.ndarray) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Each 8-connected component as (its own bool mask over its bounding box, (x0, y0))."""
    roi = _roi(mask, 0)
    if roi is None:
        return []
    n, labels, stats = components(mask[roi])
    oy, ox = roi[0].start, roi[1].start
    out = []
    for i in range(1, n):
        x, y, w, h = (int(v) for v in stats[i, :4])
        out.append((labels[y : y + h, x : x + w] == i, (ox + x, oy + y)))
    return out


def component_boxes(mask: np.ndarray) -> list[Box]:
    """Bounding box of each component, pixel edges: every mask pixel lies inside its box."""
    return [Box(x, y, x + m.shape[1], y + m.shape[0]) for m, (x, y) in component_masks(mask)]


def _simplify(contour: np.ndarray, epsilon: float, max_points: int) -> np.ndarray:
    """approxPolyDP with `epsilon` (< 1: fraction of the perimeter, >= 1: pixels); if that
    leaves more than `max_points` vertices, the smallest larger tolerance that fits, found by
    bisection (a tolerance of the whole perimeter always fits)."""
    perimeter = cv2.arcLength(contour, True)
    base = epsilon * perimeter if epsilon < 1 else epsilon
    approx = cv2.approxPolyDP(contour, base, True)
    while len(approx) < 3 and len(contour) >= 3 and base > 0.05:
        # Too coarse for this outline (e.g. a large fraction on a thin blob): refine rather
        # than lose the blob.
        base /= 2
        approx = cv2.approxPolyDP(contour, base, True)
    if len(approx) <= max_points:
        return approx
    lo, hi = base, max(base, perimeter)
    best = None
    for _ in range(24):
        mid = (lo + hi) / 2
        candidate = cv2.approxPolyDP(contour, mid, True)
        if len(candidate) <= max_points:
            hi = mid
            best = candidate if len(candidate) >= 3 else best
        else:
            lo = mid
        if hi - lo < 0.01:
            break
    return best if best is not None else cv2.approxPolyDP(contour, hi, True)


def polygons(mask: np.ndarray, epsilon: float = 1.0, max_points: int = 100) -> list[np.ndarray]:
    """Outer outline of each component as an (N, 2) float array of pixel-centre vertices
    (x + 0.5, y + 0.5), N in [3, max_points]; holes are ignored. Outlines that simplify to
    fewer than 3 vertices (blobs a pixel or two wide) are dropped."""
    roi = _roi(mask, 0)
    if roi is None:
        return []
    contours, _ = cv2.findContours(mask[roi].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    offset = np.array([roi[1].start + 0.5, roi[0].start + 0.5])
    out = []
    for contour in contours:
        approx = _simplify(contour, epsilon, max_points)
        if len(approx) >= 3:
            out.append(approx.reshape(-1, 2).astype(np.float64) + offset)
    return out
