"""`preencode` against the real Label Studio of the end-to-end test: a project of uploaded images
listed through its API over two pages, with its PAT; a second run resumes (nothing encoded)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from function.tools import preencode

from .fakes import SharingFakeModel
from .lsfixture import LabelStudioServer
from .redis_support import RedisServer
from .support import LABEL_CONFIG, encode_image, sample_array

pytestmark = pytest.mark.labelstudio


def test_preencode_a_real_label_studio_project(
    label_studio: LabelStudioServer,
    redis_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    resp = label_studio.api(
        "POST", "/api/projects", json={"title": "preencode", "label_config": LABEL_CONFIG}
    )
    assert resp.status_code == 201, resp.text
    project = resp.json()["id"]
    for i in range(3):
        img = sample_array(64, 48)
        img[:4, :4] = i
        files = {"file": (f"img{i}.png", encode_image(img), "image/png")}
        resp = label_studio.api("POST", f"/api/projects/{project}/import", files=files)
        assert resp.status_code == 201, resp.text
    for name in list(os.environ):
        if name.startswith(("LABEL_STUDIO", "FEATURE_STORE", "UPSTREAM", "CVAT_FUNCTIONS")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FEATURE_STORE_URL", redis_server.url)
    monkeypatch.setenv("FEATURE_STORE_TIMEOUT_MS", "2000")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.pat)
    monkeypatch.setenv("PROJECT_STORE_DIR", str(tmp_path / "projects"))
    args = argparse.Namespace(
        project=project,
        images=None,
        label_studio_url=label_studio.url,
        data_key=None,
        page_size=2,  # two pages for three tasks
        no_progress=True,
    )
    model = SharingFakeModel()
    assert preencode.main(args, model=model) == 0
    assert "3 of 3 images" in capsys.readouterr().out and model.encode_calls == 3
    assert len(redis_server.client().keys("sam2-nuclio:*")) == 3
    again = SharingFakeModel()
    assert preencode.main(args, model=again) == 0
    assert "0 encoded and stored, 3 already stored" in capsys.readouterr().out
    assert again.encode_calls == 0
