"""CVAT tracker: the function specs as CVAT reads them, and the {image, shapes, states} protocol
over a 20-frame sequence (behind the deterministic tracker; the real SAM2 run is in
test_tracking_sam2.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from function.adapters.cvat_tracker import encode_mask
from function.core.tracking.errors import EXPIRED_MESSAGE
from function.service.app import App
from function.service.compose import build_app
from function.settings import KNOWN_ENV

from .fakes import FakeModel
from .support import call, encode_image, make_settings
from .test_cvat_yaml import as_stored_by_nuclio, go_duration_seconds
from .tracking_support import STEP_PX, FakeTracker, H, W, disc_frame

ROOT = Path(__file__).resolve().parent.parent
FILES = {
    k: ROOT / "deploy" / "cvat" / f
    for k, f in (("cpu", "function-tracker.yaml"), ("gpu", "function-tracker-gpu.yaml"))
}


# -- the function specs ------------------------------------------------------------------


def cvat_tracker_view(doc: dict[str, Any]) -> dict[str, Any]:
    """CVAT's parse of a tracker record ([V] in cvat-tracker.md §1)."""
    ann = doc["metadata"]["annotations"]
    kind = ann.get("type")
    if kind not in ("detector", "interactor", "reid", "tracker"):
        raise ValueError(f"unknown function type {kind!r}")
    shapes: list[str] = ["rectangle"]
    if "supported_shape_types" in ann:
        shapes = [s.strip() for s in ann["supported_shape_types"].split(",") if s.strip()]
        if not shapes:
            raise ValueError("supported_shape_types names no shape type")
    return {
        "id": doc["metadata"]["name"],
        "kind": kind,
        "labels_v2": json.loads(ann.get("spec") or "[]"),
        "description": doc["spec"]["description"],
        "name": ann.get("name", doc["metadata"]["name"]),
        "version": int(ann.get("version", "1")),
        "supported_shape_types": shapes,
    }


@pytest.mark.parametrize("kind", FILES)
def test_cvat_reads_a_tracker_of_rectangles_polygons_and_masks(kind: str) -> None:
    doc = yaml.safe_load(FILES[kind].read_text())
    assert all(isinstance(v, str) for v in doc["metadata"]["annotations"].values())
    view = cvat_tracker_view(as_stored_by_nuclio(doc))
    assert view["kind"] == "tracker" and view["description"]
    assert sorted(view["supported_shape_types"]) == ["mask", "polygon", "rectangle"]
    spec = doc["spec"]
    assert spec["handler"] == "handler:handler"
    assert all(e["name"] in KNOWN_ENV and isinstance(e["value"], str) for e in spec["env"])
    assert go_duration_seconds(spec["eventTimeout"]) <= 120  # CVAT gives up after 120 s
    (trigger,) = spec["triggers"].values()
    assert trigger["numWorkers"] == 1  # sessions live in the worker
    assert int(trigger["attributes"]["maxRequestBodySize"]) >= 32 * 2**20


def test_the_two_tracker_files_are_one_function_and_not_the_interactor() -> None:
    cpu, gpu = (yaml.safe_load(FILES[k].read_text()) for k in ("cpu", "gpu"))
    assert cpu["metadata"] == gpu["metadata"]
    interactor = yaml.safe_load((ROOT / "deploy" / "cvat" / "function.yaml").read_text())
    assert cpu["metadata"]["name"] != interactor["metadata"]["name"]
    assert int(gpu["spec"]["resources"]["limits"]["nvidia.com/gpu"]) == 1


def test_a_spec_without_shape_names_is_refused_like_cvat_does() -> None:
    doc = yaml.safe_load(FILES["cpu"].read_text())
    doc["metadata"]["annotations"]["supported_shape_types"] = " , "
    with pytest.raises(ValueError):
        cvat_tracker_view(as_stored_by_nuclio(doc))


# -- the protocol ------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> App:
    return build_app(make_settings(tmp_path, prewarm=False), model=FakeModel(), tracker_model=FakeTracker())


def image(index: int, width: int = W, height: int = H) -> str:
    return base64.b64encode(encode_image(disc_frame(index, width, height))).decode()


RECT = {"type": "rectangle", "points": [10.0, 34.0, 39.0, 63.0], "label_id": 1, "frame": 0}
POLY = {"type": "polygon", "points": [60.0, 10.0, 80.0, 10.0, 80.0, 30.0, 60.0, 30.0]}


def mask_shape() -> dict[str, Any]:
    m = np.zeros((H, W), bool)
    m[60:80, 5:25] = True
    points = encode_mask(m)
    assert points is not None
    return {"type": "mask", "points": points}


