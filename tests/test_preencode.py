"""`python -m function preencode` against the tests' fake Label Studio and a real Redis.

Pagination, resume (a second run encodes nothing), a broken image reported and skipped,
Ctrl-C stopping after the current image, a folder of images for CVAT; and afterwards the
function's first click on a pre-encoded image runs no encoder.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from function.tools import preencode

from .cvat_support import body as cvat_body
from .fakes import SharingFakeModel
from .redis_support import RedisServer
from .support import (
    FakeLabelStudio,
    call,
    data_uri,
    encode_image,
    fake_label_studio,
    keypoint,
    make_app,
    predict_body,
    sample_array,
)

LEGACY = "0123456789abcdef0123456789abcdef01234567"


def image(shade: int) -> bytes:
    img = sample_array(64, 48)
    img[:4, :4] = shade
    return encode_image(img)


def project(ls: FakeLabelStudio, pid: int, count: int, broken: int | None = None) -> None:
    tasks = []
    for i in range(count):
        path = f"/data/upload/{pid}/img{i}.png"
        ls.files[path] = b"\x89PNG not really" if i == broken else image(i)
        tasks.append({"id": 100 + i, "data": {"image": path}})
    ls.projects[pid] = tasks


def args(**kw: Any) -> argparse.Namespace:
    base = {"project": None, "images": None, "label_studio_url": None, "data_key": None}
    return argparse.Namespace(**{**base, "page_size": 3, "no_progress": True, **kw})


@pytest.fixture
def env(tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> RedisServer:
    for name in list(os.environ):
        if name.startswith(("LABEL_STUDIO", "FEATURE_STORE", "UPSTREAM", "CVAT_FUNCTIONS")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FEATURE_STORE_URL", redis_server.url)
    monkeypatch.setenv("FEATURE_STORE_TIMEOUT_MS", "2000")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", LEGACY)
    monkeypatch.setenv("PROJECT_STORE_DIR", str(tmp_path / "projects"))
    monkeypatch.setenv("WARMUP", "false")
    return redis_server


@pytest.fixture
def ls() -> Iterator[FakeLabelStudio]:
    with fake_label_studio(FakeLabelStudio(legacy=LEGACY)) as server:
        yield server


def stored_keys(redis: RedisServer) -> int:
    return len(redis.client().keys("sam2-nuclio:*"))


def test_a_project_paginated_resumed_with_a_broken_image_reported(
    env: RedisServer, ls: FakeLabelStudio, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project(ls, 3, count=7, broken=4)
    project(ls, 9, count=2)  # another project: not touched
    model = SharingFakeModel()
    assert preencode.main(args(project=3, label_studio_url=ls.url), model=model) == 1
    out = capsys.readouterr().out
    assert "7 of 7 images" in out and "6 encoded and stored, 0 already stored" in out
    assert "1 failed" in out and "failed: task 104:" in out
    assert "/data/upload" not in out  # the report names tasks, never image URLs
    assert model.encode_calls == 6 and stored_keys(env) == 6
    pages = [path for method, path, _ in ls.requests if path.startswith("/api/tasks")]
    assert len(pages) == 3 and all("project=3" in p and "page_size=3" in p for p in pages)

    again = SharingFakeModel()
    assert preencode.main(args(project=3, label_studio_url=ls.url), model=again) == 1
    assert "0 encoded and stored, 6 already stored" in capsys.readouterr().out
    assert again.encode_calls == 0

    # The function (another process in production) answers the first click without encoding.
    function_model = SharingFakeModel()
    app = make_app(tmp_path / "fn", function_model, feature_store_url=env.url, feature_store_timeout_s=2.0)
    reply = call(app, "POST", "/predict", predict_body(data_uri(image(2)), [keypoint(50, 50, w=64, h=48)]))
    assert reply.status == 200 and function_model.encode_calls == 0


def test_ctrl_c_stops_after_the_current_image(env: RedisServer, ls: FakeLabelStudio, tmp_path: Path) -> None:
    project(ls, 3, count=6)
    app = make_app(
        tmp_path / "pre",
        SharingFakeModel(),
        feature_store_url=env.url,
        feature_store_timeout_s=2.0,
        label_studio_url=ls.url,
        label_studio_api_key=LEGACY,
    )
    total, jobs = preencode.label_studio_jobs(app, 3, page_size=4)

    def interrupting() -> Iterator[preencode.Job]:
        for n, job in enumerate(jobs):
            if n != 2:
                yield job
                continue

            def load(job: preencode.Job = job) -> Any:
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends, while image 3 loads
                return job.load()

            yield dataclasses.replace(job, load=load)

    with preencode.Stop() as stop:
        report = preencode.run(app, interrupting(), total, stop.event, progress=False)
    assert report.stopped and report.encoded == 3 and stored_keys(env) == 3
    assert "stopped after 3 of 6 images" in report.summary()


def test_a_folder_of_images_for_cvat(
    env: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "frames"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        (folder / ("sub" if i else "") / f"f{i}.png").write_bytes(image(i))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "notes.txt").write_text("not an image")
    assert preencode.main(args(images=folder), model=SharingFakeModel()) == 1
    out = capsys.readouterr().out
    assert "3 encoded and stored" in out and "failed: broken.jpg:" in out
    function_model = SharingFakeModel()
    app = make_app(tmp_path / "fn", function_model, feature_store_url=env.url, feature_store_timeout_s=2.0)
    reply = call(app, "POST", "/", cvat_body(image(1), pos=[[30, 20]]))
    assert reply.status == 200 and function_model.encode_calls == 0


def test_needs_the_tier_and_a_token(
    env: RedisServer, ls: FakeLabelStudio, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    assert preencode.main(args(project=3, label_studio_url=ls.url), model=SharingFakeModel()) == 2
    assert "LABEL_STUDIO_API_KEY" in capsys.readouterr().err
    monkeypatch.delenv("FEATURE_STORE_URL")
    assert preencode.main(args(images=Path(".")), model=SharingFakeModel()) == 2
    assert "FEATURE_STORE_URL" in capsys.readouterr().err
