"""Masks -> Label Studio result regions (brush RLE, polygons, rectangles).

Everything is in percent of the decoded image, whose size is the mask's shape. `*Labels`
controls carry the label under their type's key; unlabeled controls carry none.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from function.core.geometry import Box
from function.core.masks import component_boxes, polygons

from .brush import mask_to_rle
from .interface import Control
from .params import ReturnFormat


def region_id() -> str:
    return secrets.token_hex(5)


def _region(
    value: dict[str, Any],
    shape: tuple[int, ...],
    score: float,
    control: Control,
    to_name: str,
    label: str | None,
) -> dict[str, Any]:
    kind = control.tag.lower()
    if control.carries_label:
        value[kind] = [label] if label is not None else []
    h, w = shape[:2]
    return {
        "id": region_id(),
        "from_name": control.name,
        "to_name": to_name,
        "original_width": int(w),
        "original_height": int(h),
        "image_rotation": 0,
        "value": value,
        "score": float(score),
        "type": kind,
        "readonly": False,
    }


def brush_region(
    mask: np.ndarray, score: float, control: Control, to_name: str, label: str | None
) -> dict[str, Any]:
    """One brush region whose RLE covers exactly the mask's W x H pixels."""
    value: dict[str, Any] = {"format": "rle", "rle": mask_to_rle(mask.astype(bool, copy=False))}
    return _region(value, mask.shape, score, control, to_name, label)


def polygon_regions(
    mask: np.ndarray,
    score: float,
    control: Control,
    to_name: str,
    label: str | None,
    epsilon: float = 1.0,
    max_points: int = 100,
) -> list[dict[str, Any]]:
    """One closed polygon per component of the mask, vertices in percent (inside 0-100)."""
    h, w = mask.shape
    scale = np.array([100.0 / w, 100.0 / h])
    out = []
    for outline in polygons(mask, epsilon, max_points):
        points = np.clip(outline * scale, 0.0, 100.0).tolist()
        value: dict[str, Any] = {"points": points, "closed": True}
        out.append(_region(value, mask.shape, score, control, to_name, label))
    return out


def box_region(
    box: Box, shape: tuple[int, ...], score: float, control: Control, to_name: str, label: str | None
) -> dict[str, Any]:
    """One rectangle for a pixel box, clipped to the image of `shape` (H, W), in percent."""
    h, w = shape[:2]
    b = box.clipped(w, h)
    value: dict[str, Any] = {
        "x": b.x0 * 100.0 / w,
        "y": b.y0 * 100.0 / h,
        "width": b.width * 100.0 / w,
        "height": b.height * 100.0 / h,
        "rotation": 0,
    }
    return _region(value, shape, score, control, to_name, label)


def rectangle_regions(
    mask: np.ndarray, score: float, control: Control, to_name: str, label: str | None
) -> list[dict[str, Any]]:
    """One rectangle per component of the mask, bounding all its pixels, in percent."""
    h, w = mask.shape
    out = []
    for box in component_boxes(mask):
        value: dict[str, Any] = {
            "x": box.x0 * 100.0 / w,
            "y": box.y0 * 100.0 / h,
            "width": box.width * 100.0 / w,
            "height": box.height * 100.0 / h,
            "rotation": 0,
        }
        out.append(_region(value, mask.shape, score, control, to_name, label))
    return out


def mask_regions(
    mask: np.ndarray, score: float, control: Control, to_name: str, label: str | None, fmt: ReturnFormat
) -> list[dict[str, Any]]:
    """The regions for `control`'s type (BrushLabels may be answered by a Brush control)."""
    kind = control.tag.lower()
    if kind.startswith("polygon"):
        return polygon_regions(mask, score, control, to_name, label, fmt.epsilon, fmt.max_points)
    if kind.startswith("rectangle"):
        return rectangle_regions(mask, score, control, to_name, label)
    return [brush_region(mask, score, control, to_name, label)]
