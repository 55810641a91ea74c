"""The probe's prompt: command-line geometry -> pixels -> Label Studio context regions.

Numbers follow one rule per geometry: all integers are pixels, all decimals are fractions of
the image (x of the width, y of the height). A box is `x, y, w, h` from its top-left corner in
both units (the reference probe's fractions were centre-based; one convention is easier to
remember and is the one Label Studio itself uses). Mixing the two in one geometry is refused,
because `0.5` and `1` next to each other is almost always a typo.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from function.adapters.labelstudio.context import BOX_TYPES, POINT_TYPES
from function.env import parse_flag

from .overlay import DrawnPrompt

_INT = re.compile(r"[+-]?\d+")
_NEGATIVE = ("neg", "negative", "-")
_POSITIVE = ("pos", "positive", "+")


class PromptError(ValueError):
    """The prompt given on the command line or in the config cannot be used."""


@dataclass(frozen=True)
class Geometry:
    values: tuple[float, ...]
    fractional: bool

    def pixels(self, width: int, height: int) -> tuple[float, ...]:
        """x-like values (even positions) scale by the width, y-like by the height."""
        if not self.fractional:
            return self.values
        return tuple(v * (width if i % 2 == 0 else height) for i, v in enumerate(self.values))


def parse_geometry(raw: Any, count: int, what: str) -> Geometry:
    """`"10,20"` or `[10, 20]` (pixels) or `"0.5,0.25"` / `[0.5, 0.25]` (fractions)."""
    if isinstance(raw, str):
        tokens = [t.strip() for t in raw.split(",")]
        try:
            values = [int(t) if _INT.fullmatch(t) else float(t) for t in tokens]
        except ValueError:
            raise PromptError(f"{what} {raw!r}: expected {count} comma-separated numbers") from None
    elif isinstance(raw, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw
    ):
        values = list(raw)
    else:
        raise PromptError(f"{what} {raw!r}: expected {count} numbers")
    if len(values) != count:
        raise PromptError(f"{what} {raw!r}: expected {count} numbers, got {len(values)}")
    kinds = {isinstance(v, int) for v in values}
    if len(kinds) > 1:
        raise PromptError(
            f"{what} {raw!r} mixes integers (pixels) and decimals (fractions of the image); "
            "write all as pixels (e.g. 120,80) or all as fractions (e.g. 0.25,0.0)"
        )
    fractional = kinds == {False}
    if fractional and not all(0.0 <= v <= 1.0 for v in values):
        raise PromptError(f"{what} {raw!r}: decimals are fractions of the image and must lie in 0..1")
    return Geometry(tuple(float(v) for v in values), fractional)


def parse_point(raw: str) -> tuple[Geometry, bool]:
    """`X,Y` (positive) or `X,Y,neg` / `X,Y,pos` (also `-` / `+`)."""
    parts = raw.split(",")
    if len(parts) != 3:
        return parse_geometry(raw, 2, "--point"), True
    flag = parts[2].strip().lower()
    if flag not in _NEGATIVE + _POSITIVE:
        raise PromptError(f"--point {raw!r}: the third part must be pos or neg, got {parts[2]!r}")
    return parse_geometry(",".join(parts[:2]), 2, "--point"), flag in _POSITIVE


@dataclass(frozen=True)
class PromptSpec:
    points: tuple[tuple[Geometry, bool], ...] = ()  # (x, y), positive
    box: Geometry | None = None  # x, y, w, h
    label: str = "object"

    @property
    def is_empty(self) -> bool:
        return not self.points and self.box is None

    def drawn(self, width: int, height: int) -> DrawnPrompt:
        pos = [_xy(g.pixels(width, height)) for g, p in self.points if p]
        neg = [_xy(g.pixels(width, height)) for g, p in self.points if not p]
        box = None
        if self.box is not None:
            x, y, w, h = self.box.pixels(width, height)
            box = (x, y, x + w, y + h)
        return DrawnPrompt(pos, neg, box)

    def regions(self, width: int, height: int) -> list[dict[str, Any]]:
        """Label Studio `params.context.result`: smart keypoints and rectangle, in percent."""
        common = {"to_name": "image", "original_width": width, "original_height": height}
        out: list[dict[str, Any]] = []
        px, py = 100.0 / width, 100.0 / height
        if self.box is not None:
            x, y, w, h = self.box.pixels(width, height)
            value = {"x": x * px, "y": y * py, "width": w * px, "height": h * py, "rotation": 0}
            out.append(
                {
                    "type": "rectanglelabels",
                    "from_name": "box",
                    **common,
                    "image_rotation": 0,
                    "value": {**value, "rectanglelabels": [self.label]},
                }
            )
        for geometry, positive in self.points:
            x, y = geometry.pixels(width, height)
            out.append(
                {
                    "type": "keypointlabels",
                    "from_name": "point",
                    **common,
                    "image_rotation": 0,
                    "value": {"x": x * px, "y": y * py, "width": 0.5, "keypointlabels": [self.label]},
                    "is_positive": positive,
                }
            )
        return out


def _xy(values: tuple[float, ...]) -> tuple[float, float]:
    return values[0], values[1]


def _positive(value: Any, item: int) -> bool:
    parsed = value if isinstance(value, bool) else parse_flag(str(value))
    if parsed is None:
        raise PromptError(f"--prompt item {item}: positive must be true or false, got {value!r}")
    return parsed


def build_prompt(points: list[str] | None, box: str | None, prompt: Any, label: str | None) -> PromptSpec:
    """Combine `--point`s, `--box` and `--prompt` (JSON text, an object or a list of them)."""
    parsed = [parse_point(p) for p in points or []]
    boxes = [parse_geometry(box, 4, "--box")] if box else []
    name = label
    if isinstance(prompt, str):
        try:
            prompt = json.loads(prompt)
        except json.JSONDecodeError as exc:
            raise PromptError(f"--prompt is not valid JSON: {exc.msg} at position {exc.pos}") from None
    for i, item in enumerate([prompt] if isinstance(prompt, dict) else prompt or []):
        if not isinstance(item, dict):
            raise PromptError(f"--prompt item {i} must be an object like {{type, label, geometry}}")
        kind = str(item.get("type", "")).lower()
        if kind in POINT_TYPES:
            positive = _positive(item.get("positive", item.get("is_positive", True)), i)
            parsed.append((parse_geometry(item.get("geometry"), 2, f"--prompt item {i} geometry"), positive))
        elif kind in BOX_TYPES:
            boxes.append(parse_geometry(item.get("geometry"), 4, f"--prompt item {i} geometry"))
        else:
            raise PromptError(
                f"--prompt item {i}: type must be KeyPointLabels or RectangleLabels, got {item.get('type')!r}"
            )
        if isinstance(item.get("label"), str) and name is None:
            name = item["label"]
    if len(boxes) > 1:
        raise PromptError("give one box at most (SAM2 takes a single box per object)")
    return PromptSpec(tuple(parsed), boxes[0] if boxes else None, name or "object")
