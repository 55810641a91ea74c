"""Video tracking side by side with SAM2's own video predictor (what the reference backend runs).

Ours: `core.tracking` one frame at a time, features through the engine's cache, a bounded
memory bank. Baseline: `SAM2VideoPredictor` on the same checkpoint (a second instance), the way
the Label Studio reference uses it: the frames written to a JPEG folder, `init_state` loading
all of them, a box on the first frame, `propagate_in_video`. Each call of the reference starts
over (re-split, re-encode); ours finds frames already encoded in the feature cache.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Row

W, H = 320, 240


def _frames(n: int) -> list[np.ndarray]:
    out = []
    yy, xx = np.ogrid[:H, :W]
    for i in range(n):
        img = np.full((H, W, 3), 30, np.uint8)
        img[(xx - 60 - 12 * i) ** 2 + (yy - 120) ** 2 <= 30**2] = (230, 200, 40)
        out.append(img)
    return out


def _box(i: int) -> tuple[float, float, float, float]:
    cx = 60 + 12 * i
    return (cx - 31.0, 89.0, cx + 31.0, 151.0)


def _ours(model: Any, frames: list[np.ndarray]) -> dict[str, float]:
    from function.core.engine import Engine, FeatureCache
    from function.core.geometry import Box
    from function.core.tracking.model import TrackPrompt
    from function.core.tracking.session import SessionLimits, SessionStore
    from function.core.tracking.tracker import Frame, Tracker
    from function.service.compose import tracker_for

    # As the app builds it: on a CPU runtime the memory modules run in torch on a twin.
    tracking = tracker_for(model)
    assert tracking is not None, "this model cannot track"
    tracker = Tracker(Engine(model, FeatureCache(2**30)), tracking, SessionStore(SessionLimits()))
    t0 = time.perf_counter()
    snap, _ = tracker.start(Frame.from_pixels(0, frames[0]), {"o": TrackPrompt(box=Box(*_box(0)))})
    snap, _ = tracker.step(snap.ref, Frame.from_pixels(1, frames[1]))
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    for i in range(2, len(frames)):
        snap, _ = tracker.step(snap.ref, Frame.from_pixels(i, frames[i]))
    per_frame = (time.perf_counter() - t1) / max(len(frames) - 2, 1)
    bank = snap.banks["o"].nbytes
    # The same frames again (Label Studio re-tracks after an edit): features come from the cache.
    t2 = time.perf_counter()
    again, _ = tracker.start(Frame.from_pixels(0, frames[0]), {"o": TrackPrompt(box=Box(*_box(0)))})
    for i in range(1, len(frames)):
        again, _ = tracker.step(again.ref, Frame.from_pixels(i, frames[i]))
    repeat = (time.perf_counter() - t2) / len(frames)
    return {"first": first, "per_frame": per_frame, "repeat": repeat, "bank": bank}


def _reference(config: str, checkpoint: Path, frames: list[np.ndarray], device: str) -> dict[str, float]:
    import torch
    from PIL import Image
    from sam2.build_sam import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(config, str(checkpoint), device=device)

    def one_call() -> tuple[float, list[float], Any]:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            for i, px in enumerate(frames):  # the reference splits the video into JPEGs per call
                Image.fromarray(px).save(Path(tmp) / f"{i}.jpg", quality=95)
            with torch.inference_mode():
                state = predictor.init_state(tmp)
                predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=np.array(_box(0)))
                stamps = []
                for _ in predictor.propagate_in_video(state):
                    stamps.append(time.perf_counter())
        return t0, stamps, state

    t0, stamps, state = one_call()
    first = stamps[1] - t0  # the frame after the prompt frame
    gaps = np.diff(stamps[1:])
    per_frame = float(np.mean(gaps)) if len(gaps) else float("nan")
    outputs = state["output_dict_per_obj"][0]
    held = [o for d in outputs.values() for o in d.values()]
    bank = sum(o["maskmem_features"].numel() * 2 + o["obj_ptr"].numel() * 4 for o in held)
    images = state["images"].numel() * state["images"].element_size()
    t1, stamps2, _ = one_call()
    repeat = (stamps2[-1] - t1) / len(frames)
    return {"first": first, "per_frame": per_frame, "repeat": repeat, "bank": bank, "images": images}


def rows(model: Any, config: str, checkpoint: Path, device: str, quick: bool) -> list[Row]:
    frames = _frames(4 if quick else 10)
    ours = _ours(model, frames)
    ref = _reference(config, checkpoint, frames, device)
    n = len(frames)
    mib = 2**20
    return [
        Row(
            "tracking: time to first tracked frame (box on frame 0)",
            ours["first"] * 1e3,
            ref["first"] * 1e3,
            "ms",
        ),
        Row(
            "tracking: per frame, encode + memory step (1 object)",
            ours["per_frame"] * 1e3,
            ref["per_frame"] * 1e3,
            "ms",
        ),
        Row(
            f"tracking: same {n} frames tracked again, per frame",
            ours["repeat"] * 1e3,
            ref["repeat"] * 1e3,
            "ms",
            "ours: features cached; reference re-encodes",
        ),
        Row(
            f"tracking: memory per object after {n} frames",
            ours["bank"] / mib,
            ref["bank"] / mib,
            "MiB",
            "ours bounded: prompt + 6 frames + pointers",
        ),
        Row(
            f"tracking: decoded video held ({n} frames)",
            0.0,
            ref["images"] / mib,
            "MiB",
            "ours streams frames",
        ),
    ]


def main() -> None:
    """`python -m bench.tracking_case [--quick] [--device cpu]`: the tracking rows alone."""
    import argparse

    from bench.common import markdown, model_files
    from function.core.sam2_model import Sam2Model

    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="tiny")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="sam2-bench-") as tmp:
        files = model_files(args.model, Path(tmp))
        model = Sam2Model.load(files.config, files.checkpoint, args.device)
        found = rows(model, files.config, files.checkpoint, args.device, args.quick)
    print(f"Model: {files.label}, device {args.device}.\n")
    print(markdown(found))


if __name__ == "__main__":
    main()
