"""Tracking test helpers: a moving disc (arrays and an mp4 made with PyAV) and a deterministic
stand-in for SAM2's video memory behind the `TrackerModel` interface."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from function.core.model import ImageFeatures
from function.core.tracking.model import FrameMemory, MemoryBank, TrackedMask, TrackPrompt
from function.core.tracking.tracker import Frame

W, H = 128, 96
RADIUS = 14
STEP_PX = 5


def disc_center(index: int, start: tuple[int, int] = (24, 48)) -> tuple[int, int]:
    return start[0] + STEP_PX * index, start[1]


def disc_frame(index: int, width: int = W, height: int = H, start: tuple[int, int] = (24, 48)) -> np.ndarray:
    """Dark background, a yellow disc moving right by STEP_PX pixels per frame."""
    img = np.full((height, width, 3), 30, np.uint8)
    cx, cy = disc_center(index, start)
    yy, xx = np.ogrid[:height, :width]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= RADIUS**2] = (230, 200, 40)
    return img


def disc_box(index: int, start: tuple[int, int] = (24, 48)) -> tuple[float, float, float, float]:
    cx, cy = disc_center(index, start)
    return (cx - RADIUS, cy - RADIUS, cx + RADIUS + 1, cy + RADIUS + 1)


def frame(index: int, pixels: np.ndarray | None = None) -> Frame:
    """A Frame keyed by content, as the adapters build it."""
    return Frame.from_pixels(index, disc_frame(index) if pixels is None else pixels)


def write_mp4(path: Path, frames: int, width: int = W, height: int = H, fps: int = 10) -> Path:
    """An H.264 (or MPEG-4) mp4 of the moving disc, written with PyAV."""
    import av

    with av.open(str(path), "w") as out:
        try:
            stream = out.add_stream("libx264", rate=fps)
        except Exception:  # pragma: no cover - PyAV wheels ship libx264; fall back if not
            stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": "4"}  # a keyframe every 4 frames: seeking is exercised
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(disc_frame(i, width, height), format="rgb24")
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


class FakeTracker:
    """Deterministic `TrackerModel`: the prompt's mask (a filled box or the given mask) moved
    by `shift` pixels per frame since the prompt frame. Counts calls; a memory is 1 MiB."""

    def __init__(self, shift: int = STEP_PX, memory_bytes: int = 1 << 20) -> None:
        self.shift = shift
        self.memory_bytes = memory_bytes
        self.starts = 0
        self.tracks = 0
        self.banks_seen: list[MemoryBank] = []
        self._lock = threading.Lock()

    def start(
        self, features: ImageFeatures, prompt: TrackPrompt, frame: int
    ) -> tuple[FrameMemory, TrackedMask]:
        h, w = features.image_hw
        if prompt.mask is not None:
            mask = prompt.mask.astype(bool)
        else:
            assert prompt.box is not None
            b = prompt.box
            mask = np.zeros((h, w), bool)
            mask[round(b.y0) : round(b.y1), round(b.x0) : round(b.x1)] = True
        with self._lock:
            self.starts += 1
        return FrameMemory({"mask": mask, "frame": frame}, self.memory_bytes), TrackedMask(mask, 1.0, True)

    def track(self, features: ImageFeatures, bank: MemoryBank, frame: int) -> tuple[FrameMemory, TrackedMask]:
        with self._lock:
            self.tracks += 1
            self.banks_seen.append(bank)
        base = bank.prompt.data["mask"]
        dx = (frame - bank.prompt_frame) * self.shift
        mask = np.zeros_like(base)
        if abs(dx) < base.shape[1]:
            if dx >= 0:
                mask[:, dx:] = base[:, : base.shape[1] - dx]
            else:
                mask[:, :dx] = base[:, -dx:]
        present = bool(mask.any())
        return FrameMemory({"mask": mask, "frame": frame}, self.memory_bytes), TrackedMask(mask, 1.0, present)

    def pointer_only(self, memory: FrameMemory) -> FrameMemory:
        return FrameMemory(
            {"frame": memory.data["frame"], "mask": memory.data["mask"]}, 1024, mask_memory=False
        )

    # MemoryCodec: what the shared tier stores (tracking/shared.py)
    def export_memory(self, memory: FrameMemory) -> dict[str, np.ndarray]:
        return {"mask": memory.data["mask"], "frame": np.array([memory.data["frame"]], np.int64)}

    def import_memory(self, arrays: Mapping[str, np.ndarray], mask_memory: bool) -> FrameMemory:
        data = {"mask": arrays["mask"].copy(), "frame": int(arrays["frame"][0])}
        return FrameMemory(data, self.memory_bytes if mask_memory else 1024, mask_memory)
