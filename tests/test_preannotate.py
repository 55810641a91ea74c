"""`python -m function preannotate`: predictions for a whole project through the Label Studio
API, resumable by model version. Label Studio is a small fake serving the API calls it uses."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from function.service.compose import build_app
from function.tools.preannotate import LabelStudioClient, preannotate

from .fakes import FakeModel
from .support import data_uri, encode_image, make_settings, running, sample_array
from .text_support import text_config

TOKEN = "0123456789abcdef0123456789abcdef01234567"  # a legacy token: sent as "Token ..."
CONFIG = text_config("BrushLabels")


class FakeProject:
    def __init__(self, n: int) -> None:
        self.tasks = [
            {
                "id": i + 1,
                "data": {"image": data_uri(encode_image(sample_array(160, 120) + i))},
                "predictions": [],
            }
            for i in range(n)
        ]
        self.posted: list[dict[str, Any]] = []
        self.lock = threading.Lock()


@contextmanager
def fake_ls(project: FakeProject) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, status: int, body: Any) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            if self.headers.get("Authorization") != f"Token {TOKEN}":
                return self._json(401, {"detail": "no"})
            url = urlsplit(self.path)
            if url.path == "/api/projects/5/":
                return self._json(200, {"id": 5, "label_config": CONFIG})
            if url.path == "/api/tasks/":
                q = parse_qs(url.query)
                page, size = int(q["page"][0]), int(q["page_size"][0])
                chunk = project.tasks[(page - 1) * size : page * size]
                if not chunk and page > 1:
                    return self._json(404, {"detail": "Invalid page."})
                return self._json(200, {"tasks": chunk, "total": len(project.tasks)})
            self._json(404, {})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/api/predictions/":
                return self._json(404, {})
            with project.lock:
                project.posted.append(body)
                task = next(t for t in project.tasks if t["id"] == body["task"])
                task["predictions"].append({"model_version": body["model_version"]})
            self._json(201, {"id": len(project.posted)})

    with running(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        yield url


def test_every_task_gets_a_prediction_and_a_rerun_skips_them(tmp_path: Path, tiny_detector_dir: Path) -> None:
    project = FakeProject(5)
    model = FakeModel()
    settings = make_settings(tmp_path, detector_model=tiny_detector_dir, prewarm=False)
    app = build_app(settings, model=model)
    prompt = {"default": "car. cat", "box_threshold": 0.0, "text_threshold": 0.0}
    with fake_ls(project) as url:
        client = LabelStudioClient(url, TOKEN)
        counts = preannotate(app, client, 5, prompt, progress=False)
        assert (counts.done, counts.skipped, counts.failed) == (5, 0, 0)
        assert [p["task"] for p in project.posted] == [1, 2, 3, 4, 5]
        for p in project.posted:
            assert p["model_version"] == app.labelstudio.version and p["result"]
            assert {r["value"][r["type"]][0] for r in p["result"]} <= {"Car", "Cat"}
        again = preannotate(app, client, 5, prompt, progress=False)
        assert (again.done, again.skipped) == (0, 5) and len(project.posted) == 5
    assert model.encode_calls == 5


def test_the_command_without_a_detector_says_so(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    env = {"PATH": "/usr/bin:/bin", "LABEL_STUDIO_API_KEY": TOKEN, "HOME": str(tmp_path)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "function",
            "preannotate",
            "--label-studio-url",
            "http://127.0.0.1:9",
            "--project",
            "5",
            "--text",
            "car",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1 and "DETECTOR_MODEL" in run.stderr


def test_download_detector_offline_fails_with_a_clear_message(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "function", "download-detector", "--dir", str(tmp_path / "det")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert "error: cannot download" in run.stderr and "DETECTOR_MODEL" in run.stderr
    assert "Traceback" not in run.stderr
