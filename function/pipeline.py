"""Image + prompt (+ options) -> a full-resolution mask. Shared by Label Studio and CVAT."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .engine import EncoderInput, Engine
from .images import ImageCache, LoadedImage
from .prompts import Prompt


@dataclass(frozen=True)
class MaskResult:
    """`mask`: (H, W) bool at the image's size; `cached`: no image-encoder pass was needed."""

    mask: np.ndarray
    score: float
    cached: bool


def whole_image(image: LoadedImage, images: ImageCache | None = None) -> EncoderInput:
    """The encoder input for the whole image; its key is the image content key.

    Clicks and task-open prewarm both go through here, so they share one cache entry.
    """

    def pixels() -> np.ndarray:
        out = image.pixels()
        if images is not None:
            images.enforce_budget()
        return out

    return EncoderInput(image.key, pixels)


def segment(
    engine: Engine, image: LoadedImage, prompt: Prompt, images: ImageCache | None = None
) -> MaskResult:
    seg, cached = engine.segment(whole_image(image, images), prompt)
    return MaskResult(seg.mask, seg.score, cached)
