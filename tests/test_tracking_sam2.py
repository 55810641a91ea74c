"""Tracking with the real SAM2 code (random-weight tiny) on a small moving disc.

Frames are 128x96 but SAM2 encodes every frame at 1024x1024 (seconds on CPU), so the whole
file encodes frames 0-3 once, through one shared engine, and reuses them (cache hits).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from function.core.engine import Engine, FeatureCache
from function.core.geometry import Box
from function.core.tracking.model import RECENT_MASK_MEMORIES, TrackPrompt
from function.core.tracking.sam2_tracker import Sam2Tracker
from function.core.tracking.session import SessionLimits, SessionStore
from function.core.tracking.tracker import ObjectPlan, Tracker

from .conftest import TINY
from .tracking_support import disc_box, disc_frame, frame

pytestmark = pytest.mark.sam2

MASKMEM_BYTES = 64 * 64 * 64 * 2  # [1, 64, 64, 64] bf16, as SAM2's video predictor keeps it


@pytest.fixture(scope="module")
def tracker(sam2_model) -> Tracker:  # type: ignore[no-untyped-def]
    engine = Engine(sam2_model, FeatureCache(1 << 30))
    return Tracker(engine, Sam2Tracker(sam2_model), SessionStore(SessionLimits()))


def test_the_video_model_shares_the_image_models_weights(sam2_model) -> None:  # type: ignore[no-untyped-def]
    video = Sam2Tracker(sam2_model).video
    image = sam2_model.sam2
    assert video is not image
    pairs = zip(video.parameters(), image.parameters(), strict=True)
    assert all(a is b for a, b in pairs)  # the same tensors, not copies
    assert video.memory_attention is image.memory_attention
    assert video.binarize_mask_from_pts_for_mem_enc and not image.binarize_mask_from_pts_for_mem_enc


def test_steps_match_sam2s_own_video_predictor(
    tracker: Tracker, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Same checkpoint, same frames, a box on frame 0: SAM2VideoPredictor.propagate_in_video
    and our per-frame steps give the same object pointers, memories, scores and masks."""
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    frames = [disc_frame(i) for i in range(3)]
    for i, px in enumerate(frames):
        Image.fromarray(px).save(tmp_path / f"{i}.jpg")
    predictor = build_sam2_video_predictor(TINY.config, str(tiny_checkpoint), device="cpu")
    transforms = tracker.model.image_model.predictor._transforms  # type: ignore[attr-defined]
    with torch.inference_mode():
        state = predictor.init_state(str(tmp_path))
        # The same pixels and resize as our path (not the JPEGs): compare the tracking alone.
        state["images"] = torch.stack([transforms(px) for px in frames])
        state["cached_features"] = {}
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=np.array(disc_box(0)))
        theirs = {i: masks[0, 0].numpy() > 0 for i, _, masks in predictor.propagate_in_video(state)}
    outputs = state["output_dict_per_obj"][0]
    encoded = tracker.engine.stats.encoder_calls
    snap, ours = tracker.start(frame(0), {"disc": TrackPrompt(box=Box(*disc_box(0)))})
    results = [ours["disc"]]
    banks = [snap.banks["disc"]]
    for i in (1, 2):
        snap, ours = tracker.step(snap.ref, frame(i))
        results.append(ours["disc"])
        banks.append(snap.banks["disc"])
    assert tracker.engine.stats.encoder_calls - encoded == 3  # one encode per frame
    for i in range(3):
        memory = banks[i].prompt if i == 0 else banks[i].recent[-1][1]
        out = outputs["cond_frame_outputs" if i == 0 else "non_cond_frame_outputs"][i]
        assert torch.allclose(memory.data["obj_ptr"], out["obj_ptr"].float(), atol=1e-4), i
        diff = (memory.data["maskmem_features"].float() - out["maskmem_features"].float()).abs()
        assert float(diff.mean()) < 1e-3, i
        assert results[i].score == pytest.approx(float(out["object_score_logits"]), abs=1e-3)
        agree = (results[i].mask == theirs[i]).mean()
        assert agree > 0.995, (i, agree)
    assert memory.nbytes == MASKMEM_BYTES + 256 * 4


