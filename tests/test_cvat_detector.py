"""CVAT detector: `{image, threshold}` -> CVAT's list of mask objects, and the deploy files
CVAT reads. SAM2 is the fake (its mask fills the box); the detector a tiny random Grounding
DINO loaded through DETECTOR_MODEL."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from function.core.detector import TextPrompt
from function.service.app import App
from function.service.compose import build_app
from function.settings import KNOWN_ENV, Settings, SettingsError

from .fakes import FakeModel
from .support import call, encode_image, make_settings, sample_array
from .test_cvat_yaml import as_stored_by_nuclio, cvat_function

ROOT = Path(__file__).resolve().parent.parent
FILES = {"cpu": ROOT / "deploy/cvat/function-text.yaml", "gpu": ROOT / "deploy/cvat/function-text-gpu.yaml"}
W, H = 160, 120
FRAME = base64.b64encode(encode_image(sample_array(W, H))).decode()


def make(tmp_path: Path, detector_dir: Path | None, **kw: Any) -> App:
    kw.setdefault("detector_phrases", "car. cat. dog")
    settings = make_settings(tmp_path, detector_model=detector_dir, detector_text_threshold=0.0, **kw)
    return build_app(settings, model=FakeModel())


def test_the_reply_is_the_list_cvat_expects(tmp_path: Path, tiny_detector_dir: Path) -> None:
    app = make(tmp_path, tiny_detector_dir)
    reply = call(app, "POST", "/", {"image": FRAME, "threshold": 0.01})
    assert reply.status == 200, reply.body
    objects = reply.body
    assert isinstance(objects, list) and objects
    for obj in objects:
        assert obj["label"] in ("car", "cat", "dog") and obj["type"] == "mask"
        assert 0.0 <= float(obj["confidence"]) <= 1.0
        *pixels, x0, y0, x1, y1 = obj["mask"]
        assert 0 <= x0 <= x1 < W and 0 <= y0 <= y1 < H
        assert len(pixels) == (x1 - x0 + 1) * (y1 - y0 + 1)  # else CVAT saves an undecodable mask
        assert set(pixels) <= {0, 255} and 255 in pixels
        points = np.array(obj["points"]).reshape(-1, 2)
        assert len(points) >= 3
        assert (points[:, 0] >= x0).all() and (points[:, 0] <= x1).all()
        assert (points[:, 1] >= y0).all() and (points[:, 1] <= y1).all()


def test_the_threshold_changes_the_number_of_objects(tmp_path: Path, tiny_detector_dir: Path) -> None:
    app = make(tmp_path, tiny_detector_dir)
    loose = call(app, "POST", "/", {"image": FRAME, "threshold": 0.01}).body
    strict = call(app, "POST", "/", {"image": FRAME, "threshold": 1.0}).body
    assert len(loose) > len(strict) == 0
    # CVAT sends no threshold when it is 0: the deployment's box threshold applies.
    default = call(app, "POST", "/", {"image": FRAME}).body
    assert all(float(o["confidence"]) > app.settings.detector_box_threshold for o in default)


@pytest.mark.parametrize("threshold", [1.5, -0.2, "high", True])
def test_a_threshold_outside_zero_one_is_a_422(
    tmp_path: Path, tiny_detector_dir: Path, threshold: Any
) -> None:
    app = make(tmp_path, tiny_detector_dir)
    reply = call(app, "POST", "/", {"image": FRAME, "threshold": threshold})
    assert reply.status == 422 and "threshold" in reply.body["error"]


def test_interactor_bodies_still_reach_the_interactor(tmp_path: Path, tiny_detector_dir: Path) -> None:
    app = make(tmp_path, tiny_detector_dir)
    reply = call(app, "POST", "/", {"image": FRAME, "pos_points": [[80, 60]], "neg_points": []})
    assert reply.status == 200 and set(reply.body) == {"mask", "bounds", "points"}


def test_without_a_detector_the_call_is_a_422_saying_how_to_enable(tmp_path: Path) -> None:
    app = make(tmp_path, None)
    reply = call(app, "POST", "/", {"image": FRAME})
    assert reply.status == 422 and "DETECTOR_MODEL" in reply.body["error"]


def test_bad_phrases_stop_the_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="DETECTOR_PHRASES"):
        make(tmp_path, None, detector_phrases=" . ")


# -- the deploy files --------------------------------------------------------------------


def load(kind: str) -> dict[str, Any]:
    doc = yaml.safe_load(FILES[kind].read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("kind", FILES)
def test_cvat_lists_it_as_a_detector_whose_labels_are_the_phrases(kind: str) -> None:
    doc = load(kind)
    view = cvat_function(as_stored_by_nuclio(doc))
    assert view["kind"] == "detector" and view["description"]
    assert all(isinstance(v, str) for v in doc["metadata"]["annotations"].values())
    env = {e["name"]: e["value"] for e in doc["spec"]["env"]}
    assert set(env) <= set(KNOWN_ENV) and all(isinstance(v, str) for v in env.values())
    names = [label["name"] for label in view["labels_v2"]]
    assert all(label["type"] == "mask" for label in view["labels_v2"])
    assert names == list(TextPrompt.parse(env["DETECTOR_PHRASES"]).phrases)
    settings = Settings.from_env(env)
    assert settings.detector_model == Path(env["DETECTOR_MODEL"])
    mounts = [v["volumeMount"]["mountPath"] for v in doc["spec"]["volumes"]]
    assert env["DETECTOR_MODEL"] in mounts
    assert int(doc["spec"]["triggers"]["http"]["attributes"]["maxRequestBodySize"]) >= 64 * 2**20


def test_cpu_and_gpu_files_are_one_function() -> None:
    cpu, gpu = load("cpu"), load("gpu")
    assert cpu["metadata"] == gpu["metadata"]
    assert int(gpu["spec"]["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert json.loads(cpu["metadata"]["annotations"]["spec"])
