"""Text prompts end to end against a real Label Studio 1.23.2: a TextArea project, a text prompt
through `interactive-annotating` whose labelled regions Label Studio accepts as an annotation,
and "Retrieve predictions" over 20 tasks storing 20 predictions.

Real handler behind the local server, real SAM2.1 tiny and a tiny Grounding DINO, both with
random weights: the checks are on the protocol, not on what is found. The batch runs under a
small PREDICT_BUDGET_S so that it cannot fit: the function answers the first task, Label Studio
then asks per task, and every task ends up with a prediction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from function.service.server import LocalServer

from .local_function import serve_function
from .lsfixture import LabelStudioServer
from .support import encode_image, sample_array
from .text_support import text_config, textarea

pytestmark = [pytest.mark.labelstudio, pytest.mark.sam2]

W, H = 160, 120
CONFIG = text_config("BrushLabels", labels=("Car", "Cat"))
EXTRA = {
    "return_format": {"type": "BrushLabels"},
    "text_prompt": {"default": "car. cat", "box_threshold": 0.0, "text_threshold": 0.0},
}


@pytest.fixture(scope="module")
def text_function(
    label_studio: LabelStudioServer,
    tiny_checkpoint: Path,
    tiny_detector_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalServer]:
    env = {
        "MODEL_CHECKPOINT": str(tiny_checkpoint),
        "DEVICE": "cpu",
        "WARMUP": "false",
        "PREWARM": "false",
        "DETECTOR_MODEL": str(tiny_detector_dir),
        "PREDICT_BUDGET_S": "2",
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.pat,
        "PROJECT_STORE_DIR": str(tmp_path_factory.mktemp("projects")),
    }
    with serve_function(env) as server:
        yield server


def make_project(ls: LabelStudioServer, function: LocalServer, tasks: int) -> dict[str, Any]:
    resp = ls.api("POST", "/api/projects", json={"title": f"text-{tasks}", "label_config": CONFIG})
    assert resp.status_code == 201, resp.text
    project = resp.json()["id"]
    for i in range(tasks):
        png = encode_image(sample_array(W, H) + i)
        resp = ls.api(
            "POST", f"/api/projects/{project}/import", files={"file": (f"t{i}.png", png, "image/png")}
        )
        assert resp.status_code == 201, resp.text
    resp = ls.api(
        "POST",
        "/api/ml",
        json={
            "url": function.url,
            "project": project,
            "is_interactive": True,
            "title": "sam2-text",
            "extra_params": json.dumps(EXTRA),
        },
    )
    assert resp.status_code == 201, f"{resp.status_code} {resp.text}\n{ls.log_tail()}"
    tasks_list = ls.api("GET", f"/api/tasks?project={project}&page_size=100").json()["tasks"]
    return {"project": project, "ml": resp.json()["id"], "tasks": [t["id"] for t in tasks_list]}


def test_a_text_prompt_becomes_an_accepted_annotation(
    label_studio: LabelStudioServer, text_function: LocalServer
) -> None:
    ids = make_project(label_studio, text_function, 1)
    task = ids["tasks"][0]
    resp = label_studio.api(
        "POST",
        f"/api/ml/{ids['ml']}/interactive-annotating",
        json={"task": task, "context": {"result": [textarea("car")]}},
    )
    assert resp.status_code == 200, resp.text[:500]
    body = resp.json()
    assert "errors" not in body, body
    regions = body["data"]["result"]
    assert regions and {r["type"] for r in regions} == {"brushlabels", "rectanglelabels"}
    assert all(r["value"][r["type"]] == ["Car"] for r in regions)
    saved = label_studio.api("POST", f"/api/tasks/{task}/annotations/", json={"result": regions})
    assert saved.status_code == 201, saved.text[:500]
    stored = label_studio.api("GET", f"/api/annotations/{saved.json()['id']}/").json()
    assert len(stored["result"]) == len(regions)


def test_retrieve_predictions_over_20_tasks_stores_20(
    label_studio: LabelStudioServer, text_function: LocalServer
) -> None:
    ids = make_project(label_studio, text_function, 20)
    assert len(ids["tasks"]) == 20
    resp = label_studio.api(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={ids['project']}",
        json={"selectedItems": {"all": True, "excluded": []}, "project": ids["project"]},
        timeout=900,
    )
    assert resp.status_code == 200, f"{resp.status_code} {resp.text[:500]}\n{label_studio.log_tail()}"
    predictions = label_studio.api("GET", f"/api/predictions/?project={ids['project']}").json()
    assert sorted(p["task"] for p in predictions) == sorted(ids["tasks"])
    assert all(p["model_version"] and p["result"] for p in predictions)
