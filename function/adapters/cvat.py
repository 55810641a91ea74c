"""CVAT interactor: `{image, pos_points, neg_points, obj_bbox}` -> `{mask, bounds, points}`.

CVAT sends the whole frame (base64) on every click. The frame is identified by a hash of its
bytes, so after the first click the features come from the engine's cache and only the
prompt decoder runs. The reply carries only the tight crop of the mask (a full 4000x3000
frame as a JSON list is ~24 MB), its inclusive bounds and the outer polygon of its largest
component in absolute pixel coordinates, which the CVAT UI draws without post-processing.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from function.core.errors import ImageUnreadable
from function.core.geometry import Box
from function.core.images import ImageCache, LoadedImage
from function.core.masks import components, tight_bounds
from function.core.pipeline import Segmenter
from function.core.prompts import Prompt
from function.settings import Settings

from .errors import BadRequest, InvalidInput
from .fields import finite_number

log = logging.getLogger(__name__)

Point = tuple[float, float]
_WHITESPACE = re.compile(rb"\s+")


def empty_result() -> dict[str, Any]:
    """What CVAT expects when nothing is found: a 1x1 zero mask and no polygon, never an
    all-zero mask without points (the UI's `polygons[0]` would throw)."""
    return {"mask": [[0]], "bounds": [0, 0, 0, 0], "points": []}


@dataclass(frozen=True)
class InteractorRequest:
    """A parsed CVAT interactor body, coordinates in pixels of the (EXIF-oriented) frame."""

    image: bytes
    positive: list[Point]
    negative: list[Point]
    box: Box | None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> InteractorRequest:
        """Unknown keys (`threshold`, anything newer CVAT adds) are ignored."""
        if "image" not in body or body["image"] is None:
            raise BadRequest("CVAT request has no 'image' (base64-encoded frame)")
        return cls(
            image=decode_base64_image(body["image"]),
            positive=parse_points(body.get("pos_points"), "pos_points"),
            negative=parse_points(body.get("neg_points"), "neg_points"),
            box=parse_box(body.get("obj_bbox")),
        )


def decode_base64_image(value: Any) -> bytes:
    """Base64 frame bytes; tolerates a `data:image/...;base64,` prefix, line breaks and
    missing padding. Anything else that is not base64 is a 400."""
    if not isinstance(value, str):
        raise BadRequest("'image' must be a base64 string")
    text = value.strip()
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or ";base64" not in head:
            raise BadRequest("'image' data URI must be base64-encoded (data:<mime>;base64,...)")
    try:
        data = base64.b64decode(text, validate=True)  # the fast path: what CVAT sends
    except (binascii.Error, ValueError):
        data = _lenient_b64decode(text)
    if not data:
        raise BadRequest("'image' is empty")
    return data


def _lenient_b64decode(text: str) -> bytes:
    """Line-wrapped, unpadded or URL-safe base64; nothing else."""
    try:
        raw = _WHITESPACE.sub(b"", text.encode("ascii"))
    except UnicodeEncodeError:
        raise BadRequest("'image' is not valid base64") from None
    raw += b"=" * (-len(raw) % 4)
    altchars = b"-_" if (b"-" in raw or b"_" in raw) else None
    try:
        return base64.b64decode(raw, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("'image' is not valid base64") from None


def _pair(value: Any, where: str) -> Point:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise InvalidInput(f"{where} must be an [x, y] pair")
    return finite_number(value[0], f"{where}[0]"), finite_number(value[1], f"{where}[1]")


def parse_points(value: Any, name: str) -> list[Point]:
    """`[[x, y], ...]` in pixels (floats allowed); missing or null means no points."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"{name} must be a list of [x, y] pairs")
    return [_pair(item, f"{name}[{i}]") for i, item in enumerate(value)]


def parse_box(value: Any) -> Box | None:
    """`null`, `[[x1, y1], [x2, y2]]` (older CVAT: the two box clicks) or `[x1, y1, x2, y2]`;
    corners in any order."""
    if value is None or (isinstance(value, list) and not value):
        return None
    if isinstance(value, list) and len(value) == 2:
        (ax, ay), (bx, by) = _pair(value[0], "obj_bbox[0]"), _pair(value[1], "obj_bbox[1]")
    elif isinstance(value, list) and len(value) == 4:
        ax, ay, bx, by = (finite_number(v, f"obj_bbox[{i}]") for i, v in enumerate(value))
    else:
        raise InvalidInput("obj_bbox must be null, [[x1, y1], [x2, y2]] or [x1, y1, x2, y2]")
    return Box.from_corners(ax, ay, bx, by)


class CvatInteractor:
    """Answers CVAT's interactor calls on `POST /` (direct and dashboard invocation alike)."""

    def __init__(self, settings: Settings, segmenter: Segmenter, images: ImageCache) -> None:
        self.settings = settings
        self.segmenter = segmenter
        self.images = images

    def interact(self, body: dict[str, Any]) -> dict[str, Any]:
        request = InteractorRequest.parse(body)
        image = self._load(request.image)
        prompt = Prompt.build(request.positive, request.negative, request.box).validated(
            image.width, image.height, self.settings.max_prompt_points
        )
        if not prompt.can_segment:
            # Negative-only or empty prompt (min_pos_points: 0 lets CVAT send one).
            return empty_result()
        result = self.segmenter.segment(image, prompt)
        reply = render(result.mask)
        log.debug(
            "cvat: %dx%d frame, %d points, box=%s, bounds=%s, features %s",
            image.width,
            image.height,
            len(prompt.points),
            prompt.box is not None,
            reply["bounds"],
            "cached" if result.cached else "encoded",
        )
        return reply

    def _load(self, data: bytes) -> LoadedImage:
        return load_frame(data, self.settings.max_image_pixels, self.images)


def load_frame(data: bytes, max_pixels: int, images: ImageCache) -> LoadedImage:
    """A base64-decoded frame as a cached image; a frame that is no image is a bad request."""
    try:
        image = LoadedImage.from_bytes(data, max_pixels)
    except ImageUnreadable as exc:
        raise BadRequest(f"'image': {exc.message}") from None
    # The shared cache returns the twin already holding decoded pixels, if any.
    return images.add(image)


def render(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool mask -> CVAT's reply: 0/255 int crop, inclusive bounds, outer polygon."""
    bounds = tight_bounds(mask)
    if bounds is None:
        return empty_result()
    x0, y0, x1, y1 = bounds
    crop = mask[y0 : y1 + 1, x0 : x1 + 1]
    height, width = mask.shape
    return {
        "mask": (crop.astype(np.uint8) * 255).tolist(),
        "bounds": [x0, y0, x1, y1],
        "points": _largest_outer_contour(crop, x0, y0, width, height),
    }


def _largest_outer_contour(crop: np.ndarray, dx: int, dy: int, width: int, height: int) -> list[list[float]]:
    """Outer contour of the largest 8-connected component of `crop`, in image pixels.

    Contour points are pixel centres, so they lie inside [0, W-1] x [0, H-1]. A component
    too thin to have an area (a dot or a one-pixel line) gets the outline of its pixels
    instead, so there are always at least three points enclosing it.
    """
    count, labels, stats = components(crop)
    largest = 1 + int(np.argmax(stats[1:count, cv2.CC_STAT_AREA]))
    component = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outline = max(contours, key=lambda c: (cv2.contourArea(c), len(c))).reshape(-1, 2)
    if len(outline) >= 3 and cv2.contourArea(outline) > 0:
        return [[float(x + dx), float(y + dy)] for x, y in outline]
    left, top, w, h = (int(v) for v in stats[largest, :4])
    x0, y0 = max(left + dx - 0.5, 0.0), max(top + dy - 0.5, 0.0)
    x1, y1 = min(left + dx + w - 0.5, width - 1.0), min(top + dy + h - 0.5, height - 1.0)
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
