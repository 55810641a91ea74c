"""Helpers for the CVAT interactor tests: request bodies, and reply checks that read a reply
the way the CVAT UI does (the mask put back at `bounds`, the polygon rasterised)."""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np

from function.service.app import App

from .support import call, encode_image, sample_array

W, H = 640, 480
EMPTY = {"mask": [[0]], "bounds": [0, 0, 0, 0], "points": []}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


FRAME = encode_image(sample_array(W, H))


def body(
    image: bytes | str = FRAME,
    pos: list[Any] | None = None,
    neg: list[Any] | None = None,
    box: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "image": image if isinstance(image, str) else b64(image),
        "pos_points": [] if pos is None else pos,
        "neg_points": [] if neg is None else neg,
        "obj_bbox": box,
        **extra,
    }


def full_frame(reply: dict[str, Any], width: int, height: int) -> np.ndarray:
    """Checks the reply's shape rules and returns the mask placed in an (H, W) frame."""
    assert set(reply) == {"mask", "bounds", "points"}
    mask, bounds = reply["mask"], reply["bounds"]
    xtl, ytl, xbr, ybr = bounds
    assert all(type(v) is int for v in bounds)
    assert 0 <= xtl <= xbr <= width - 1 and 0 <= ytl <= ybr <= height - 1
    assert isinstance(mask, list) and len(mask) == ybr - ytl + 1
    assert all(isinstance(row, list) and len(row) == xbr - xtl + 1 for row in mask)
    assert all(type(v) is int and v in (0, 255) for row in mask for v in row)
    frame = np.zeros((height, width), np.uint8)
    frame[ytl : ybr + 1, xtl : xbr + 1] = np.asarray(mask, np.uint8)
    if frame.any():
        check_polygon(reply["points"], frame > 0)
    else:
        assert reply == EMPTY, "an all-zero mask must be the empty result"
    return frame > 0


def largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return labels == 1 + int(np.argmax(stats[1:count, cv2.CC_STAT_AREA]))


def check_polygon(points: list[list[float]], mask: np.ndarray) -> None:
    height, width = mask.shape
    assert len(points) >= 3
    for x, y in points:
        assert isinstance(x, float) and isinstance(y, float)
        assert 0 <= x <= width - 1 and 0 <= y <= height - 1
    drawn = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(drawn, [np.round(np.asarray(points)).astype(np.int32)], 1)
    component = largest_component(mask)
    covered = (drawn.astype(bool) & component).sum() / component.sum()
    assert covered > 0.9, f"polygon covers only {covered:.0%} of the largest component"


def disc(cx: float, cy: float, r: int, width: int = W, height: int = H) -> np.ndarray:
    yy, xx = np.ogrid[:height, :width]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2


def interact(app: App, payload: Any, status: int = 200) -> dict[str, Any]:
    reply = call(app, "POST", "/", payload, {"Content-Type": "application/json"})
    assert reply.status == status, reply.body
    return reply.body
