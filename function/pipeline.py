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
import weakref
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


_memories: weakref.WeakKeyDictionary[Engine, PatchMemory] = weakref.WeakKeyDictionary()
_memories_lock = threading.Lock()


def patch_memory(engine: Engine) -> PatchMemory:
    """One memory per engine (per process), created on first use."""
    with _memories_lock:
        memory = _memories.get(engine)
        if memory is None:
            memory = _memories[engine] = PatchMemory()
        return memory


def encoder_input(image: LoadedImage, view: View, images: ImageCache | None = None) -> EncoderInput:
    """The encoder's input for `image` seen through `view`; the plain image keeps its bare key."""

    def pixels() -> np.ndarray:
        out = view.pixels(image.pixels())
        if images is not None:
            images.enforce_budget()
        return out

    return EncoderInput(f"{image.key}|{view.key}" if view.key else image.key, pixels)


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


def plan_view(
    engine: Engine,
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
    for old in patch_memory(engine).windows(_group(image, frame, patching)):
        if (old.width, old.height) != (crop.width, crop.height) or not holds(old, extent, margin):
            continue
        candidate = View(image.size, frame.resize, old)
        key = encoder_input(image, candidate).key
        if key in engine.cache or engine.cache.is_in_flight(key):
            return candidate
    return View(image.size, frame.resize, crop)


def _group(image: LoadedImage, view: View, patching: PatchSpec) -> str:
    """Windows are interchangeable only on the same image, resize and patch options."""
    return f"{image.key}|{view.resize.key if view.resize else ''}|{patching}"


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


def segment(
    engine: Engine,
    image: LoadedImage,
    prompt: Prompt,
    images: ImageCache | None = None,
    *,
    resize: ResizeSpec | None = None,
    patching: PatchSpec | None = None,
    post: PostprocessSpec | None = None,
) -> MaskResult:
    """Segment `prompt` (pixels of `image`); the mask comes back at the image's full size."""
    view = plan_view(engine, image, prompt, resize, patching)
    seg, cached = engine.segment(encoder_input(image, view, images), prompt_in_view(prompt, view))
    if view.crop is not None and patching is not None:
        patch_memory(engine).remember(_group(image, view, patching), view.crop)
    mask = view.mask_backward(np.asarray(seg.mask, bool))
    if post is not None:
        mask = postprocess(mask, post)
    return MaskResult(mask, seg.score, cached, view)
