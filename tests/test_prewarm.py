"""Task-open prewarm: Label Studio's context-null /predict encodes the image in the background."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from function.core.images import content_key
from function.service.app import App

from .fakes import FakeModel
from .support import (
    FakeLabelStudio,
    call,
    data_uri,
    encode_image,
    fake_label_studio,
    fixture,
    keypoint,
    make_app,
    predict_body,
    rle_mask,
    sample_array,
    wait_until,
)

WAIT_S = 10.0
LS_IMAGE = "/data/upload/1/4a4247ed-test_image.png"


@pytest.fixture
def apps() -> Iterator[Callable[..., App]]:
    """`make_app` whose prewarm threads are stopped after the test."""
    made: list[App] = []

    def build(tmp_path: Path, model: FakeModel, **overrides: Any) -> App:
        app = make_app(tmp_path, model, **overrides)
        made.append(app)
        return app

    yield build
    for app in made:
        app.close()


def png(value: int = 30) -> bytes:
    """The sample image with a background of `value`, so images differ in content."""
    pixels = sample_array()
    pixels[pixels == 30] = value
    return encode_image(pixels)


def open_task(app: App, image: str, task_id: int = 1) -> None:
    reply = call(app, "POST", "/predict", predict_body(image, None, task_id=task_id))
    assert reply.status == 200 and reply.body == {"results": []}


def click(app: App, image: str, x_pct: float = 50.0, y_pct: float = 50.0) -> dict[str, Any]:
    reply = call(app, "POST", "/predict", predict_body(image, [keypoint(x_pct, y_pct)]))
    assert reply.status == 200, reply.body
    return reply.body


def mask_of(body: dict[str, Any]) -> np.ndarray:
    value = body["results"][0]["result"][0]["value"]
    return rle_mask(value["rle"], 640, 480) > 0


def drain(app: App) -> dict[str, Any]:
    assert app.prewarmer is not None and app.prewarmer.drain(WAIT_S)
    return app.metrics()


def test_task_open_then_click_hits_the_cache(tmp_path: Path, apps: Callable[..., App]) -> None:
    model = FakeModel(encode_seconds=0.05)
    app = apps(tmp_path, model)
    image = data_uri(png())
    open_task(app, image)
    metrics = drain(app)
    assert model.encode_calls == 1
    assert metrics["prewarm"]["encoded"] == 1 and metrics["prewarm"]["queued"] == 1

    body = click(app, image, 50.0, 50.0)
    assert model.encode_calls == 1  # the click decoded on the prewarmed features
    assert mask_of(body)[240, 320]  # and its mask covers the click
    cache = app.metrics()["feature_cache"]
    assert (cache["hits"], cache["misses"]) == (1, 1)


def test_label_studio_task_open_fetches_once_and_click_reuses_it(
    tmp_path: Path, apps: Callable[..., App]
) -> None:
    ls = FakeLabelStudio(files={LS_IMAGE: png()})
    with fake_label_studio(ls):
        model = FakeModel()
        app = apps(tmp_path, model, label_studio_url=ls.url, label_studio_api_key=ls.legacy)
        reply = call(app, "POST", "/predict", fixture("predict_no_context_batch_retrieve.json")["body"])
        assert reply.body == {"results": []}
        drain(app)
        assert model.encode_calls == 1 and app.labelstudio.media.fetch_count == 1

        body = fixture("predict_interactive_keypointlabels.json")["body"]
        reply = call(app, "POST", "/predict", body)
        assert reply.status == 200 and reply.body["results"][0]["result"]
        # No second download, no second encode: the click used what the task open prepared.
        assert model.encode_calls == 1 and app.labelstudio.media.fetch_count == 1
        assert app.metrics()["feature_cache"]["hits"] == 1


def test_prewarm_uses_the_image_the_project_config_names(tmp_path: Path, apps: Callable[..., App]) -> None:
    config = (
        '<View><Image name="img" value="$photo"/>'
        '<BrushLabels name="tag" toName="img"><Label value="object"/></BrushLabels>'
        '<KeyPointLabels name="tag2" toName="img" smart="true"><Label value="object"/></KeyPointLabels>'
        "</View>"
    )
    model = FakeModel()
    app = apps(tmp_path, model)
    setup = call(app, "POST", "/setup", {"project": "7.1", "schema": config, "extra_params": {}})
    assert setup.status == 200
    photo, other = data_uri(png(40)), data_uri(png(90))
    task = {"id": 3, "data": {"other": other, "photo": photo}}
    call(app, "POST", "/predict", {"tasks": [task], "project": "7.1", "params": {"context": None}})
    drain(app)
    assert model.encode_calls == 1
    assert float(model.encoded_images[0][0, 0, 0]) == 40  # the photo, not the other image


def test_batch_of_50_tasks_encodes_at_most_the_cap(tmp_path: Path, apps: Callable[..., App]) -> None:
    tasks = [{"id": i, "data": {"image": data_uri(png(40 + i))}} for i in range(50)]
    body = {"tasks": tasks, "project": "1.1", "params": {"context": None}}
    for cap, expected in ((None, 1), (3, 3), (0, 0)):
        model = FakeModel()
        overrides = {} if cap is None else {"prewarm_max_tasks": cap}
        app = apps(tmp_path, model, **overrides)
        assert call(app, "POST", "/predict", copy.deepcopy(body)).body == {"results": []}
        drain(app)
        assert model.encode_calls == expected
        # The first tasks of the batch are the ones prepared.
        assert sorted(float(img[0, 0, 0]) for img in model.encoded_images) == [
            40 + i for i in range(expected)
        ]


def test_click_mid_encode_waits_for_that_pass(tmp_path: Path, apps: Callable[..., App]) -> None:
    model = FakeModel(encode_seconds=1.0)
    app = apps(tmp_path, model)
    data = png()
    image = data_uri(data)
    open_task(app, image)
    wait_until(lambda: app.engine.cache.is_in_flight(content_key(data)), WAIT_S)

    body = click(app, image, 25.0, 75.0)
    assert model.encode_calls == 1
    assert mask_of(body)[360, 160]
    cache = app.metrics()["feature_cache"]
    assert (cache["hits"], cache["misses"]) == (1, 1)
    assert drain(app)["prewarm"]["encoded"] == 1


def test_health_answers_while_prewarm_encodes(tmp_path: Path, apps: Callable[..., App]) -> None:
    model = FakeModel(encode_seconds=1.0)
    app = apps(tmp_path, model)
    data = png()
    open_task(app, data_uri(data))
    wait_until(lambda: app.engine.cache.is_in_flight(content_key(data)), WAIT_S)
    assert call(app, "GET", "/health").body["status"] == "UP"
    assert app.engine.cache.is_in_flight(content_key(data))  # answered during the encode


def test_failed_prewarm_leaves_the_click_error_intact(
    tmp_path: Path, apps: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    ls = FakeLabelStudio()  # serves no files: every image answers 404
    with fake_label_studio(ls), caplog.at_level(logging.INFO):
        replies = []
        for prewarm in (True, False):
            model = FakeModel()
            app = apps(
                tmp_path, model, label_studio_url=ls.url, label_studio_api_key=ls.legacy, prewarm=prewarm
            )
            open_task(app, LS_IMAGE)
            if prewarm:
                assert drain(app)["prewarm"]["failed"] == 1
            replies.append(call(app, "POST", "/predict", predict_body(LS_IMAGE, [keypoint(50, 50)])))
            assert model.encode_calls == 0
        with_prewarm, without = replies
        assert with_prewarm.status == without.status == 422
        assert with_prewarm.body == without.body and "404" in with_prewarm.body["error"]
        assert "prewarm of task 1 dropped" in caplog.text
        assert ls.legacy not in caplog.text


def test_undecodable_image_fails_prewarm_and_the_click_still_answers(
    tmp_path: Path, apps: Callable[..., App]
) -> None:
    model = FakeModel()
    app = apps(tmp_path, model)
    # A cut JPEG: its header gives the size, its pixels do not decode (fails inside the encode).
    broken = data_uri(encode_image(sample_array(), "JPEG")[:2000], "image/jpeg")
    open_task(app, broken)
    assert drain(app)["prewarm"]["failed"] == 1
    reply = call(app, "POST", "/predict", predict_body(broken, [keypoint(50, 50)]))
    assert reply.status == 422 and "corrupt" in reply.body["error"]
    # The worker survived: the next task open is prepared.
    open_task(app, data_uri(png()))
    assert drain(app)["prewarm"]["encoded"] == 1


def test_task_open_reply_never_fails_because_of_prewarm(tmp_path: Path, apps: Callable[..., App]) -> None:
    app = apps(tmp_path, FakeModel())
    body = {"tasks": [{"id": 1, "meta": {}}], "project": "1.1", "params": {"context": None}}
    assert call(app, "POST", "/predict", body).body == {"results": []}  # a task without data
    assert app.metrics()["prewarm"]["skipped"] == 1

    def broken(task: dict[str, Any], project: str | None) -> tuple[Any, int | None]:
        raise RuntimeError("unexpected")

    assert app.prewarmer is not None
    app.prewarmer.locate = broken
    reply = call(app, "POST", "/predict", predict_body(data_uri(png()), None))
    assert reply.status == 200 and reply.body == {"results": []}
    assert app.metrics()["prewarm"]["failed"] == 1


def test_prewarm_off_encodes_nothing(tmp_path: Path, apps: Callable[..., App]) -> None:
    def prewarm_threads() -> set[int | None]:
        return {t.ident for t in threading.enumerate() if t.name == "sam2-prewarm"}

    before = prewarm_threads()  # other tests' apps may still have theirs running
    model = FakeModel()
    app = apps(tmp_path, model, prewarm=False)
    open_task(app, data_uri(png()))
    assert app.prewarmer is None and app.labelstudio.on_task_open is None
    assert prewarm_threads() <= before
    assert model.encode_calls == 0
    assert app.metrics()["prewarm"] == {"enabled": False}


def test_clicks_go_ahead_of_queued_prewarm(tmp_path: Path, apps: Callable[..., App]) -> None:
    model = FakeModel()
    app = apps(tmp_path, model)
    with app.activity.track():  # a click in progress
        open_task(app, data_uri(png()))
        time.sleep(0.3)  # the worker had time to start, and did not
        assert model.encode_calls == 0
    drain(app)
    assert model.encode_calls == 1


def test_queue_bound_drops_the_oldest(tmp_path: Path, apps: Callable[..., App]) -> None:
    model = FakeModel()
    app = apps(tmp_path, model, prewarm_queue_size=3)
    with app.activity.track():  # hold the worker so the queue fills
        for i in range(10):
            open_task(app, data_uri(png(40 + i)), task_id=i)
        metrics = app.metrics()["prewarm"]
        assert metrics["pending"] <= 3 and metrics["queued"] == 10
        assert metrics["dropped"] + metrics["pending"] >= 9  # the worker holds at most one job
    metrics = drain(app)["prewarm"]
    assert metrics["encoded"] == model.encode_calls == 10 - metrics["dropped"] <= 4
    # The newest task opens were kept.
    assert float(model.encoded_images[-1][0, 0, 0]) == 49


def test_dedup_queued_cached_and_same_content(tmp_path: Path, apps: Callable[..., App]) -> None:
    files = {"/data/upload/1/a.png": png(), "/data/upload/1/b.png": png()}  # same content, two URLs
    with fake_label_studio(FakeLabelStudio(files=files)) as ls:
        model = FakeModel()
        app = apps(tmp_path, model, label_studio_url=ls.url, label_studio_api_key=ls.legacy)
        with app.activity.track():
            for _ in range(5):
                open_task(app, "/data/upload/1/a.png")  # opened again and again while queued
            open_task(app, "/data/upload/1/b.png")
        metrics = drain(app)["prewarm"]
        assert model.encode_calls == 1
        assert metrics["encoded"] == 1 and metrics["skipped"] >= 4 + 1

        # Already cached (a click got there first): a later task open encodes nothing.
        other = data_uri(png(77))
        click(app, other)
        open_task(app, other)
        assert drain(app)["prewarm"]["encoded"] == 1
        assert model.encode_calls == 2


@pytest.mark.sam2
def test_real_sam2_prewarm_in_the_background_thread(
    tmp_path: Path, apps: Callable[..., App], sam2_model: Any
) -> None:
    """The real encoder runs in the prewarm thread (its own inference mode) and the click reuses it."""
    app = apps(tmp_path, sam2_model)
    image = data_uri(png())
    open_task(app, image)
    assert app.prewarmer is not None and app.prewarmer.drain(300.0)
    assert app.metrics()["prewarm"]["encoded"] == 1 and app.engine.stats.encoder_calls == 1
    body = click(app, image)
    assert body["results"][0]["result"][0]["value"]["rle"]
    assert app.engine.stats.encoder_calls == 1
    assert app.metrics()["feature_cache"]["hits"] == 1


def setup_project(app: App, extra_params: dict[str, Any]) -> None:
    body = {
        "project": "1.1795445671",
        "schema": predict_body("", None)["label_config"],
        "extra_params": extra_params,
    }
    assert call(app, "POST", "/setup", body).status == 200


def test_prewarm_encodes_the_resized_frame_a_click_will_use(tmp_path: Path, apps: Callable[..., App]) -> None:
    model = FakeModel()
    app = apps(tmp_path, model)
    setup_project(app, {"fullframe_resize": 0.5})
    image = data_uri(png())
    open_task(app, image)
    assert drain(app)["prewarm"]["encoded"] == 1
    assert model.encoded_images[0].shape[:2] == (240, 320)  # the resized frame, not the original
    mask = mask_of(click(app, image))
    assert model.encode_calls == 1  # the click found the prewarmed features under its own key
    assert mask[240, 320]


def test_prewarm_skips_projects_whose_view_depends_on_the_click(
    tmp_path: Path, apps: Callable[..., App]
) -> None:
    model = FakeModel()
    app = apps(tmp_path, model)
    setup_project(app, {"subpatching": {"patch_size": 256}})
    open_task(app, data_uri(png()))
    metrics = drain(app)
    assert model.encode_calls == 0 and metrics["prewarm"]["encoded"] == 0
