"""Boxes and the mappings between the original image and the region the model sees.

A `View` is what the image encoder gets instead of the original image: an optional resize of
the whole frame (`Resize`, `fullframe_resize`) followed by an optional window of that frame
(`Crop`, subpatching), whose parts past the frame edges are padding. Every mapping has an
exact inverse: points and boxes map with plain arithmetic (crop offsets are whole pixels),
masks with centre-aligned nearest-neighbour sampling, so a mask at the view's size survives
view -> original -> view unchanged.

Coordinates are continuous pixels with pixel `i` covering `[i, i + 1)`, as Label Studio's
percent coordinates times the image size are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from .errors import PatchTooSmall, ResizeNotPossible


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in pixels, corners (x0, y0) top-left and (x1, y1) bottom-right."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def from_corners(cls, ax: float, ay: float, bx: float, by: float) -> Box:
        return cls(min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def clipped(self, width: float, height: float) -> Box:
        return Box(
            min(max(self.x0, 0.0), width),
            min(max(self.y0, 0.0), height),
            min(max(self.x1, 0.0), width),
            min(max(self.y1, 0.0), height),
        )

    def shifted(self, dx: float, dy: float) -> Box:
        return Box(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)

    def scaled(self, sx: float, sy: float) -> Box:
        return Box(self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy)

    def union(self, other: Box) -> Box:
        return Box(
            min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1), max(self.y1, other.y1)
        )

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


# -- option specs (protocol-neutral; Label Studio's extra_params parse into these) ---------


@dataclass(frozen=True)
class ResizeSpec:
    """`fullframe_resize`: a scale in (0, 1] for both sides, or an exact (width, height)."""

    scale: float | None = None
    size: tuple[int, int] | None = None

    def plan(self, width: int, height: int) -> Resize | None:
        """The resize for a `width` x `height` image; None when it changes nothing.

        Raises ResizeNotPossible when the target is larger than the image in either side."""
        if self.scale is not None:
            target = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
        elif self.size is not None:
            target = self.size
        else:
            return None
        if target[0] > width or target[1] > height:
            raise ResizeNotPossible(
                f"resize target {target[0]}x{target[1]} is larger than the "
                f"{width}x{height} image; only downscaling is supported"
            )
        return None if target == (width, height) else Resize((width, height), target)


PatchMode = Literal["default", "padding"]


@dataclass(frozen=True)
class PatchSpec:
    """`subpatching`: encode a window around the prompt instead of the whole frame."""

    size: tuple[int, int] = (1024, 1024)
    mode: PatchMode = "default"
    fill: tuple[int, int, int] = (0, 0, 0)
    allow_oversize: bool = True
    oversize_padding: float = 0.05


# -- mappings -------------------------------------------------------------------------------


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """For each of `n_out` output pixels, the input pixel under its centre (integer math)."""
    return ((2 * np.arange(n_out, dtype=np.int64) + 1) * n_in) // (2 * n_out)


@dataclass(frozen=True)
class Resize:
    """Original frame `src` (width, height) -> working frame `dst`, each side scaled alone."""

    src: tuple[int, int]
    dst: tuple[int, int]

    @property
    def key(self) -> str:
        return f"r{self.dst[0]}x{self.dst[1]}"

    @property
    def scale(self) -> tuple[float, float]:
        return self.dst[0] / self.src[0], self.dst[1] / self.src[1]

    def points_forward(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, np.float64) * np.array(self.dst) / np.array(self.src)

    def points_backward(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, np.float64) * np.array(self.src) / np.array(self.dst)

    def box_forward(self, box: Box) -> Box:
        return box.scaled(*self.scale)

    def box_backward(self, box: Box) -> Box:
        return box.scaled(self.src[0] / self.dst[0], self.src[1] / self.dst[1])

    def pixels(self, image: np.ndarray) -> np.ndarray:
        # INTER_AREA averages the source pixels under each target pixel: the right filter
        # for the downscale-only resizes this is used for.
        return cv2.resize(image, self.dst, interpolation=cv2.INTER_AREA)

    def mask_forward(self, mask: np.ndarray) -> np.ndarray:
        rows, cols = _nearest_index(self.dst[1], self.src[1]), _nearest_index(self.dst[0], self.src[0])
        return mask[np.ix_(rows, cols)]

    def mask_backward(self, mask: np.ndarray) -> np.ndarray:
        rows, cols = _nearest_index(self.src[1], self.dst[1]), _nearest_index(self.src[0], self.dst[0])
        return mask[np.ix_(rows, cols)]


@dataclass(frozen=True)
class Crop:
    """Window (x0, y0, width, height) of a `frame` (width, height); may reach past its edges,
    where it is filled with `fill`. Offsets are whole pixels, so shifts are exact."""

    x0: int
    y0: int
    width: int
    height: int
    frame: tuple[int, int]
    fill: tuple[int, int, int] = (0, 0, 0)

    @property
    def is_padded(self) -> bool:
        fw, fh = self.frame
        return self.x0 < 0 or self.y0 < 0 or self.x0 + self.width > fw or self.y0 + self.height > fh

    @property
    def key(self) -> str:
        key = f"c{self.x0},{self.y0},{self.width}x{self.height}"
        return key + "#{:02x}{:02x}{:02x}".format(*self.fill) if self.is_padded else key

    @property
    def box(self) -> Box:
        return Box(self.x0, self.y0, self.x0 + self.width, self.y0 + self.height)

    def _overlap(self) -> tuple[slice, slice, slice, slice] | None:
        """(frame rows, frame cols, window rows, window cols) of the part inside the frame."""
        fw, fh = self.frame
        fx0, fy0 = max(self.x0, 0), max(self.y0, 0)
        fx1, fy1 = min(self.x0 + self.width, fw), min(self.y0 + self.height, fh)
        if fx1 <= fx0 or fy1 <= fy0:
            return None
        return (
            slice(fy0, fy1),
            slice(fx0, fx1),
            slice(fy0 - self.y0, fy1 - self.y0),
            slice(fx0 - self.x0, fx1 - self.x0),
        )

    def points_forward(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, np.float64) - np.array([self.x0, self.y0])

    def points_backward(self, points: np.ndarray, clamp: bool = False) -> np.ndarray:
        out = np.asarray(points, np.float64) + np.array([self.x0, self.y0])
        return np.clip(out, 0.0, np.array(self.frame, np.float64)) if clamp else out

    def box_forward(self, box: Box) -> Box:
        return box.shifted(-self.x0, -self.y0)

    def box_backward(self, box: Box, clamp: bool = False) -> Box:
        out = box.shifted(self.x0, self.y0)
        return out.clipped(*self.frame) if clamp else out

    def pixels(self, frame: np.ndarray) -> np.ndarray:
        part = self._overlap()
        if not self.is_padded and part is not None:
            return np.ascontiguousarray(frame[part[0], part[1]])
        out = np.empty((self.height, self.width, *frame.shape[2:]), frame.dtype)
        out[...] = self.fill if frame.ndim == 3 else self.fill[0]
        if part is not None:
            out[part[2], part[3]] = frame[part[0], part[1]]
        return out

    def mask_forward(self, mask: np.ndarray) -> np.ndarray:
        out = np.zeros((self.height, self.width), mask.dtype)
        part = self._overlap()
        if part is not None:
            out[part[2], part[3]] = mask[part[0], part[1]]
        return out

    def mask_backward(self, mask: np.ndarray) -> np.ndarray:
        """Window mask -> frame mask; what lies on the padding is dropped."""
        fw, fh = self.frame
        out = np.zeros((fh, fw), mask.dtype)
        part = self._overlap()
        if part is not None:
            out[part[0], part[1]] = mask[part[2], part[3]]
        return out


@dataclass(frozen=True)
class View:
    """Original image (width, height) -> optional `resize` -> optional `crop` = model input."""

    original: tuple[int, int]
    resize: Resize | None = None
    crop: Crop | None = None

    @property
    def frame(self) -> tuple[int, int]:
        """Size of the working frame (after the resize, before the crop)."""
        return self.resize.dst if self.resize else self.original

    @property
    def size(self) -> tuple[int, int]:
        """Size of what the model sees."""
        return (self.crop.width, self.crop.height) if self.crop else self.frame

    @property
    def key(self) -> str:
        """Identifies the view in the feature cache, next to the image's content key."""
        return "/".join(part.key for part in (self.resize, self.crop) if part is not None)

    def points_forward(self, points: np.ndarray) -> np.ndarray:
        out = np.asarray(points, np.float64)
        out = self.resize.points_forward(out) if self.resize else out
        return self.crop.points_forward(out) if self.crop else out

    def points_backward(self, points: np.ndarray, clamp: bool = False) -> np.ndarray:
        out = np.asarray(points, np.float64)
        out = self.crop.points_backward(out) if self.crop else out
        out = self.resize.points_backward(out) if self.resize else out
        return np.clip(out, 0.0, np.array(self.original, np.float64)) if clamp else out

    def box_forward(self, box: Box) -> Box:
        box = self.resize.box_forward(box) if self.resize else box
        return self.crop.box_forward(box) if self.crop else box

    def box_backward(self, box: Box, clamp: bool = False) -> Box:
        box = self.crop.box_backward(box) if self.crop else box
        box = self.resize.box_backward(box) if self.resize else box
        return box.clipped(*self.original) if clamp else box

    def pixels(self, image: np.ndarray) -> np.ndarray:
        out = self.resize.pixels(image) if self.resize else image
        return self.crop.pixels(out) if self.crop else out

    def mask_forward(self, mask: np.ndarray) -> np.ndarray:
        out = self.resize.mask_forward(mask) if self.resize else mask
        return self.crop.mask_forward(out) if self.crop else out

    def mask_backward(self, mask: np.ndarray) -> np.ndarray:
        """Mask at the view's size -> mask at the original image's size."""
        out = self.crop.mask_backward(mask) if self.crop else mask
        return self.resize.mask_backward(out) if self.resize else out