def test_reverse_and_window_on_frames_already_encoded(tracker: Tracker) -> None:
    encoded = tracker.engine.stats.encoder_calls
    plans = {
        "back": ObjectPlan(TrackPrompt(box=Box(*disc_box(2))), prompt_frame=2, last_frame=0, reverse=True),
        "mask": ObjectPlan(
            TrackPrompt(mask=disc_frame(1)[..., 0] > 100), prompt_frame=1, last_frame=0, reverse=True
        ),
    }
    seen: dict[int, dict[str, Any]] = dict(tracker.run([frame(i) for i in (2, 1, 0)], plans))
    assert {i: set(v) for i, v in seen.items()} == {2: {"back"}, 1: {"back", "mask"}, 0: {"back", "mask"}}
    assert all(r.mask.shape == (96, 128) for v in seen.values() for r in v.values())
    assert tracker.engine.stats.encoder_calls == encoded  # all three frames came from the cache


def test_session_memory_stays_flat_over_many_steps(tracker: Tracker) -> None:
    """Re-stepping on cached frames (the model cost is the same, the encode is not): the
    bank keeps the prompt, 6 mask memories and 15 pointers, whatever the number of steps."""
    store = SessionStore(SessionLimits(versions_kept=1))
    flat = Tracker(tracker.engine, tracker.model, store)
    snap, _ = flat.start(frame(0), {"disc": TrackPrompt(box=Box(*disc_box(0)))})
    sizes = []
    for i in range(1, 9):
        snap, _ = flat.step(snap.ref, frame(i % 3))
        sizes.append(store.nbytes)
    bank = snap.banks["disc"]
    assert sum(m.mask_memory for _, m in bank.recent) == RECENT_MASK_MEMORIES
    # past 6 steps only a pointer (1 KiB) is added per step until 15 are kept
    assert all(b - a == 256 * 4 for a, b in itertools.pairwise(sizes[6:]))
    assert sizes[-1] < (1 + RECENT_MASK_MEMORIES) * (MASKMEM_BYTES + 1024) + 16 * 1024


def test_cvat_tracker_calls_on_the_real_model(sam2_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """init + 2 continue calls with a rectangle, a polygon and a mask: types kept, masks
    well-formed, states small, one encode per frame for the three objects."""
    import base64
    import json

    from function.adapters.cvat_tracker import encode_mask
    from function.service.compose import build_app

    from .support import call, encode_image, make_settings

    app = build_app(make_settings(tmp_path, prewarm=False), model=sam2_model)
    frames = [base64.b64encode(encode_image(disc_frame(i))).decode() for i in range(3)]
    disc = disc_frame(0)[..., 0] > 100
    shapes = [
        {"type": "rectangle", "points": list(disc_box(0))},
        {"type": "polygon", "points": [60.0, 10.0, 90.0, 10.0, 90.0, 30.0, 60.0, 30.0]},
        {"type": "mask", "points": encode_mask(disc)},
    ]
    reply = call(app, "POST", "/", {"image": frames[0], "shapes": shapes, "states": []})
    assert reply.status == 200, reply.body
    states = reply.body["states"]
    for i in (1, 2):
        reply = call(app, "POST", "/", {"image": frames[i], "shapes": [None] * 3, "states": states})
        assert reply.status == 200, reply.body
        states = reply.body["states"]
        assert [s["step"] for s in states] == [i] * 3
        assert all(len(json.dumps(s, separators=(",", ":"))) < 1024 for s in states)
        for shape, kind in zip(reply.body["shapes"], ("rectangle", "polygon", "mask"), strict=True):
            assert shape is None or shape["type"] == kind
            if shape is not None and kind == "mask":
                *runs, left, top, right, bottom = shape["points"]
                assert sum(runs) == (right - left + 1) * (bottom - top + 1)
                assert 0 <= left <= right < 128 and 0 <= top <= bottom < 96
    assert app.engine.stats.encoder_calls == 3
    assert app.tracker is not None and app.tracker.stats.steps == 6
