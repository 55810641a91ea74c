"""Text prompt -> one mask per detected instance (the LangSAM pipeline, on cached features).

detector(image, phrases) -> boxes; then SAM2 on each box. Every box is decoded on the same
full-frame encoder input a click on that image uses (same cache key), so the image is encoded
once for all boxes, and a click after a text prompt (or a text prompt after a click) runs no
encoder. Each mask is clipped to its detection box, so a mask never leaves the box it
answers. Detections are remembered per (image, prompt, thresholds): asking again for the same
image (Label Studio coming back per task after a batch) runs neither model.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .detector import Detection, Detector, TextPrompt, Thresholds
from .geometry import Box, ResizeSpec
from .images import LoadedImage
from .masks import PostprocessSpec
from .pipeline import Segmenter
from .prompts import Prompt

MAX_DETECTIONS = 100


@dataclass(frozen=True)
class TextSegment:
    """A detection and its mask: (H, W) bool at the image's size, all inside `detection.box`."""

    detection: Detection
    mask: np.ndarray
    mask_score: float

    @property
    def box(self) -> Box:
        return self.detection.box

    @property
    def phrase(self) -> str:
        return self.detection.phrase

    @property
    def score(self) -> float:
        return self.detection.score


def pixel_bounds(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel index range [x0, x1) x [y0, y1) covered by `box` (rounded outwards, inside the image)."""
    x0, y0 = max(math.floor(box.x0), 0), max(math.floor(box.y0), 0)
    x1, y1 = min(math.ceil(box.x1), width), min(math.ceil(box.y1), height)
    return x0, y0, max(x1, x0), max(y1, y0)


def clip_to_box(mask: np.ndarray, box: Box) -> np.ndarray:
    h, w = mask.shape
    x0, y0, x1, y1 = pixel_bounds(box, w, h)
    out = np.zeros_like(mask, dtype=bool)
    out[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
    return out


class TextSegmenter:
    """Detector + SAM2 engine. One per process; safe for concurrent calls."""

    def __init__(self, segmenter: Segmenter, detector: Detector, remember: int = 256) -> None:
        self.segmenter = segmenter
        self.detector = detector
        self.remember = remember
        self.detector_calls = 0
        self._found: OrderedDict[tuple[str, str, float, float], list[Detection]] = OrderedDict()
        self._lock = threading.Lock()

    def detect(self, image: LoadedImage, prompt: TextPrompt, thresholds: Thresholds) -> list[Detection]:
        key = (image.key, prompt.text, thresholds.box, thresholds.text)
        with self._lock:
            found = self._found.get(key)
            if found is not None:
                self._found.move_to_end(key)
                return found
        found = self.detector.detect(image.pixels(), prompt, thresholds)[:MAX_DETECTIONS]
        self.segmenter.images.enforce_budget()
        with self._lock:
            self.detector_calls += 1
            self._found[key] = found
            while len(self._found) > self.remember:
                self._found.popitem(last=False)
        return found

    def segment(
        self,
        image: LoadedImage,
        prompt: TextPrompt,
        thresholds: Thresholds,
        *,
        resize: ResizeSpec | None = None,
        post: PostprocessSpec | None = None,
    ) -> list[TextSegment]:
        """One `TextSegment` per detection, best score first."""
        out = []
        for detection in self.detect(image, prompt, thresholds):
            box_prompt = Prompt.build([], [], detection.box)
            result = self.segmenter.segment(image, box_prompt, resize=resize, post=post)
            out.append(TextSegment(detection, clip_to_box(result.mask, detection.box), result.score))
        return out
