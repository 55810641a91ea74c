"""A deterministic stand-in for SAM2 behind the engine's `SegmentationModel` interface.

`encode` counts its calls (and can sleep, to widen race windows); `decode` returns a disc
of `radius` pixels around the first positive point, or the filled prompt box, so tests can
check exactly which pixels a request should get back.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from function.core.model import ImageFeatures, Segmentation
from function.core.prompts import POSITIVE, Prompt


class FakeModel:
    device = "cpu"

    def __init__(self, radius: int = 20, encode_seconds: float = 0.0, feature_bytes: int = 1 << 20) -> None:
        self.radius = radius
        self.encode_seconds = encode_seconds
        self.feature_bytes = feature_bytes
        self.encode_calls = 0
        self.decode_calls = 0
        self.encoded_images: list[np.ndarray] = []
        self._lock = threading.Lock()

    def encode(self, image: np.ndarray) -> ImageFeatures:
        with self._lock:
            self.encode_calls += 1
            self.encoded_images.append(image)
        if self.encode_seconds:
            time.sleep(self.encode_seconds)
        h, w = image.shape[:2]
        # The features carry the image's mean colour so decode can prove which image it saw.
        return ImageFeatures(float(image.mean()), (), (h, w), self.feature_bytes)

    def decode(self, features: ImageFeatures, prompt: Prompt) -> Segmentation:
        with self._lock:
            self.decode_calls += 1
        h, w = features.image_hw
        mask = np.zeros((h, w), bool)
        if prompt.box is not None:
            b = prompt.box
            mask[round(b.y0) : round(b.y1), round(b.x0) : round(b.x1)] = True
        else:
            positive = prompt.points[prompt.labels == POSITIVE]
            if len(positive):
                cx, cy = positive[0]
                yy, xx = np.ogrid[:h, :w]
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= self.radius**2
        return Segmentation(mask, 0.9)

    def free_memory(self) -> None:
        pass


class SharingFakeModel(FakeModel):
    """A FakeModel whose features can go through the shared tier (as float16 arrays)."""

    def export_features(self, features: ImageFeatures) -> list[np.ndarray]:
        embed = np.full((1, 4), features.image_embed, np.float32)
        return [embed, np.arange(6, dtype=np.float32).reshape(2, 3)]

    def import_features(self, arrays: list[np.ndarray], image_hw: tuple[int, int]) -> ImageFeatures:
        return ImageFeatures(float(arrays[0][0, 0]), (), image_hw, self.feature_bytes)
