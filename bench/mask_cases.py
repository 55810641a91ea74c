"""Cases on masks alone: brush RLE, upsampling the kept mask, polygons, CVAT reply size."""

from __future__ import annotations

import importlib
import json
from functools import partial
from typing import Any

import cv2
import numpy as np

from function.adapters.labelstudio.brush import mask_to_rle

from .common import Row, time_ms

BIG = (4000, 3000)  # width, height


def smooth_logits(seed: int = 0) -> np.ndarray:
    """(256, 256) float32 logits shaped like SAM2's low-res output: smooth blobs."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0.0, 8.0, (12, 12)).astype(np.float32)
    return cv2.resize(coarse, (256, 256), interpolation=cv2.INTER_CUBIC) - 4.0


def smooth_mask(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A SAM-like mask at full size: 256x256 logits upsampled and thresholded, as uint8 0/255."""
    full = cv2.resize(smooth_logits(seed), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.where(full > 0, 255, 0).astype(np.uint8)


def speckled(mask: np.ndarray, fraction: float, seed: int = 1) -> np.ndarray:
    out = mask.copy()
    flip = np.random.default_rng(seed).random(mask.shape) < fraction
    out[flip] ^= 255
    return out


def object_mask(width: int, height: int, box_w: int, box_h: int) -> np.ndarray:
    """One object with a wobbly outline, `box_w` x `box_h`, centred; bool."""
    mask = np.zeros((height, width), np.uint8)
    t = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    r = 1.0 + 0.12 * np.sin(7 * t) + 0.05 * np.sin(23 * t)
    xs = width / 2 + box_w / 2 * r * np.cos(t) / 1.17
    ys = height / 2 + box_h / 2 * r * np.sin(t) / 1.17
    cv2.fillPoly(mask, [np.stack([xs, ys], 1).round().astype(np.int32)], 1)
    return mask.astype(bool)


def rle_rows(quick: bool) -> list[Row]:
    from label_studio_sdk.converter.brush import mask2rle

    w, h = BIG
    cases = [("smooth", smooth_mask(w, h))]
    if not quick:
        cases.append(("2% speckled", speckled(cases[0][1], 0.02)))
    rows = []
    for label, mask in cases:
        ours_ms, ours = time_ms(partial(mask_to_rle, mask), 3 if quick else 10)
        sdk_ms, sdk = time_ms(partial(mask2rle, mask), 2 if quick else 3)
        assert ours == sdk, f"brush RLE differs from the SDK on the {label} mask"
        rows.append(
            Row(f"brush RLE {w}x{h}, {label} mask vs SDK mask2rle", ours_ms, sdk_ms, "ms", "identical bytes")
        )
    return rows


def upsample_rows(model: Any, quick: bool) -> list[Row]:
    """The kept 256x256 logits to full size: OpenCV (ours on CPU) vs SAM2's F.interpolate."""
    import torch

    if not hasattr(model, "upsample"):
        return []
    logits = torch.from_numpy(smooth_logits(3))[None, None]
    rows = []
    chosen = model.upsample_with
    try:
        for w, h in ((1024, 768), BIG):
            model.upsample_with = "cv2"
            ours_ms, ours = time_ms(partial(model.upsample, logits, (h, w)), 3 if quick else 10)
            model.upsample_with = "torch"
            torch_ms, ref = time_ms(partial(model.upsample, logits, (h, w)), 3 if quick else 10)
            differ = int(np.count_nonzero(ours != ref))
            note = f"{differ} of {ours.size} pixels differ"
            rows.append(Row(f"upsample kept mask to {w}x{h}, cv2 vs torch", ours_ms, torch_ms, "ms", note))
    finally:
        model.upsample_with = chosen
    return rows


def _plain_polygon(mask: np.ndarray, max_points: int) -> list[np.ndarray]:
    """The obvious loop: all outer contours of the full frame, epsilon doubled until it fits."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = []
    for contour in contours:
        epsilon = 1.0
        approx = cv2.approxPolyDP(contour, epsilon, True)
        while len(approx) > max_points:
            epsilon *= 2
            approx = cv2.approxPolyDP(contour, epsilon, True)
        out.append(approx.reshape(-1, 2))
    return out


def polygon_rows(quick: bool) -> list[Row]:
    w, h = BIG
    mask = object_mask(w, h, 2400, 1800)
    plain_ms, plain = time_ms(lambda: _plain_polygon(mask, 100), 3 if quick else 10)
    ours_ms: float | None = None
    note = "function.masks.polygons not in this tree"
    try:
        masks = importlib.import_module("function.core.masks")
        polygons = masks.polygons
    except (ImportError, AttributeError):
        polygons = None
    if polygons is not None:
        ours_ms, ours = time_ms(lambda: polygons(mask, max_points=100), 3 if quick else 10)
        assert ours and all(3 <= len(p) <= 100 for p in ours), "polygons broke max_points"
        note = f"{sum(len(p) for p in ours)} vs {sum(len(p) for p in plain)} vertices"
    return [Row(f"polygon max_points=100 on a {w}x{h} mask", ours_ms, plain_ms, "ms", note)]


def _cropped_reply(mask: np.ndarray) -> dict[str, Any]:
    """CVAT's reply for `mask`: function.cvat.render when the adapter is in this tree, else
    the same shape built here (0/255 crop to the tight bounds, inclusive bounds, outline)."""
    try:
        render = importlib.import_module("function.adapters.cvat").render
    except AttributeError:
        render = None
    if render is not None:
        return dict(render(mask))
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])
    crop = mask[y0 : y1 + 1, x0 : x1 + 1]
    contours, _ = cv2.findContours(crop.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outline = max(contours, key=cv2.contourArea).reshape(-1, 2) + np.array([x0, y0])
    return {
        "mask": (crop.astype(np.uint8) * 255).tolist(),
        "bounds": [x0, y0, x1, y1],
        "points": outline.astype(float).tolist(),
    }


def full_frame_json_bytes(mask: np.ndarray) -> int:
    """Length of `json.dumps((mask * 255).tolist(), separators=(",", ":"))` without building
    the 12 M-element list: "[" rows "]", each row "[" values "]", 0 is 1 char, 255 is 3."""
    h, w = mask.shape
    on = int(np.count_nonzero(mask))
    return 2 + (h - 1) + h * (2 + (w - 1)) + on * 3 + (mask.size - on)


def cvat_rows() -> list[Row]:
    w, h = BIG
    mask = object_mask(w, h, 160, 120)
    ours = len(json.dumps(_cropped_reply(mask), separators=(",", ":")))
    # Check the formula on a slice small enough to serialise.
    part = mask[1400:1600, 1900:2100]
    assert full_frame_json_bytes(part) == len(
        json.dumps((part.astype(np.uint8) * 255).tolist(), separators=(",", ":"))
    )
    full = full_frame_json_bytes(mask)
    return [
        Row(
            f"CVAT reply, 160x120 object on {w}x{h}: crop vs full-frame mask", ours / 1024, full / 1024, "KiB"
        )
    ]
