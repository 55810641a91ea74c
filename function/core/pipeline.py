"""Image + prompt (+ options) -> a full-resolution mask. Shared by Label Studio and CVAT.

The options shape what the encoder sees (a `View`: `fullframe_resize`, then a subpatch
around the prompt) and how the mask is cleaned up (`postprocess`, in pixels of the original
image). The feature cache key is the image's content key plus the view's key, so a view is
encoded once; a later prompt that still lies well inside a patch encoded before reuses that
patch instead of centring a new one on itself, so clicking around one object never
re-encodes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .engine import EncoderInput, Engine
from .geometry import Box, Crop, PatchSpec, ResizeSpec, View, holds, plan_patch
from .images import ImageCache, LoadedImage
from .masks import PostprocessSpec, postprocess
from .prompts import POSITIVE, Prompt


@dataclass(frozen=True)
class MaskResult:
    """`mask`: (H, W) bool at the image's size; `cached`: no image-encoder pass was needed;
    `view`: what the encoder saw."""

    mask: np.ndarray
    score: float
    cached: bool
    view: View | None = None


class PatchMemory:
    """The windows recently encoded per (image, resize, patch spec), newest first, bounded."""

    def __init__(self, per_group: int = 8, groups: int = 512) -> None:
        self.per_group = per_group
        self.groups = groups
        self._windows: OrderedDict[str, list[Crop]] = OrderedDict()
        self._lock = threading.Lock()

    def windows(self, group: str) -> list[Crop]:
        with self._lock:
            return list(self._windows.get(group, ()))

    def remember(self, group: str, crop: Crop) -> None:
        with self._lock:
            kept = [c for c in self._windows.pop(group, []) if c != crop]
            self._windows[group] = [crop, *kept][: self.per_group]
            while len(self._windows) > self.groups:
                self._windows.popitem(last=False)


def full_frame_view(image: LoadedImage, resize: ResizeSpec | None = None) -> View:
    """What a prompt-independent encode (e.g. prewarming) should use: the resized frame."""
    return View(image.size, resize.plan(image.width, image.height) if resize else None)


def prompt_extent(prompt: Prompt) -> Box | None:
    """Where the object is: the box joined with the positive points (negatives only exclude)."""
    positive = prompt.points[prompt.labels == POSITIVE]
    extent = prompt.box
    if len(positive):
        (x0, y0), (x1, y1) = positive.min(axis=0), positive.max(axis=0)
        points = Box(float(x0), float(y0), float(x1), float(y1))
        extent = points if extent is None else extent.union(points)
    return extent


def prompt_in_view(prompt: Prompt, view: View) -> Prompt:
    """Map a prompt onto the view; negative points that fall outside it are dropped (they
    lie where nothing is segmented)."""
    points = view.points_forward(prompt.points)
    labels = prompt.labels
    box = view.box_forward(prompt.box) if prompt.box is not None else None
    if view.crop is not None and len(points):
        w, h = view.size
        inside = (points[:, 0] >= 0) & (points[:, 0] <= w) & (points[:, 1] >= 0) & (points[:, 1] <= h)
        keep = inside | (labels == POSITIVE)
        points, labels = points[keep], labels[keep]
    return Prompt(points.reshape(-1, 2), labels, box)


def _group(image: LoadedImage, view: View, patching: PatchSpec) -> str:
    """Windows are interchangeable only on the same image, resize and patch options."""
    return f"{image.key}|{view.resize.key if view.resize else ''}|{patching}"


class Segmenter:
    """Segments prompts on images through an `Engine`, remembering the patches it encoded.

    One per process: the engine's feature cache and this patch memory are shared by every
    protocol. `images` is the decoded-image cache whose byte budget is enforced once a view's
    pixels are cut out (the full decoded frame is no longer needed then).
    """

    def __init__(self, engine: Engine, images: ImageCache, patches: PatchMemory | None = None) -> None:
        self.engine = engine
        self.images = images
        self.patches = patches or PatchMemory()

    def encoder_input(self, image: LoadedImage, view: View) -> EncoderInput:
        """The encoder's input for `image` seen through `view`; the plain image keeps its bare key."""

        def pixels() -> np.ndarray:
            out = view.pixels(image.pixels())
            self.images.enforce_budget()
            return out

        return EncoderInput(f"{image.key}|{view.key}" if view.key else image.key, pixels)

    def first_click_input(self, image: LoadedImage, resize: ResizeSpec | None) -> EncoderInput:
        """What a click on `image` encodes when no patch depends on the click (for prewarm)."""
        return self.encoder_input(image, full_frame_view(image, resize))

    def plan_view(
        self,
        image: LoadedImage,
        prompt: Prompt,
        resize: ResizeSpec | None = None,
        patching: PatchSpec | None = None,
    ) -> View:
        """The view to encode for `prompt` (pixels of the original image)."""
        frame = full_frame_view(image, resize)
        extent = prompt_extent(prompt)
        if patching is None or extent is None:
            return frame
        fw, fh = frame.frame
        extent = frame.box_forward(extent)
        crop = plan_patch(extent, fw, fh, patching)
        if crop is None:
            return frame
        # Reuse a window encoded before if the prompt sits well inside it (not at a cut edge).
        margin = min(crop.width, crop.height) // 8
        for old in self.patches.windows(_group(image, frame, patching)):
            if (old.width, old.height) != (crop.width, crop.height) or not holds(old, extent, margin):
                continue
            candidate = View(image.size, frame.resize, old)
            if self.engine.has_features(self.encoder_input(image, candidate).key):
                return candidate
        return View(image.size, frame.resize, crop)

    def segment(
        self,
        image: LoadedImage,
        prompt: Prompt,
        *,
        resize: ResizeSpec | None = None,
        patching: PatchSpec | None = None,
        post: PostprocessSpec | None = None,
    ) -> MaskResult:
        """Segment `prompt` (pixels of `image`); the mask comes back at the image's full size."""
        view = self.plan_view(image, prompt, resize, patching)
        seg, cached = self.engine.segment(self.encoder_input(image, view), prompt_in_view(prompt, view))
        if view.crop is not None and patching is not None:
            self.patches.remember(_group(image, view, patching), view.crop)
        mask = view.mask_backward(np.asarray(seg.mask, bool))
        if post is not None:
            mask = postprocess(mask, post)
        return MaskResult(mask, seg.score, cached, view)