# -- subpatch planning ----------------------------------------------------------------------


def plan_patch(extent: Box, frame_w: int, frame_h: int, spec: PatchSpec) -> Crop | None:
    """The window to encode for a prompt spanning `extent` (working-frame pixels).

    None means full-frame inference: the prompt does not fit even a patch grown to hold it.
    The window is centred on the prompt; in `default` mode it is then slid back inside the
    frame, and only an axis where the frame is shorter than the patch is padded (the frame
    flush at the window's start, padding after it). In `padding` mode it stays centred and
    whatever lies past the frame is padding.
    """
    pw, ph = spec.size
    # The whole pixels the prompt touches: a window of whole pixels can always hold them.
    x0, y0 = math.floor(extent.x0), math.floor(extent.y0)
    x1, y1 = max(math.ceil(extent.x1), x0), max(math.ceil(extent.y1), y0)
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    if w > pw or h > ph:
        if not spec.allow_oversize:
            raise PatchTooSmall(
                f"the prompt ({w}x{h} px) is larger than the {pw}x{ph} patch "
                "and oversize patches are not allowed"
            )
        side = max(w, h) * (1 + spec.oversize_padding)
        if side > min(frame_w, frame_h):
            return None
        grown = int(side)
        grown -= grown % 2  # even, as SAM2Plus does
        if grown < max(w, h):  # an odd side with no padding lost a pixel to rounding
            grown += 2
        if grown > min(frame_w, frame_h):
            return None
        pw = ph = grown
    x0, y0 = cx - pw // 2, cy - ph // 2
    if spec.mode == "default":
        x0 = min(max(x0, 0), frame_w - pw) if frame_w >= pw else 0
        y0 = min(max(y0, 0), frame_h - ph) if frame_h >= ph else 0
    return Crop(x0, y0, pw, ph, (frame_w, frame_h), spec.fill)


def holds(crop: Crop, extent: Box, margin: int) -> bool:
    """Whether `extent` lies inside `crop` at least `margin` px away from every window edge
    that cuts the frame (edges on or past the frame's edges cut nothing)."""
    fw, fh = crop.frame
    left = crop.x0 + (margin if crop.x0 > 0 else 0)
    top = crop.y0 + (margin if crop.y0 > 0 else 0)
    right = crop.x0 + crop.width - (margin if crop.x0 + crop.width < fw else 0)
    bottom = crop.y0 + crop.height - (margin if crop.y0 + crop.height < fh else 0)
    return left <= extent.x0 and top <= extent.y0 and extent.x1 <= right and extent.y1 <= bottom
