"""Label Studio result regions -> pictures: an overlay of the whole image and one cut-out per region.

Works from the result JSON alone (what Label Studio would get), so it shows exactly what an
annotator would see: brush RLE decoded with the SDK's own decoder, polygons and rectangles
from their percent coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

# Region colours (RGB), reused in turn; chosen to stay visible on photos.
PALETTE = ((255, 64, 160), (0, 200, 255), (255, 190, 0), (140, 90, 255), (0, 220, 120))
POSITIVE_COLOUR, NEGATIVE_COLOUR, BOX_COLOUR = (40, 220, 60), (235, 40, 40), (255, 230, 0)
MASK_ALPHA = 0.45


class RegionError(ValueError):
    """A result region this renderer cannot draw (unknown type or malformed value)."""


@dataclass(frozen=True)
class RegionShape:
    """One region in image pixels: its filled area and the outlines to draw."""

    kind: str  # brush | polygon | rectangle
    mask: np.ndarray  # (H, W) bool
    outlines: tuple[np.ndarray, ...]  # each (N, 2) float pixel coordinates, closed

    @property
    def bbox(self) -> tuple[int, int, int, int] | None:
        """Tight (x0, y0, x1, y1), exclusive ends; None for an empty region."""
        ys, xs = np.nonzero(self.mask)
        if xs.size == 0:
            return None
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@dataclass(frozen=True)
class DrawnPrompt:
    """The prompt in image pixels, for drawing."""

    positive: Sequence[tuple[float, float]] = ()
    negative: Sequence[tuple[float, float]] = ()
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1


def _kind(region: dict[str, Any], value: dict[str, Any]) -> str:
    """brush, polygon or rectangle, read from the value's shape (its keys say how to draw it)."""
    if "rle" in value:
        return "brush"
    if "points" in value:
        return "polygon"
    if "width" in value and "height" in value and "x" in value:
        return "rectangle"
    raise RegionError(f"cannot draw a region of type {region.get('type')!r} (no rle, points or box)")


def _brush_mask(value: dict[str, Any], width: int, height: int) -> np.ndarray:
    from label_studio_sdk.converter.brush import decode_rle

    if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
        raise RegionError("brush region has no RLE list")
    flat = decode_rle(value["rle"])
    if flat.size != width * height * 4:
        raise RegionError(f"brush RLE holds {flat.size // 4} pixels, the image has {width * height}")
    return np.asarray(flat.reshape(height, width, 4)[:, :, 3] > 127)


def _fill(outline: np.ndarray, width: int, height: int) -> np.ndarray:
    canvas = np.zeros((height, width), np.uint8)
    cv2.fillPoly(canvas, [np.round(outline).astype(np.int32)], 1)
    return canvas.astype(bool)


def region_shape(region: dict[str, Any], width: int, height: int) -> RegionShape:
    """Decode one Label Studio result region for an image of `width` x `height` pixels."""
    value = region.get("value")
    if not isinstance(value, dict):
        raise RegionError("region has no value object")
    kind = _kind(region, value)
    sx, sy = width / 100.0, height / 100.0
    try:
        if kind == "brush":
            mask = _brush_mask(value, width, height)
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            outlines = tuple(c.reshape(-1, 2).astype(float) for c in contours)
            return RegionShape(kind, mask, outlines)
        if kind == "polygon":
            outline = np.array([(float(x) * sx, float(y) * sy) for x, y in value["points"]], float)
        else:
            x, y = float(value["x"]) * sx, float(value["y"]) * sy
            w, h = float(value["width"]) * sx, float(value["height"]) * sy
            outline = np.array([(x, y), (x + w, y), (x + w, y + h), (x, y + h)], float)
    except (KeyError, TypeError, ValueError) as exc:
        raise RegionError(f"malformed {kind} region value: {exc!r}") from None
    if len(outline) < 3:
        raise RegionError("polygon region has fewer than 3 points")
    return RegionShape(kind, _fill(outline, width, height), (outline,))


def render_overlay(image: np.ndarray, shapes: Sequence[RegionShape], prompt: DrawnPrompt) -> Image.Image:
    """The image with each region tinted and outlined in its colour, then the prompt on top."""
    out = image.astype(np.float32)
    for i, shape in enumerate(shapes):
        colour = np.array(PALETTE[i % len(PALETTE)], np.float32)
        if shape.kind != "rectangle":  # a box stays see-through: its outline says it all
            out[shape.mask] = out[shape.mask] * (1 - MASK_ALPHA) + colour * MASK_ALPHA
    canvas = Image.fromarray(out.round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(max(image.shape[:2]) / 400))
    for i, shape in enumerate(shapes):
        for outline in shape.outlines:
            if len(outline) >= 2:
                points = [(float(x), float(y)) for x, y in outline]
                draw.line([*points, points[0]], fill=PALETTE[i % len(PALETTE)], width=line)
    _draw_prompt(draw, prompt, line)
    return canvas


def _draw_prompt(draw: ImageDraw.ImageDraw, prompt: DrawnPrompt, line: int) -> None:
    if prompt.box is not None:
        draw.rectangle(prompt.box, outline=BOX_COLOUR, width=line)
    radius = 3 * line + 2
    for points, colour in ((prompt.positive, POSITIVE_COLOUR), (prompt.negative, NEGATIVE_COLOUR)):
        for x, y in points:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour, outline="white")


def render_cutout(image: np.ndarray, shape: RegionShape, margin: int = 0) -> Image.Image | None:
    """The region's tight crop as RGBA, transparent outside the region (None if empty).

    A rectangle keeps its whole crop opaque: the box is the answer, not a shape inside it."""
    bbox = shape.bbox
    if bbox is None:
        return None
    h, w = shape.mask.shape
    x0, y0, x1, y1 = bbox
    x0, y0, x1, y1 = max(0, x0 - margin), max(0, y0 - margin), min(w, x1 + margin), min(h, y1 + margin)
    rgb = image[y0:y1, x0:x1]
    inside = np.ones(rgb.shape[:2], bool) if shape.kind == "rectangle" else shape.mask[y0:y1, x0:x1]
    alpha = np.where(inside, 255, 0).astype(np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
