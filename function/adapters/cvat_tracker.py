"""CVAT tracker (`type: tracker`): `{image, shapes, states}` -> `{shapes, states}`.

One frame per call. An object with a shape and no state starts a track on this frame (init);
an object with a state continues its track on this frame. The memory bank stays server-side
(`core.tracking`); the state CVAT signs and sends back is a small JSON naming the session, the
step and the object, plus the shape type to answer with. Rectangles are box prompts and come
back as the mask's bounding box; polygons and masks are mask prompts and come back as a
polygon (largest outline) or a CVAT mask (run lengths over the bounding-box crop).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import cv2
import numpy as np

from function.core.errors import ImageUnreadable
from function.core.geometry import Box
from function.core.images import ImageCache, LoadedImage
from function.core.masks import polygons, tight_bounds
from function.core.pipeline import Segmenter
from function.core.tracking.errors import TrackingLimit
from function.core.tracking.model import TrackedMask, TrackPrompt
from function.core.tracking.session import StateRef
from function.core.tracking.tracker import Frame, Tracker
from function.settings import Settings

from .cvat import decode_base64_image
from .errors import BadRequest, InvalidInput
from .fields import finite_number

log = logging.getLogger(__name__)

SHAPE_TYPES = ("rectangle", "polygon", "mask")
STATE_VERSION = 1
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def parse_shape(shape: Any, i: int, width: int, height: int) -> tuple[str, TrackPrompt]:
    """A typed shape `{type, points}` or a legacy bare rectangle `[xtl, ytl, xbr, ybr]`."""
    where = f"shapes[{i}]"
    kind: Any
    points: Any
    if isinstance(shape, list):
        kind, points = "rectangle", shape
    elif isinstance(shape, dict):
        kind, points = shape.get("type"), shape.get("points")
        if kind not in SHAPE_TYPES:
            raise InvalidInput(f"{where}.type must be one of {', '.join(SHAPE_TYPES)}, got {kind!r}")
        if not isinstance(points, list):
            raise InvalidInput(f"{where}.points must be a list of numbers")
    else:
        raise InvalidInput(f"{where} must be a shape object, a point list or null")
    values = [finite_number(v, f"{where}.points[{j}]") for j, v in enumerate(points)]
    if kind == "rectangle":
        if len(values) != 4:
            raise InvalidInput(f"{where}: a rectangle has 4 numbers [xtl, ytl, xbr, ybr]")
        box = Box.from_corners(*values).clipped(width, height)
        if box.width <= 0 or box.height <= 0:
            raise InvalidInput(f"{where}: the rectangle is empty or outside the frame")
        return kind, TrackPrompt(box=box)
    mask = (
        _polygon_mask(values, width, height, where)
        if kind == "polygon"
        else _decode_mask(values, width, height, where)
    )
    if not mask.any():
        raise InvalidInput(f"{where}: the {kind} covers no pixel of the frame")
    return kind, TrackPrompt(mask=mask)


def _polygon_mask(values: list[float], width: int, height: int, where: str) -> np.ndarray:
    if len(values) < 6 or len(values) % 2:
        raise InvalidInput(f"{where}: a polygon has at least 3 [x, y] vertices")
    mask = np.zeros((height, width), np.uint8)
    vertices = np.round(np.array(values).reshape(-1, 2) * 16).astype(np.int32)  # 1/16 pixel
    cv2.fillPoly(mask, [vertices], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _decode_mask(values: list[float], width: int, height: int, where: str) -> np.ndarray:
    if len(values) < 5 or any(v != int(v) or v < 0 for v in values):
        raise InvalidInput(f"{where}: a mask is non-negative integer runs then [left, top, right, bottom]")
    *runs, left, top, right, bottom = (int(v) for v in values)
    if not (0 <= left <= right < width and 0 <= top <= bottom < height):
        raise InvalidInput(
            f"{where}: the mask's crop [{left}, {top}, {right}, {bottom}] is outside the frame"
        )
    cw, ch = right - left + 1, bottom - top + 1
    if sum(runs) != cw * ch:
        raise InvalidInput(f"{where}: the mask's runs add up to {sum(runs)}, not {cw}x{ch} = {cw * ch}")
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    mask = np.zeros((height, width), bool)
    mask[top : bottom + 1, left : right + 1] = flat.reshape(ch, cw)
    return mask


def encode_mask(mask: np.ndarray) -> list[int] | None:
    """CVAT's mask points: runs over the bounding-box crop starting with background, then bounds."""
    bounds = tight_bounds(mask)
    if bounds is None:
        return None
    x0, y0, x1, y1 = bounds
    crop = mask[y0 : y1 + 1, x0 : x1 + 1].ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(crop)) + 1
    runs = np.diff(np.concatenate(([0], edges, [crop.size]))).tolist()
    if crop[0]:
        runs.insert(0, 0)
    return [int(r) for r in runs] + [x0, y0, x1, y1]


