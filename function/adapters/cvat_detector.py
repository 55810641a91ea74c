"""CVAT detector (automatic annotation): `{image, threshold?}` -> one mask object per detection.

The vocabulary is fixed per deployment: `DETECTOR_PHRASES` ("car. person.") must name the same
phrases as the function's `spec` annotation, since CVAT drops objects whose label it cannot
map. CVAT forwards `threshold` only when it is non-zero (`if threshold:`), so without it the
deployment's box threshold applies; filtering by it is the function's job (CVAT never reads
`confidence`). Each object: `label`, `type: mask`, `confidence` (a string), `points` (the
outer polygon of the mask's largest component, flat, in frame pixels) and `mask` (the 0/255
pixels of the inclusive bounding-box crop, row-major, followed by xtl, ytl, xbr, ybr).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from function.core.detector import DetectorNotConfigured, TextPrompt, Thresholds
from function.core.images import ImageCache
from function.core.text_segment import TextSegmenter

from .cvat import decode_base64_image, load_frame, render
from .errors import BadRequest, InvalidInput
from .fields import text_prompt_field

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
    """Answers CVAT's detector calls on `POST /` of a deployment with a vocabulary."""

    def __init__(
        self,
        vocabulary: TextPrompt | None,
        text: TextSegmenter | None,
        thresholds: Thresholds,
        images: ImageCache,
        max_image_pixels: int,
    ) -> None:
        self.vocabulary = vocabulary
        self.text = text
        self.thresholds = thresholds
        self.images = images
        self.max_image_pixels = max_image_pixels

    @property
    def enabled(self) -> bool:
        return self.vocabulary is not None

    def detect(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        if self.vocabulary is None:
            raise InvalidInput("this deployment has no detector vocabulary: set DETECTOR_PHRASES")
        if self.text is None:
            with text_prompt_field("DETECTOR_MODEL"):
                raise DetectorNotConfigured()
        if body.get("image") is None:
            raise BadRequest("CVAT request has no 'image' (base64-encoded frame)")
        thresholds = self.thresholds
        if body.get("threshold") not in (None, 0):
            with text_prompt_field("threshold"):
                thresholds = thresholds.with_overrides(box=body["threshold"])
        image = load_frame(decode_base64_image(body["image"]), self.max_image_pixels, self.images)
        segments = self.text.segment(image, self.vocabulary, thresholds)
        found = [cvat_object(s.phrase, s.score, s.mask) for s in segments]
        objects = [o for o in found if o is not None]
        log.info(
            "cvat detector: %d detections, %d objects (box %.2f)", len(segments), len(objects), thresholds.box
        )
        return objects
