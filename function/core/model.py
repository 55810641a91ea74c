"""What the engine needs from a segmentation model, and what it gets back. No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .prompts import Prompt


@dataclass(frozen=True)
class ImageFeatures:
    """Encoder output for one image.

    For SAM2: `image_embed` [1, 256, 64, 64] and `high_res_feats` ([1, 32, 256, 256],
    [1, 64, 128, 128]), 16 MiB in float32 whatever the input size. `image_hw` is the
    (height, width) of the encoded image, needed to map prompts and masks.
    """

    image_embed: Any
    high_res_feats: tuple[Any, ...]
    image_hw: tuple[int, int]
    nbytes: int


@dataclass(frozen=True)
class Segmentation:
    """The kept mask, (H, W) bool at the encoded image's size, and its predicted IoU."""

    mask: np.ndarray
    score: float


class SegmentationModel(Protocol):
    """What the engine needs from a model. `Sam2Model` is the real one.

    `encode` and `decode` raise `core.errors.OutOfMemory` when the device runs out of memory,
    so the engine can trim its cache and retry without knowing the framework."""

    device: str

    def encode(self, image: np.ndarray) -> ImageFeatures:
        """`image`: (H, W, 3) uint8 RGB."""

    def decode(self, features: ImageFeatures, prompt: Prompt) -> Segmentation:
        """`prompt` in pixel coordinates of the encoded image."""

    def free_memory(self) -> None:
        """Release allocator caches after an out-of-memory error."""
