"""End to end against a real Label Studio 1.23.2 with a video project: an mp4 uploaded, the
backend connected, a VideoRectangle keyframe sent through `interactive-annotating`, the
tracked `videorectangle` saved as an annotation. Real handler, real SAM2.1 tiny (random
weights: the boxes' content is meaningless, the protocol is what is checked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from function.service.server import LocalServer

from .lsfixture import LabelStudioServer
from .test_labelstudio_e2e import function_server, interactive  # noqa: F401 - shared fixture
from .tracking_support import H, W, disc_box, write_mp4

pytestmark = [pytest.mark.labelstudio, pytest.mark.sam2]

CONFIG = """<View>
  <Labels name="videoLabels" toName="video"><Label value="Ball"/></Labels>
  <Video name="video" value="$video" framerate="10.0"/>
  <VideoRectangle name="box" toName="video" smart="true"/>
</View>"""


def test_a_keyframe_becomes_a_track_and_is_saved(
    label_studio: LabelStudioServer,
    function_server: LocalServer,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    resp = label_studio.api("POST", "/api/projects", json={"title": "sam2-video", "label_config": CONFIG})
    assert resp.status_code == 201, resp.text
    project = resp.json()["id"]
    mp4 = write_mp4(tmp_path / "disc.mp4", 6).read_bytes()
    resp = label_studio.api(
        "POST", f"/api/projects/{project}/import", files={"file": ("disc.mp4", mp4, "video/mp4")}
    )
    assert resp.status_code == 201, resp.text
    (task,) = label_studio.api("GET", f"/api/tasks?project={project}").json()["tasks"]
    assert task["data"]["video"].startswith("/data/upload/")
    resp = label_studio.api(
        "POST",
        "/api/ml",
        json={
            "url": function_server.url,
            "project": project,
            "is_interactive": True,
            "title": "sam2-video",
            "extra_params": json.dumps({"max_frames_to_track": 1}),
        },
    )
    assert resp.status_code == 201, f"{resp.status_code} {resp.text}\n{label_studio.log_tail()}"
    ml = resp.json()["id"]
    x0, y0, x1, y1 = disc_box(1)
    keyframe = {
        "frame": 2,
        "x": x0 * 100 / W,
        "y": y0 * 100 / H,
        "width": (x1 - x0) * 100 / W,
        "height": (y1 - y0) * 100 / H,
        "enabled": True,
        "rotation": 0,
        "time": 0.2,
    }
    region: dict[str, Any] = {
        "id": "ball1",
        "from_name": "box",
        "to_name": "video",
        "type": "videorectangle",
        "origin": "manual",
        "value": {"sequence": [keyframe], "framesCount": 6, "duration": 0.6, "labels": ["Ball"]},
    }
    data = interactive(label_studio, {"ml": ml, "task": task["id"]}, [region])
    (result,) = data["result"]
    assert result["type"] == "videorectangle" and result["id"] == "ball1"
    assert (result["from_name"], result["to_name"]) == ("box", "video")
    sequence = result["value"]["sequence"]
    assert sequence[0] == keyframe
    assert [item["frame"] for item in sequence] == [2, 3]
    assert all(0 <= item["x"] <= 100 and item["width"] > 0 for item in sequence)
    annotation = {"result": [result], "ground_truth": False}
    resp = label_studio.api("POST", f"/api/tasks/{task['id']}/annotations", json=annotation)
    assert resp.status_code == 201, resp.text
    saved = label_studio.api("GET", f"/api/annotations/{resp.json()['id']}").json()
    assert [i["frame"] for i in saved["result"][0]["value"]["sequence"]] == [2, 3]
