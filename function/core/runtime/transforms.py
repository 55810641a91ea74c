"""SAM2's image and prompt transforms (`sam2.utils.transforms.SAM2Transforms`) in numpy.

- image: to float in [0, 1], resize to 1024x1024 with torchvision's antialiased bilinear
  (`Resize`, antialias on: a triangle filter as wide as the scale factor when shrinking,
  plain half-pixel bilinear when enlarging), then ImageNet normalisation, as [1, 3, S, S];
- prompts: pixel (x, y) -> the S x S frame (`transform_coords(normalize=True)`), boxes as two
  corner points labelled 2 and 3 ahead of the clicks, as `Sam2Model.decode` sends them;
- masks: SAM2's choice among the decoder's four outputs, and the bilinear upsample of the
  kept 256x256 logits that `Sam2Model` does with OpenCV on CPU.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@lru_cache(maxsize=16)
def _resize_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), each (out_size, taps): torch's `_upsample_bilinear2d_aa` weights."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    taps = int(np.ceil(support)) * 2 + 1
    index = np.zeros((out_size, taps), np.int64)
    weight = np.zeros((out_size, taps), np.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        js = np.arange(lo, hi)
        w = np.clip(1.0 - np.abs((js - center + 0.5) * invscale), 0.0, None)
        total = w.sum()
        n = len(js)
        index[i, :n] = js
        index[i, n:] = js[-1] if n else 0
        weight[i, :n] = w / total if total > 0 else w
    return index, weight.astype(np.float32)


def _resize_axis(x: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    index, weight = _resize_taps(x.shape[axis], out_size)
    shape = [1] * x.ndim
    shape[axis] = out_size
    out = np.zeros((*x.shape[:axis], out_size, *x.shape[axis + 1 :]), np.float32)
    for k in range(index.shape[1]):
        w = weight[:, k]
        if not w.any():
            continue
        out += np.take(x, index[:, k], axis=axis).astype(np.float32, copy=False) * w.reshape(shape)
    return out


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (1, 3, size, size) float32, as `SAM2Transforms(image)[None]`."""
    x = _resize_axis(image, size, 0)  # rows first: the wide pass then runs on `size` rows
    x = _resize_axis(x, size, 1)
    x *= np.float32(1 / 255)
    x -= MEAN
    x /= STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def prompt_inputs(
    points: np.ndarray,
    labels: np.ndarray,
    box: tuple[float, float, float, float] | None,
    hw: tuple[int, int],
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel prompts -> (`point_coords` [1, N, 2] float32, `point_labels` [1, N] int32)."""
    h, w = hw
    coords: np.ndarray = np.asarray(points, np.float32).reshape(-1, 2)
    lab: np.ndarray = np.asarray(labels, np.int32).reshape(-1)
    if box is not None:
        coords = np.concatenate([np.asarray(box, np.float32).reshape(2, 2), coords])
        lab = np.concatenate([np.array([2, 3], np.int32), lab])
    coords = coords.copy()
    coords[:, 0] = coords[:, 0] / np.float32(w)
    coords[:, 1] = coords[:, 1] / np.float32(h)
    coords = coords * np.float32(size)
    return coords[None].astype(np.float32), lab[None]


def choose_mask(
    masks: np.ndarray, iou: np.ndarray, multimask: bool, config: dict[str, Any]
) -> tuple[np.ndarray, float]:
    """`masks` [1, 4, h, w] / `iou` [1, 4] from all mask tokens -> (kept logits, its IoU),
    as `MaskDecoder.forward` + `Sam2Model.decode` choose (argmax IoU of what is returned)."""
    if multimask:
        best = 1 + int(iou[0, 1:].argmax())
        return masks[0, best], float(iou[0, best])
    if config.get("dynamic_multimask_via_stability", False):
        single = masks[0, 0]
        delta = config["stability_delta"]
        union = int((single > -delta).sum())
        stability = int((single > delta).sum()) / union if union > 0 else 1.0
        if stability < config["stability_thresh"]:
            best = 1 + int(iou[0, 1:].argmax())
            return masks[0, best], float(iou[0, best])
    return masks[0, 0], float(iou[0, 0])


def upsample(logits: np.ndarray, hw: tuple[int, int], threshold: float) -> np.ndarray:
    """(h, w) logits -> (H, W) bool: bilinear, half-pixel centres (as `Sam2Model.upsample`)."""
    import cv2

    full = cv2.resize(
        np.ascontiguousarray(logits, np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR
    )
    return np.asarray(full > threshold)
