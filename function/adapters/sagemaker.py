"""SageMaker `POST /invocations`: `{"action": "sam2" | "langsam", image, ...}` -> masks as JSON.

- `sam2`: `points` [[x, y], ...] with `labels` [1 | 0, ...] (1 positive; all positive when
  left out), and/or `box` [x0, y0, x1, y1], in pixels. The seed's single point `x`, `y` is
  accepted too.
- `langsam`: `text_prompt` ("car. person."), optional `box_threshold`, `text_threshold`.
- `image`: an http(s) URL (fetched with the same timeouts, size limits and host allowlist as
  Label Studio images), a data URI or base64; `image_url` is the seed's spelling.
- `mask_format`: `"rle"` (COCO compressed RLE, `{"size": [h, w], "counts": str}`, default)
  or `"polygon"` (lists of [x, y] outlines in pixels); `return_images: true` adds base64 PNGs
  `original`, `overlay` and `mask_only`.
Replies: `{width, height, masks, scores, boxes}` (+ `phrases`, `mask_scores` for langsam).
Errors are 4xx/5xx JSON naming the field, never 200. Spec: text-prompts.md section 4.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from function.core.detector import DetectorNotConfigured, TextPrompt, Thresholds
from function.core.errors import ExpectedError
from function.core.geometry import Box
from function.core.images import LoadedImage
from function.core.masks import polygons, tight_bounds
from function.core.pipeline import Segmenter
from function.core.prompts import Prompt
from function.core.text_segment import TextSegmenter
from function.settings import Settings

from .cvat import decode_base64_image, load_frame
from .errors import BadRequest, InvalidInput
from .fields import finite_number, text_prompt_field

ACTIONS = ("sam2", "langsam")
MASK_FORMATS = ("rle", "polygon")
_COLOURS = np.array(
    [[255, 64, 64], [64, 160, 255], [80, 220, 80], [255, 200, 40], [200, 80, 255]], np.float32
)


def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts: column-major runs, starting with a (maybe empty) run of 0s."""
    flat = np.asarray(mask, bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return [int(c) for c in counts]


def rle_string(counts: list[int]) -> str:
    """pycocotools' compact string form of RLE counts (`rleToString`), vectorised: each count
    (from the fourth on, minus the count two before it) is written as 5-bit groups, low first,
    0x20 marking that another group follows, each byte offset by 48."""
    c = np.asarray(counts, dtype=np.int64)
    x = c.copy()
    x[3:] -= c[1:-2]
    active = np.ones(len(x), bool)
    columns = []
    while active.any():
        group = x & 0x1F
        x = x >> 5  # arithmetic shift: negative deltas end at -1
        more = np.where(group & 0x10, x != -1, x != 0)
        byte = np.where(more, group | 0x20, group) + 48
        columns.append(np.where(active, byte, -1))
        active &= more
    if not columns:
        return ""
    table = np.stack(columns, axis=1)  # one row per count, its bytes left to right
    return table[table >= 0].astype(np.uint8).tobytes().decode("ascii")


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": rle_string(rle_counts(mask))}


def _png(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def render_images(pixels: np.ndarray, masks: list[np.ndarray]) -> dict[str, str]:
    """The seed's three PNGs: the image, masks blended over it, and the union of the masks."""
    overlay = pixels.astype(np.float32)
    union = np.zeros(pixels.shape[:2], bool)
    for i, mask in enumerate(masks):
        overlay[mask] = overlay[mask] * 0.5 + _COLOURS[i % len(_COLOURS)] * 0.5
        union |= mask
    return {
        "original": _png(pixels),
        "overlay": _png(overlay.astype(np.uint8)),
        "mask_only": _png(union.astype(np.uint8) * 255),
    }


def _points(body: dict[str, Any]) -> tuple[list[tuple[float, float]], list[int]]:
    if "x" in body or "y" in body:  # the seed's single positive point
        return [(finite_number(body.get("x"), "x"), finite_number(body.get("y"), "y"))], [1]
    raw = body.get("points") or []
    if not isinstance(raw, list):
        raise InvalidInput("points must be a list of [x, y] pairs")
    points = []
    for i, p in enumerate(raw):
        if not isinstance(p, list) or len(p) != 2:
            raise InvalidInput(f"points[{i}] must be an [x, y] pair")
        points.append((finite_number(p[0], f"points[{i}][0]"), finite_number(p[1], f"points[{i}][1]")))
    labels = body.get("labels")
    if labels is None:
        return points, [1] * len(points)
    if not isinstance(labels, list) or len(labels) != len(points) or any(v not in (0, 1) for v in labels):
        raise InvalidInput("labels must list 1 (positive) or 0 (negative) for each point")
    return points, [int(v) for v in labels]


def _box(value: Any) -> Box | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 4:
        raise InvalidInput("box must be [x0, y0, x1, y1]")
    x0, y0, x1, y1 = (finite_number(v, f"box[{i}]") for i, v in enumerate(value))
    return Box.from_corners(x0, y0, x1, y1)


class SageMakerInvocations:
    def __init__(
        self,
        settings: Settings,
        segmenter: Segmenter,
        text: TextSegmenter | None,
        fetch: Callable[[str], LoadedImage],
    ) -> None:
        self.settings = settings
        self.segmenter = segmenter
        self.text = text
        self.fetch = fetch
        self.defaults = Thresholds(settings.detector_box_threshold, settings.detector_text_threshold)

    def invoke(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest("/invocations expects a JSON object body")
        action = body.get("action")
        if action not in ACTIONS:
            raise BadRequest(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        fmt = body.get("mask_format", "rle")
        if fmt not in MASK_FORMATS:
            raise BadRequest(f"mask_format must be one of {', '.join(MASK_FORMATS)}, got {fmt!r}")
        want_images = body.get("return_images", False)
        if not isinstance(want_images, bool):
            raise BadRequest("return_images must be true or false")
        if action == "langsam":
            prompt, thresholds = self._text_request(body)  # refuse bad text before fetching the image
            image = self._image(body)
            reply, masks = self._langsam(image, prompt, thresholds, fmt)
        else:
            image = self._image(body)
            reply, masks = self._sam2(image, body, fmt)
        if want_images:
            reply["images"] = render_images(image.pixels(), masks)
        return reply

    def _image(self, body: dict[str, Any]) -> LoadedImage:
        field = "image" if body.get("image") is not None else "image_url"
        value = body.get(field)
        if not isinstance(value, str) or not value.strip():
            raise BadRequest("image must be an http(s) URL, a data URI or base64")
        value = value.strip()
        if not value.startswith(("http://", "https://", "data:")):
            return load_frame(
                decode_base64_image(value), self.settings.max_image_pixels, self.segmenter.images
            )
        try:
            return self.fetch(value)
        except ExpectedError as exc:  # same class (same status), the field named
            raise type(exc)(f"{field}: {exc.message}") from None

    def _sam2(
        self, image: LoadedImage, body: dict[str, Any], fmt: str
    ) -> tuple[dict[str, Any], list[np.ndarray]]:
        points, labels = _points(body)
        positive = [p for p, v in zip(points, labels, strict=True) if v == 1]
        negative = [p for p, v in zip(points, labels, strict=True) if v == 0]
        prompt = Prompt.build(positive, negative, _box(body.get("box"))).validated(
            image.width, image.height, self.settings.max_prompt_points
        )
        if not prompt.can_segment:
            raise InvalidInput("points/box: give a box or at least one positive point")
        result = self.segmenter.segment(image, prompt)
        bounds = tight_bounds(result.mask)
        box = [float(v) for v in (bounds[0], bounds[1], bounds[2] + 1, bounds[3] + 1)] if bounds else None
        reply = {
            "width": image.width,
            "height": image.height,
            "masks": [self._mask(result.mask, fmt)],
            "scores": [float(result.score)],
            "boxes": [box],
        }
        return reply, [result.mask]

    def _text_request(self, body: dict[str, Any]) -> tuple[TextPrompt, Thresholds]:
        if self.text is None:
            with text_prompt_field("action"):
                raise DetectorNotConfigured()
        with text_prompt_field("text_prompt"):
            prompt = TextPrompt.parse(body.get("text_prompt"))
            self.text.detector.check(prompt)
        with text_prompt_field("thresholds"):
            thresholds = self.defaults.with_overrides(body.get("box_threshold"), body.get("text_threshold"))
        return prompt, thresholds

    def _langsam(
        self, image: LoadedImage, prompt: TextPrompt, thresholds: Thresholds, fmt: str
    ) -> tuple[dict[str, Any], list[np.ndarray]]:
        assert self.text is not None
        segments = self.text.segment(image, prompt, thresholds)
        reply = {
            "width": image.width,
            "height": image.height,
            "boxes": [list(s.box.as_tuple()) for s in segments],
            "scores": [s.score for s in segments],
            "phrases": [s.phrase for s in segments],
            "mask_scores": [s.mask_score for s in segments],
            "masks": [self._mask(s.mask, fmt) for s in segments],
        }
        return reply, [s.mask for s in segments]

    @staticmethod
    def _mask(mask: np.ndarray, fmt: str) -> Any:
        if fmt == "polygon":
            return [outline.tolist() for outline in polygons(mask)]
        return coco_rle(mask)
