"""Masks -> Label Studio result regions."""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from .brush import mask_to_rle
from .interface import Control


def region_id() -> str:
    return secrets.token_hex(5)


def brush_region(
    mask: np.ndarray, score: float, control: Control, to_name: str, label: str | None
) -> dict[str, Any]:
    """One brush region whose RLE covers exactly the mask's W x H pixels."""
    h, w = mask.shape
    value: dict[str, Any] = {"format": "rle", "rle": mask_to_rle(mask.astype(np.uint8) * 255)}
    if control.tag.lower() == "brushlabels":
        value["brushlabels"] = [label] if label is not None else []
    return {
        "id": region_id(),
        "from_name": control.name,
        "to_name": to_name,
        "original_width": int(w),
        "original_height": int(h),
        "image_rotation": 0,
        "value": value,
        "score": float(score),
        "type": control.tag.lower(),
        "readonly": False,
    }
