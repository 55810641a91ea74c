"""End to end against a real Label Studio 1.23.2: PAT auth, an uploaded image, the backend
connected with `POST /api/ml`, and interactive annotation through
`POST /api/ml/{id}/interactive-annotating` with a keypoint and a rectangle.

The function is the real handler module behind the local server, with a real SAM2.1 tiny
(random weights) loaded from a checkpoint file and served, as on a CPU deployment, by
onnxruntime from the graphs exported from it. Random weights make the mask content
meaningless, so the checks are on the protocol: the answer reaches the browser API, the RLE
decodes to exactly the image's size, and the second click costs no image-encoder pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from function.service.server import LocalServer

from .local_function import serve_function
from .lsfixture import LabelStudioServer
from .support import (
    LABEL_CONFIG,
    encode_image,
    keypoint,
    rectangle,
    region_mask,
    sample_array,
    wait_until,
)

pytestmark = [pytest.mark.labelstudio, pytest.mark.sam2]

W, H = 640, 480


@pytest.fixture(scope="module")
def function_server(
    label_studio: LabelStudioServer, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServer]:
    """`python -m function serve` in-process: real handler, real SAM2 tiny, PAT from the web login."""
    env = {
        "MODEL_CHECKPOINT": str(tiny_checkpoint),
        "DEVICE": "cpu",
        # The CPU deployment's runtime: the graphs exported from this checkpoint (once per test
        # session, shared with tests/test_runtime_parity.py), served by onnxruntime.
        "RUNTIME": "onnxruntime",
        "WARMUP": "false",
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.pat,
        "PROJECT_STORE_DIR": str(tmp_path_factory.mktemp("projects")),
    }
    with serve_function(env) as server:
        yield server


@pytest.fixture(scope="module")
def connected(label_studio: LabelStudioServer, function_server: LocalServer) -> dict[str, Any]:
    """A project with the fixtures' label config, the sample PNG as its task, SAM2 connected."""
    resp = label_studio.api("POST", "/api/projects", json={"title": "sam2-e2e", "label_config": LABEL_CONFIG})
    assert resp.status_code == 201, resp.text
    project = resp.json()["id"]
    png = encode_image(sample_array())
    resp = label_studio.api(
        "POST", f"/api/projects/{project}/import", files={"file": ("test_image.png", png, "image/png")}
    )
    assert resp.status_code == 201, resp.text
    tasks = label_studio.api("GET", f"/api/tasks?project={project}").json()["tasks"]
    assert len(tasks) == 1
    assert tasks[0]["data"]["image"].startswith("/data/upload/")
    resp = label_studio.api(
        "POST",
        "/api/ml",
        json={
            "url": function_server.url,
            "project": project,
            "is_interactive": True,
            "title": "sam2",
            # Label Studio's UI sends extra_params as a JSON string.
            "extra_params": json.dumps({"return_format": {"type": "BrushLabels"}}),
        },
    )
    assert resp.status_code == 201, f"{resp.status_code} {resp.text}\n{label_studio.log_tail()}"
    ml = resp.json()
    assert ml["state"] != "ER", ml
    return {"project": project, "task": tasks[0]["id"], "ml": ml["id"]}


def metrics(server: LocalServer) -> dict[str, Any]:
    resp = requests.get(f"{server.url}/metrics", timeout=10)
    assert resp.status_code == 200
    return dict(resp.json())


def interactive(label_studio: LabelStudioServer, ids: dict[str, Any], regions: list[dict[str, Any]]) -> Any:
    resp = label_studio.api(
        "POST",
        f"/api/ml/{ids['ml']}/interactive-annotating",
        json={"task": ids["task"], "context": {"result": regions}},
    )
    assert resp.status_code == 200, f"{resp.status_code} {resp.text[:500]}\n{label_studio.log_tail()}"
    body = resp.json()
    assert "errors" not in body, body
    return body["data"]


def assert_brush_region(region: dict[str, Any]) -> np.ndarray:
    assert region["type"] == "brushlabels"
    assert region["from_name"] == "tag" and region["to_name"] == "image"
    assert (region["original_width"], region["original_height"]) == (W, H)
    assert region["value"]["format"] == "rle"
    assert region["value"]["brushlabels"] == ["object"]
    return region_mask(region)


def test_connect_reports_the_function_model_version(
    label_studio: LabelStudioServer, connected: dict[str, Any], function_server: LocalServer
) -> None:
    health = requests.get(f"{function_server.url}/health", timeout=10).json()
    ml = label_studio.api("GET", f"/api/ml/{connected['ml']}").json()
    assert ml["model_version"] == health["model_version"]
    assert (health["runtime"], health["precision"]) == ("onnxruntime", "f32")


def test_keypoint_then_rectangle_through_label_studio(
    label_studio: LabelStudioServer, connected: dict[str, Any], function_server: LocalServer
) -> None:
    before = metrics(function_server)["encoder_calls"]

    data = interactive(label_studio, connected, [keypoint(46.9, 50.0)])
    assert len(data["result"]) == 1
    assert_brush_region(data["result"][0])
    assert isinstance(data["score"], float)
    assert data["model_version"]

    data = interactive(label_studio, connected, [rectangle(30, 30, 35, 40)])
    assert len(data["result"]) == 1
    assert_brush_region(data["result"][0])

    # Both clicks are on the same image: one encoder pass, the second was decoder-only.
    after = metrics(function_server)
    assert after["runtime"] == "onnxruntime"  # the clicks ran through the exported graphs
    assert after["encoder_calls"] - before == 1
    assert after["decoder_calls"] >= 2
    assert after["feature_cache"]["hits"] >= 1


def test_first_click_after_opening_a_task_is_answered_from_the_cache(
    label_studio: LabelStudioServer, connected: dict[str, Any], function_server: LocalServer
) -> None:
    """Issue 8: opening a task makes Label Studio call /predict with context null; the function
    encodes that image in the background, so the annotator's first click costs no encoder pass."""
    # A new image (different content from the other tests') as a new task of the project.
    pixels = sample_array()
    pixels[pixels == 30] = 90
    resp = label_studio.api(
        "POST",
        f"/api/projects/{connected['project']}/import",
        files={"file": ("second.png", encode_image(pixels), "image/png")},
    )
    assert resp.status_code == 201, resp.text
    tasks = label_studio.api("GET", f"/api/tasks?project={connected['project']}").json()["tasks"]
    task = max(t["id"] for t in tasks)
    before = metrics(function_server)

    # What the browser does when the annotator opens the task.
    resp = label_studio.api("GET", f"/api/tasks/{task}")
    assert resp.status_code == 200, resp.text
    # A CPU encode on a loaded CI machine can take a while.
    wait_until(
        lambda: metrics(function_server)["prewarm"]["encoded"] > before["prewarm"]["encoded"],
        timeout_s=300.0,
        interval_s=0.2,
    )
    opened = metrics(function_server)
    assert opened["encoder_calls"] == before["encoder_calls"] + 1

    data = interactive(label_studio, {**connected, "task": task}, [keypoint(46.9, 50.0)])
    assert_brush_region(data["result"][0])
    after = metrics(function_server)
    assert after["encoder_calls"] == opened["encoder_calls"]  # the first click ran no encoder
    assert after["feature_cache"]["hits"] == opened["feature_cache"]["hits"] + 1