def render_shape(kind: str, result: TrackedMask) -> dict[str, Any] | None:
    """The tracked mask as a shape of `kind`; None when the object is lost."""
    if not result.present:
        return None
    if kind == "rectangle":
        bounds = tight_bounds(result.mask)
        if bounds is None:
            return None
        x0, y0, x1, y1 = bounds
        return {"type": "rectangle", "points": [float(x0), float(y0), float(x1 + 1), float(y1 + 1)]}
    if kind == "polygon":
        outlines = polygons(result.mask, epsilon=1.0, max_points=200)
        if not outlines:
            return None
        largest = max(outlines, key=lambda p: abs(cv2.contourArea(p.astype(np.float32))))
        return {"type": "polygon", "points": [round(float(v), 2) for v in largest.ravel()]}
    points = encode_mask(result.mask)
    return None if points is None else {"type": "mask", "points": points}


def parse_state(state: Any, i: int) -> tuple[StateRef, str, str]:
    """(session step, object key, shape type) from a state this function returned."""
    if (
        not isinstance(state, dict)
        or state.get("v") != STATE_VERSION
        or not isinstance(state.get("session"), str)
        or not _SESSION_ID.match(state["session"])
        or isinstance(state.get("step"), bool)
        or not isinstance(state.get("step"), int)
        or state["step"] < 0
        or not isinstance(state.get("object"), str)
        or len(state["object"]) > 16
        or state.get("type") not in SHAPE_TYPES
    ):
        raise BadRequest(f"states[{i}] is not a state of this tracker")
    return StateRef(state["session"], state["step"]), state["object"], state["type"]


def make_state(ref: StateRef, key: str, kind: str) -> dict[str, Any]:
    return {"v": STATE_VERSION, "session": ref.session, "step": ref.step, "object": key, "type": kind}


class CvatTracker:
    def __init__(
        self, settings: Settings, tracker: Tracker, segmenter: Segmenter, images: ImageCache
    ) -> None:
        self.settings = settings
        self.tracker = tracker
        self.segmenter = segmenter
        self.images = images

    def track(self, body: dict[str, Any]) -> dict[str, Any]:
        shapes, states = body.get("shapes") or [], body.get("states") or []
        if not isinstance(shapes, list) or not isinstance(states, list):
            raise BadRequest("'shapes' and 'states' must be lists")
        count = max(len(shapes), len(states))
        if count > self.tracker.max_objects:
            raise TrackingLimit(
                f"{count} objects in one call; the limit is {self.tracker.max_objects} (TRACKING_MAX_OBJECTS)"
            )
        if body.get("image") is None:
            raise BadRequest("CVAT tracker request has no 'image' (base64-encoded frame)")
        image = self._load(decode_base64_image(body["image"]))
        # The key an interactor click on this frame uses: a frame clicked, then tracked, encodes once.
        source = self.segmenter.first_click_input(image, None)
        frame = Frame(0, source, (image.height, image.width))
        out_shapes: list[Any] = [None] * count
        out_states: list[Any] = [None] * count
        starts: dict[str, tuple[int, str, TrackPrompt]] = {}
        steps: dict[StateRef, list[tuple[int, str, str]]] = {}
        for i in range(count):
            state = states[i] if i < len(states) else None
            shape = shapes[i] if i < len(shapes) else None
            if state is not None:
                ref, key, kind = parse_state(state, i)
                steps.setdefault(ref, []).append((i, key, kind))
            elif shape is not None:
                kind, prompt = parse_shape(shape, i, image.width, image.height)
                starts[str(i)] = (i, kind, prompt)
                out_shapes[i] = shape  # init: the shape the user drew on this frame
        for ref, objects in steps.items():
            snapshot, results = self.tracker.step(ref, frame, [key for _, key, _ in objects])
            for i, key, kind in objects:
                out_shapes[i] = render_shape(kind, results[key])
                out_states[i] = make_state(snapshot.ref, key, kind)
        if starts:
            snapshot, _ = self.tracker.start(frame, {k: p for k, (_, _, p) in starts.items()})
            for key, (i, kind, _) in starts.items():
                out_states[i] = make_state(snapshot.ref, key, kind)
        log.debug("cvat tracker: %d started, %d continued", len(starts), sum(len(v) for v in steps.values()))
        return {"shapes": out_shapes, "states": out_states}

    def _load(self, data: bytes) -> LoadedImage:
        try:
            image = LoadedImage.from_bytes(data, self.settings.max_image_pixels)
        except ImageUnreadable as exc:  # as for the interactor: a frame that is no image is a 400
            raise BadRequest(f"'image': {exc.message}") from None
        return self.images.add(image)
