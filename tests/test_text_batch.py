"""Label Studio batch pre-annotation with the project's default prompt: a non-interactive
/predict answers every task (with model_version) when the batch fits the time budget, and only
the first task otherwise, which makes Label Studio ask again one task per call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from function.service.app import App
from function.service.compose import build_app

from .fakes import FakeModel
from .support import call, data_uri, encode_image, make_settings, sample_array
from .text_support import text_body, text_config

W, H = 160, 120
CONFIG = text_config("BrushLabels")
DEFAULT = {"text_prompt": {"default": "car. cat.", "box_threshold": 0.0, "text_threshold": 0.0}}


def batch_body(images: list[str]) -> dict[str, Any]:
    body = text_body(images[0], None, CONFIG, tasks=len(images))
    for task, image in zip(body["tasks"], images, strict=True):
        task["data"]["image"] = image
    return body


def images(n: int) -> list[str]:
    # Different pixels per task: every task is a new image for the caches.
    return [data_uri(encode_image(sample_array(W, H) + i)) for i in range(n)]


def make(tmp_path: Path, detector_dir: Path, model: FakeModel, **kw: Any) -> App:
    settings = make_settings(tmp_path, detector_model=detector_dir, **kw)
    app = build_app(settings, model=model)
    reply = call(
        app, "POST", "/setup", {"project": "7.1795445671", "schema": CONFIG, "extra_params": DEFAULT}
    )
    assert reply.status == 200, reply.body
    return app


def test_a_batch_within_budget_answers_every_task(tmp_path: Path, tiny_detector_dir: Path) -> None:
    model = FakeModel()
    app = make(tmp_path, tiny_detector_dir, model)
    reply = call(app, "POST", "/predict", batch_body(images(4)))
    assert reply.status == 200, reply.body
    results = reply.body["results"]
    assert len(results) == 4
    for r in results:
        assert r["model_version"] == app.labelstudio.version and r["result"]
        assert {x["value"][x["type"]][0] for x in r["result"]} <= {"Car", "Cat"}
    assert model.encode_calls == 4


def test_a_batch_over_budget_answers_the_first_task_then_each_task_alone(
    tmp_path: Path, tiny_detector_dir: Path
) -> None:
    model = FakeModel()
    app = make(tmp_path, tiny_detector_dir, model, predict_budget_s=1e-6)
    pictures = images(3)
    reply = call(app, "POST", "/predict", batch_body(pictures))
    assert reply.status == 200 and len(reply.body["results"]) == 1  # Label Studio's cue to go per task
    first = reply.body["results"][0]
    # Label Studio then asks one task per call; the first image is served from the caches.
    again = call(app, "POST", "/predict", batch_body(pictures[:1]))
    assert len(again.body["results"]) == 1 and len(again.body["results"][0]["result"]) == len(first["result"])
    assert model.encode_calls == 1 and app.metrics()["detector_calls"] == 1
    for picture in pictures[1:]:
        single = call(app, "POST", "/predict", batch_body([picture]))
        assert single.status == 200 and len(single.body["results"]) == 1
    assert model.encode_calls == 3


def test_without_a_default_prompt_no_context_answers_as_before(
    tmp_path: Path, tiny_detector_dir: Path
) -> None:
    model = FakeModel()
    app = build_app(make_settings(tmp_path, detector_model=tiny_detector_dir), model=model)
    reply = call(app, "POST", "/predict", batch_body(images(2)))
    assert reply.status == 200 and reply.body["results"] == [] and model.encode_calls == 0


def test_a_default_prompt_without_a_detector_is_a_422(tmp_path: Path) -> None:
    app = build_app(make_settings(tmp_path), model=FakeModel())
    call(app, "POST", "/setup", {"project": "7.1795445671", "schema": CONFIG, "extra_params": DEFAULT})
    reply = call(app, "POST", "/predict", batch_body(images(2)))
    assert reply.status == 422 and "DETECTOR_MODEL" in reply.body["error"]


def test_an_unreadable_task_in_a_batch_answers_empty_for_that_task(
    tmp_path: Path, tiny_detector_dir: Path
) -> None:
    app = make(tmp_path, tiny_detector_dir, FakeModel())
    pictures = images(2)
    body = batch_body([pictures[0], "data:image/png;base64,aGVsbG8=", pictures[1]])
    reply = call(app, "POST", "/predict", body)
    results = reply.body["results"]
    assert reply.status == 200 and len(results) == 3
    assert results[0]["result"] and results[1]["result"] == [] and results[2]["result"]
