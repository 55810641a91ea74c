"""Prompts in pixel coordinates of one image: positive/negative points and an optional box."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidPrompt
from .geometry import Box

POSITIVE, NEGATIVE = 1, 0

# How far outside the image a click may land and still be clipped onto it (in pixels):
# clicks on the very border arrive as W or H, or a hair past it after float rounding.
BORDER_TOLERANCE_PX = 2.0


@dataclass(frozen=True)
class Prompt:
    """SAM2 prompt. `points` is (N, 2) float64 (x, y) pixels, `labels` (N,) int32 1/0."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    box: Box | None = None

    @classmethod
    def build(
        cls, positive: list[tuple[float, float]], negative: list[tuple[float, float]], box: Box | None
    ) -> Prompt:
        pts = [*positive, *negative]
        points = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray([POSITIVE] * len(positive) + [NEGATIVE] * len(negative), np.int32)
        return cls(points, labels, box)

    @property
    def is_empty(self) -> bool:
        return self.box is None and len(self.points) == 0

    @property
    def can_segment(self) -> bool:
        """A prompt with only negative points describes no object."""
        return self.box is not None or bool((self.labels == POSITIVE).any())

    @property
    def is_single_point(self) -> bool:
        return self.box is None and len(self.points) == 1

    def validated(self, width: int, height: int, max_points: int) -> Prompt:
        """Check against an image of `width` x `height` and clip border clicks onto it.

        Raises InvalidPrompt for non-finite values, too many points, coordinates
        clearly outside the image and empty boxes.
        """
        if len(self.points) > max_points:
            raise InvalidPrompt(f"too many prompt points: {len(self.points)} > {max_points}")
        coords = [*self.points.ravel().tolist(), *(self.box.as_tuple() if self.box else ())]
        if not all(math.isfinite(v) for v in coords):
            raise InvalidPrompt("prompt coordinates must be finite numbers")
        tol = BORDER_TOLERANCE_PX
        if len(self.points):
            xs, ys = self.points[:, 0], self.points[:, 1]
            if (
                (xs < -tol).any()
                or (ys < -tol).any()
                or (xs > width + tol).any()
                or (ys > height + tol).any()
            ):
                raise InvalidPrompt(f"prompt point outside the {width}x{height} image")
        points = np.clip(self.points, 0.0, [max(width - 1, 0), max(height - 1, 0)])
        box = self.box
        if box is not None:
            if box.x1 < -tol or box.y1 < -tol or box.x0 > width + tol or box.y0 > height + tol:
                raise InvalidPrompt(f"prompt box outside the {width}x{height} image")
            box = box.clipped(width, height)
            if box.width < 1 or box.height < 1:
                raise InvalidPrompt("prompt box has zero size")
        return Prompt(points, self.labels, box)
