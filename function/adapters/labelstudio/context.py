"""Interactive context regions (`params.context.result`) -> a pixel prompt and its label."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from function.core.geometry import Box
from function.core.prompts import Prompt

from ..errors import InvalidInput
from ..fields import finite_number, flag

POINT_TYPES = ("keypointlabels", "keypoint")
BOX_TYPES = ("rectanglelabels", "rectangle")
TEXT_TYPES = ("textarea", "number")  # a text prompt and its thresholds: see text.py


@dataclass(frozen=True)
class PromptRegions:
    """Smart regions of one request, still in Label Studio percent coordinates."""

    positive: tuple[tuple[float, float], ...]
    negative: tuple[tuple[float, float], ...]
    box: tuple[float, float, float, float] | None  # percent x0, y0, x1, y1
    label: str | None
    to_name: str | None

    @property
    def is_empty(self) -> bool:
        return not self.positive and not self.negative and self.box is None

    def to_prompt(self, width: int, height: int) -> Prompt:
        """Percent -> pixels of the decoded image (floats, never truncated)."""
        sx, sy = width / 100.0, height / 100.0
        box = None
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            box = Box.from_corners(x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        return Prompt.build(
            [(x * sx, y * sy) for x, y in self.positive],
            [(x * sx, y * sy) for x, y in self.negative],
            box,
        )


def _is_positive(region: dict[str, Any]) -> bool:
    """`is_positive` (smart keypoints) or `value.positive` (Enterprise); absent = positive."""
    for value in (region.get("is_positive"), (region.get("value") or {}).get("positive")):
        if value is not None:
            return flag(value, "is_positive")
    return True


def _rotated_bounds(
    x: float, y: float, w: float, h: float, degrees: float, W: int, H: int
) -> tuple[float, float, float, float]:
    """Axis-aligned bounds (percent) of a box rotated clockwise around its top-left corner.

    Rotation happens in pixel space (percent axes have different scales)."""
    px, py, pw, ph = x * W / 100, y * H / 100, w * W / 100, h * H / 100
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    xs = [px + dx * c - dy * s for dx, dy in ((0, 0), (pw, 0), (0, ph), (pw, ph))]
    ys = [py + dx * s + dy * c for dx, dy in ((0, 0), (pw, 0), (0, ph), (pw, ph))]
    return (min(xs) * 100 / W, min(ys) * 100 / H, max(xs) * 100 / W, max(ys) * 100 / H)


def parse_regions(result: Any) -> PromptRegions:
    """Keypoints and rectangles in creation order; the last rectangle is the box."""
    if not isinstance(result, list):
        raise InvalidInput("params.context.result must be a list")
    positive: list[tuple[float, float]] = []
    negative: list[tuple[float, float]] = []
    box: tuple[float, float, float, float] | None = None
    label = to_name = None
    for i, region in enumerate(result):
        if not isinstance(region, dict):
            raise InvalidInput(f"context.result[{i}] must be an object")
        kind = str(region.get("type", "")).lower()
        value = region.get("value")
        if kind in TEXT_TYPES:
            continue
        if kind not in POINT_TYPES + BOX_TYPES:
            raise InvalidInput(
                f"context.result[{i}].type {region.get('type')!r} is not a keypoint or rectangle prompt"
            )
        if not isinstance(value, dict):
            raise InvalidInput(f"context.result[{i}].value must be an object")
        x = finite_number(value.get("x"), f"context.result[{i}].value.x")
        y = finite_number(value.get("y"), f"context.result[{i}].value.y")
        if kind in POINT_TYPES:
            (positive if _is_positive(region) else negative).append((x, y))
        else:
            w = finite_number(value.get("width"), f"context.result[{i}].value.width")
            h = finite_number(value.get("height"), f"context.result[{i}].value.height")
            rotation = finite_number(value.get("rotation", 0) or 0, f"context.result[{i}].value.rotation")
            if rotation % 360:
                W = int(
                    finite_number(region.get("original_width") or 100, f"context.result[{i}].original_width")
                )
                H = int(
                    finite_number(
                        region.get("original_height") or 100, f"context.result[{i}].original_height"
                    )
                )
                box = _rotated_bounds(x, y, w, h, rotation, max(W, 1), max(H, 1))
            else:
                box = (x, y, x + w, y + h)
        labels = value.get(kind) or value.get("labels")
        if isinstance(labels, list) and labels and isinstance(labels[0], str):
            label = labels[0]
        if isinstance(region.get("to_name"), str):
            to_name = region["to_name"]
    return PromptRegions(tuple(positive), tuple(negative), box, label, to_name)
