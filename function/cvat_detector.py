"""CVAT detector (automatic annotation): `{image, threshold?}` -> one mask object per detection.

The vocabulary is fixed per deployment: `DETECTOR_PHRASES` ("car. person.") must name the same
phrases as the function's `spec` annotation, since CVAT drops objects whose label it cannot
map. CVAT forwards `threshold` only when it is non-zero (`if threshold:`), so without it the
deployment's box threshold applies; filtering by it is the function's job (CVAT never reads
`confidence`). Each object: `label`, `type: mask`, `confidence` (a string), `points` (the
outer polygon of the mask's largest component, flat, in frame pixels) and `mask` (the 0/255
pixels of the inclusive bounding-box crop, row-major, followed by xtl, ytl, xbr, ybr).
Contract: ../shared/specs/text-prompts.md section 5, cvat-contract.md section 5.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .core.detector import DetectorNotConfigured, TextPrompt, TextPromptError, Thresholds
from .core.text_segment import TextSegmenter
from .cvat import decode_base64_image, render
from .errors import BadRequest, Unprocessable, text_prompt_errors
from .images import ImageCache, LoadedImage
from .settings import Settings

log = logging.getLogger(__name__)


def cvat_object(phrase: str, score: float, mask: np.ndarray) -> dict[str, Any] | None:
    """CVAT's detector item for one mask, or None when the mask is empty."""
    drawn = render(mask)
    if not drawn["points"]:
        return None
    x0, y0, x1, y1 = drawn["bounds"]
    crop = mask[y0 : y1 + 1, x0 : x1 + 1].astype(np.uint8) * 255
    return {
        "label": phrase,
        "type": "mask",
        "confidence": f"{score:.4f}",
        "points": [float(v) for point in drawn["points"] for v in point],
        "mask": [*crop.ravel().tolist(), x0, y0, x1, y1],
    }


class CvatDetector:
    """Answers CVAT's detector calls on `POST /` of a deployment with `DETECTOR_PHRASES`."""

    def __init__(self, settings: Settings, text: TextSegmenter | None, images: ImageCache) -> None:
        self.settings = settings
        self.text = text
        self.images = images
        self.thresholds = Thresholds(settings.detector_box_threshold, settings.detector_text_threshold)
        self.prompt: TextPrompt | None = None
        if settings.detector_phrases:
            try:
                self.prompt = TextPrompt.parse(settings.detector_phrases)
            except TextPromptError as exc:
                from .settings import SettingsError

                raise SettingsError("DETECTOR_PHRASES", exc.message) from None

    @property
    def enabled(self) -> bool:
        return self.prompt is not None

    def detect(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        if self.prompt is None:
            raise Unprocessable("this deployment has no detector vocabulary: set DETECTOR_PHRASES")
        if self.text is None:
            with text_prompt_errors("DETECTOR_MODEL"):
                raise DetectorNotConfigured()
        if body.get("image") is None:
            raise BadRequest("CVAT request has no 'image' (base64-encoded frame)")
        thresholds = self.thresholds
        if body.get("threshold") not in (None, 0):
            with text_prompt_errors("threshold"):
                thresholds = thresholds.with_overrides(box=body["threshold"])
        image = self._load(decode_base64_image(body["image"]))
        segments = self.text.segment(image, self.prompt, thresholds)
        found = [cvat_object(s.phrase, s.score, s.mask) for s in segments]
        objects = [o for o in found if o is not None]
        log.info(
            "cvat detector: %d detections, %d objects (box %.2f)", len(segments), len(objects), thresholds.box
        )
        return objects

    def _load(self, data: bytes) -> LoadedImage:
        try:
            image = LoadedImage.from_bytes(data, self.settings.max_image_pixels)
        except Unprocessable as exc:
            raise BadRequest(f"'image': {exc.message}") from None
        return self.images.add(image)