def tracker_call(app: App, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    reply = call(app, "POST", "/", body)
    assert reply.status == status, reply.body
    return reply.body


def check_mask_points(points: list[int]) -> np.ndarray:
    *runs, left, top, right, bottom = points
    assert all(isinstance(v, int) and v >= 0 for v in points)
    assert 0 <= left <= right < W and 0 <= top <= bottom < H
    assert sum(runs) == (right - left + 1) * (bottom - top + 1)
    return np.array([left, top, right, bottom])


def test_twenty_frames_of_a_rectangle_a_polygon_and_a_mask(app: App) -> None:
    shapes = [RECT, POLY, mask_shape()]
    out = tracker_call(app, {"image": image(0), "shapes": shapes, "states": []})
    assert out["shapes"] == shapes and len(out["states"]) == 3
    states = out["states"]
    for state in states:
        assert len(json.dumps(state, separators=(",", ":"))) < 1024
        assert not set(json.dumps(state)) & set("<>") and "http" not in json.dumps(state)
    mask0 = check_mask_points(shapes[2]["points"])
    for i in range(1, 20):
        out = tracker_call(app, {"image": image(i), "shapes": [None, None, None], "states": states})
        rect, poly, mask = out["shapes"]
        states = out["states"]
        assert len(states) == 3 and all(s["step"] == i for s in states)
        dx = STEP_PX * i
        if rect is not None:
            assert rect["type"] == "rectangle" and rect["points"][0] == 10 + dx
        if poly is not None:
            assert poly["type"] == "polygon" and len(poly["points"]) >= 6 and len(poly["points"]) % 2 == 0
            assert min(poly["points"][0::2]) >= 60 + dx
        if mask is not None:
            assert mask["type"] == "mask"
            assert check_mask_points(mask["points"])[0] == min(mask0[0] + dx, W)
        if i == 2:
            assert rect is not None and poly is not None and mask is not None
    # by frame 19 every object has moved 95 px right: out of the 128 px frame or nearly
    assert out["shapes"][1] is None and len(out["states"]) == 3


def test_older_states_stay_valid_and_tampered_ones_are_clear_4xx(app: App) -> None:
    init = tracker_call(app, {"image": image(0), "shapes": [RECT], "states": []})
    s1 = tracker_call(app, {"image": image(1), "shapes": [None], "states": init["states"]})
    s2 = tracker_call(app, {"image": image(2), "shapes": [None], "states": s1["states"]})
    tracker_call(app, {"image": image(3), "shapes": [None], "states": s2["states"]})
    again = tracker_call(app, {"image": image(2), "shapes": [None], "states": s1["states"]})
    assert again["shapes"] == s2["shapes"]  # re-sending step 1 after step 3: same answer
    forged = dict(init["states"][0], session="A" * 22)
    expired = tracker_call(app, {"image": image(1), "shapes": [None], "states": [forged]}, 410)
    assert expired == {"error": EXPIRED_MESSAGE}
    bad = tracker_call(app, {"image": image(1), "shapes": [None], "states": [{"session": 1}]}, 400)
    assert "states[0]" in bad["error"]
    other_size = base64.b64encode(encode_image(disc_frame(1, 64, 48))).decode()
    size = tracker_call(app, {"image": other_size, "shapes": [None], "states": init["states"]}, 422)
    assert "64x48" in size["error"]
    tracker_call(app, {"shapes": [RECT], "states": []}, 400)
    wrong = tracker_call(app, {"image": image(0), "shapes": [{"type": "ellipse", "points": [1, 2]}]}, 422)
    assert "shapes[0].type" in wrong["error"]
    runs = tracker_call(
        app, {"image": image(0), "shapes": [{"type": "mask", "points": [5, 1, 2, 3, 4]}]}, 422
    )
    assert "runs" in runs["error"] or "outside" in runs["error"]


def test_legacy_point_lists_new_objects_mid_track_and_the_object_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, prewarm=False, tracking_max_objects=2)
    app = build_app(settings, model=FakeModel(), tracker_model=FakeTracker())
    init = tracker_call(app, {"image": image(0), "shapes": [[10, 34, 39, 63]], "states": []})
    assert init["states"][0]["type"] == "rectangle"
    # an old UI sends both: the state wins; a new object (no state) starts on this frame
    out = tracker_call(
        app, {"image": image(1), "shapes": [[0, 0, 1, 1], RECT], "states": [init["states"][0], None]}
    )
    assert out["shapes"][0]["points"][0] == 10 + STEP_PX and out["shapes"][1] == RECT
    assert out["states"][0]["session"] != out["states"][1]["session"]
    too_many = tracker_call(app, {"image": image(0), "shapes": [RECT, RECT, RECT], "states": []}, 422)
    assert "TRACKING_MAX_OBJECTS" in too_many["error"]
    metrics = call(app, "GET", "/metrics").body["tracking"]
    assert metrics["sessions"] == 2 and metrics["steps"] == 1


def test_interactor_bodies_still_reach_the_interactor(app: App) -> None:
    reply = call(app, "POST", "/", {"image": image(0), "pos_points": [[24, 48]], "neg_points": []})
    assert reply.status == 200 and "mask" in reply.body and "states" not in reply.body


def test_a_function_without_a_tracking_model_says_so(tmp_path: Path) -> None:
    app = build_app(make_settings(tmp_path, prewarm=False), model=FakeModel())
    reply = call(app, "POST", "/", {"image": image(0), "shapes": [RECT], "states": []})
    assert reply.status == 503 and "tracking needs the SAM2 model" in reply.body["error"]
    assert call(app, "GET", "/metrics").body["tracking"] == {"enabled": False}
