"""`extra_params` from /setup -> validated per-project options.

The schema of SAM2Plus (see README "Per-project options"), validated strictly: keys in dash
or underscore form (not both), unknown keys rejected with their path, bools never taken for
numbers, ints and floats with distinct meanings where both are allowed. Every error is a
`BadRequest` whose message starts with the key path, e.g.
`extra_params.subpatching.patch_size: must be ...`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from PIL import ImageColor

from function.core.detector import TextPrompt, TextPromptError
from function.core.geometry import PatchMode, PatchSpec, ResizeSpec
from function.core.masks import PostprocessSpec

from ..errors import BadRequest
from ..fields import finite_number, kind
from .interface import OUTPUT_TYPES

POLYGON_TYPES = ("PolygonLabels", "Polygon")
MIN_SIDE, MAX_SIDE = 16, 16384  # fullframe_resize and patch sides, pixels
MAX_DILATE_PX, MAX_DILATE_FRACTION = 1000, 10.0
MAX_POLYGON_POINTS = 10_000


@dataclass(frozen=True)
class ReturnFormat:
    type: str = "BrushLabels"
    epsilon: float = 1.0  # < 1: fraction of the outline's perimeter; >= 1: pixels
    max_points: int = 100

    @property
    def is_polygon(self) -> bool:
        return self.type in POLYGON_TYPES


@dataclass(frozen=True)
class TextPromptOptions:
    """`extra_params.text_prompt`: the project's default prompt (batch pre-annotation) and
    thresholds (None: the deployment's defaults)."""

    default: TextPrompt | None = None
    box_threshold: float | None = None
    text_threshold: float | None = None


@dataclass(frozen=True)
class VideoOptions:
    """Video tracking per project: frames per object and request (None: the deployment's
    MAX_FRAMES_TO_TRACK), and the direction from each object's prompt keyframe."""

    max_frames_to_track: int | None = None
    reverse: bool = False


@dataclass(frozen=True)
class Options:
    return_format: ReturnFormat = field(default_factory=ReturnFormat)
    fullframe_resize: ResizeSpec | None = None
    subpatching: PatchSpec | None = None
    postprocess: PostprocessSpec = field(default_factory=PostprocessSpec)
    video: VideoOptions = field(default_factory=lambda: VideoOptions())
    text_prompt: TextPromptOptions = field(default_factory=TextPromptOptions)

    @property
    def return_type(self) -> str:
        return self.return_format.type


def decode_extra_params(value: Any) -> dict[str, Any]:
    """Object, JSON string, empty string or null -> dict; anything else is a 400."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BadRequest(
                f"extra_params must be valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
    if not isinstance(value, dict):
        raise BadRequest("extra_params must be a JSON object")
    return value


# -- generic checks ------------------------------------------------------------------------


def _fail(path: str, message: str) -> BadRequest:
    return BadRequest(f"{path}: {message}")


def _keys(raw: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """An object with dash/underscore keys normalised to underscores, unknown keys refused."""
    if not isinstance(raw, dict):
        raise _fail(path, f"must be an object, got {kind(raw)}")
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in raw.items():
        norm = str(key).replace("-", "_")
        if norm in out:
            raise _fail(path, f"both {spelled[norm]!r} and {key!r} given; use one spelling")
        out[norm], spelled[norm] = value, str(key)
    unknown = [spelled[k] for k in out if k not in allowed]
    if unknown:
        raise _fail(
            path,
            f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}",
        )
    return out


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"must be an integer, got {kind(value)}")
    if not lo <= value <= hi:
        raise _fail(path, f"must be between {lo} and {hi}, got {value}")
    return value


def _number(value: Any, path: str, lo: float, hi: float) -> float:
    return finite_number(value, path, lo=lo, hi=hi, error=BadRequest)


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, f"must be true or false, got {kind(value)}")
    return value


def _size(value: Any, path: str, what: str) -> tuple[int, int]:
    """An int (square) or [width, height] of ints, each side in [MIN_SIDE, MAX_SIDE]."""
    if isinstance(value, list):
        if len(value) != 2:
            raise _fail(path, "a list must be [width, height]")
        return (
            _int(value[0], f"{path}[0]", MIN_SIDE, MAX_SIDE),
            _int(value[1], f"{path}[1]", MIN_SIDE, MAX_SIDE),
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"must be {what} or [width, height], got {kind(value)}")
    side = _int(value, path, MIN_SIDE, MAX_SIDE)
    return side, side


# -- sections ------------------------------------------------------------------------------


def _fullframe_resize(value: Any, path: str) -> ResizeSpec:
    if isinstance(value, float):
        if not (math.isfinite(value) and 0 < value <= 1):
            raise _fail(path, f"a float is a scale and must be in (0, 1], got {value!r}")
        return ResizeSpec(scale=value)
    if isinstance(value, int) and not isinstance(value, bool) and value < MIN_SIDE:
        raise _fail(
            path,
            f"an integer is the side of a square in pixels (>= {MIN_SIDE}), got {value}; "
            "for a scale write a float such as 0.5 or 1.0",
        )
    return ResizeSpec(size=_size(value, path, "a float scale in (0, 1], an integer square side"))


def _subpatching(value: Any, path: str) -> PatchSpec | None:
    if value is None or value is False:
        return None
    if value is True:
        return PatchSpec()
    raw = _keys(value, path, ("patch_size", "mode", "padding_fill", "allow_oversize", "oversize_padding"))
    spec = PatchSpec()
    size = _size(raw["patch_size"], f"{path}.patch_size", "an integer") if "patch_size" in raw else spec.size
    mode: PatchMode = spec.mode
    if "mode" in raw:
        m = raw["mode"]
        if not isinstance(m, str) or m.lower() not in ("default", "padding"):
            raise _fail(f"{path}.mode", f"must be 'default' or 'padding', got {m!r}")
        mode = "padding" if m.lower() == "padding" else "default"
    fill = spec.fill
    if "padding_fill" in raw:
        fill = _colour(raw["padding_fill"], f"{path}.padding_fill")
    allow = _bool(raw["allow_oversize"], f"{path}.allow_oversize") if "allow_oversize" in raw else True
    pad = spec.oversize_padding
    if "oversize_padding" in raw:
        pad = _number(raw["oversize_padding"], f"{path}.oversize_padding", 0.0, 1.0)
    return PatchSpec(size, mode, fill, allow, pad)


def _colour(value: Any, path: str) -> tuple[int, int, int]:
    if not isinstance(value, str):
        raise _fail(
            path, f"must be a colour name or hex string such as 'black' or '#808080', got {kind(value)}"
        )
    try:
        rgb = ImageColor.getrgb(value)
    except ValueError:
        raise _fail(
            path, f"unknown colour {value!r}; use a name such as 'black' or a hex '#808080'"
        ) from None
    return (rgb[0], rgb[1], rgb[2])


def _return_format(value: Any, path: str) -> ReturnFormat:
    raw = _keys(value, path, ("type", "epsilon", "max_points"))
    kind = raw.get("type", ReturnFormat.type)
    by_lower = {t.lower(): t for t in OUTPUT_TYPES}
    if not isinstance(kind, str) or kind.lower() not in by_lower:
        raise _fail(f"{path}.type", f"must be one of {', '.join(OUTPUT_TYPES)}, got {kind!r}")
    fmt = ReturnFormat(type=by_lower[kind.lower()])
    for key in ("epsilon", "max_points"):
        if key in raw and not fmt.is_polygon:
            raise _fail(f"{path}.{key}", f"applies to polygon types only ({', '.join(POLYGON_TYPES)})")
    epsilon = fmt.epsilon
    if "epsilon" in raw:
        epsilon = _number(raw["epsilon"], f"{path}.epsilon", 0.0, 1e6)
        if epsilon <= 0:
            raise _fail(f"{path}.epsilon", "must be > 0 (< 1: fraction of the perimeter, >= 1: pixels)")
    points = fmt.max_points
    if "max_points" in raw:
        points = _int(raw["max_points"], f"{path}.max_points", 3, MAX_POLYGON_POINTS)
    return ReturnFormat(fmt.type, epsilon, points)


def _postprocess(value: Any, path: str, fmt: ReturnFormat) -> PostprocessSpec:
    raw = {} if value is None else _keys(value, path, ("mask_size_threshold", "fill_holes", "dilate"))
    threshold = 0.0
    if "mask_size_threshold" in raw:
        threshold = _number(raw["mask_size_threshold"], f"{path}.mask_size_threshold", 0.0, 1.0)
    fill = fmt.is_polygon  # polygons have no holes: always filled for polygon types
    if "fill_holes" in raw:
        fill = _bool(raw["fill_holes"], f"{path}.fill_holes")
        if fmt.is_polygon and not fill:
            raise _fail(f"{path}.fill_holes", f"cannot be false with return_format.type {fmt.type}")
    grow: int | float = 0
    if "dilate" in raw:
        d = raw["dilate"]
        if isinstance(d, float):
            grow = _number(d, f"{path}.dilate", 0.0, MAX_DILATE_FRACTION)
        else:
            grow = _int(d, f"{path}.dilate", 0, MAX_DILATE_PX)
    return PostprocessSpec(threshold, fill, grow)


def _text_prompt(value: Any, path: str) -> TextPromptOptions:
    raw = _keys(value, path, ("default", "box_threshold", "text_threshold"))
    default = None
    if raw.get("default") is not None:
        try:
            default = TextPrompt.parse(raw["default"])
        except TextPromptError as exc:
            raise _fail(f"{path}.default", exc.message) from None
    box = text = None
    if raw.get("box_threshold") is not None:
        box = _number(raw["box_threshold"], f"{path}.box_threshold", 0.0, 1.0)
    if raw.get("text_threshold") is not None:
        text = _number(raw["text_threshold"], f"{path}.text_threshold", 0.0, 1.0)
    return TextPromptOptions(default, box, text)


TOP_LEVEL_KEYS = (
    "fullframe_resize",
    "subpatching",
    "postprocess",
    "return_format",
    "max_frames_to_track",
    "track_direction",
    "text_prompt",
)
MAX_FRAMES_TO_TRACK = 100_000  # the deployment's MAX_FRAMES_PER_REQUEST caps it further


def parse_options(raw: dict[str, Any]) -> Options:
    """Validated, typed options; BadRequest (400) naming the key path otherwise."""
    params = _keys(raw, "extra_params", TOP_LEVEL_KEYS)
    fmt = ReturnFormat()
    if params.get("return_format") is not None:
        fmt = _return_format(params["return_format"], "extra_params.return_format")
    post = _postprocess(params.get("postprocess"), "extra_params.postprocess", fmt)
    resize = None
    if params.get("fullframe_resize") is not None:
        resize = _fullframe_resize(params["fullframe_resize"], "extra_params.fullframe_resize")
    patch = _subpatching(params.get("subpatching"), "extra_params.subpatching")
    frames = params.get("max_frames_to_track")
    if frames is not None:
        frames = _int(frames, "extra_params.max_frames_to_track", 1, MAX_FRAMES_TO_TRACK)
    direction = params.get("track_direction", "forward")
    if direction not in ("forward", "reverse"):
        raise _fail("extra_params.track_direction", f"must be 'forward' or 'reverse', got {direction!r}")
    text = TextPromptOptions()
    if params.get("text_prompt") is not None:
        text = _text_prompt(params["text_prompt"], "extra_params.text_prompt")
    return Options(fmt, resize, patch, post, VideoOptions(frames, direction == "reverse"), text)
