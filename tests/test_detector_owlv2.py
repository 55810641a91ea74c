"""OWLv2 through the same `TransformersDetector` as Grounding DINO: a tiny random OWLv2 saved
like a real one and loaded from DETECTOR_MODEL picks the query path from its config. Random
weights find arbitrary boxes: these tests assert the contract (pixels inside the image, prompt
phrases, thresholds, CVAT's reply), not what trained weights would find."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from function.core.detector import TextPrompt, TextPromptError, Thresholds
from function.core.hf_detector import TransformersDetector
from function.service.compose import build_app

from .fakes import FakeModel
from .owl_support import MAX_QUERY_TOKENS, build_tiny_owlv2
from .support import call, data_uri, encode_image, make_settings, sample_array
from .text_support import number, text_body, text_config, textarea

IMAGE = sample_array(160, 120)
PROMPT = TextPrompt.parse("a cat. remote control. red car")


@pytest.fixture(scope="module")
def owl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_owlv2(tmp_path_factory.mktemp("detector") / "owlv2-tiny")


@pytest.fixture(scope="module")
def owl(owl_dir: Path) -> TransformersDetector:
    return TransformersDetector.load(owl_dir, "cpu")


def test_the_config_picks_the_query_path(owl: TransformersDetector) -> None:
    assert owl.queries and type(owl.model).__name__ == "Owlv2ForObjectDetection"
    assert owl.max_tokens == MAX_QUERY_TOKENS  # per phrase, not per prompt


def test_detections_are_pixel_boxes_inside_the_image_with_prompt_phrases(owl: TransformersDetector) -> None:
    found = owl.detect(IMAGE, PROMPT, Thresholds(0.0, 0.0))
    assert found, "box threshold 0 keeps every patch of the tiny model"
    h, w = IMAGE.shape[:2]
    for d in found:
        assert 0 <= d.box.x0 < d.box.x1 <= w and 0 <= d.box.y0 < d.box.y1 <= h
        assert d.phrase in PROMPT.phrases
        assert 0.0 <= d.score <= 1.0
    assert len({d.phrase for d in found}) > 1, "label indices map back to several phrases"
    scores = [d.score for d in found]
    assert scores == sorted(scores, reverse=True)


def test_the_box_threshold_changes_the_count_and_the_text_threshold_does_not(
    owl: TransformersDetector,
) -> None:
    everything = owl.detect(IMAGE, PROMPT, Thresholds(0.0, 0.0))
    middle = float(np.median([d.score for d in everything]))
    fewer = owl.detect(IMAGE, PROMPT, Thresholds(middle, 0.0))
    assert 0 < len(fewer) < len(everything)
    assert all(d.score > middle for d in fewer)
    assert owl.detect(IMAGE, PROMPT, Thresholds(1.0, 0.0)) == []
    assert owl.detect(IMAGE, PROMPT, Thresholds(0.0, 1.0)) == everything  # one score per box


def test_a_phrase_over_the_query_limit_is_refused(owl: TransformersDetector) -> None:
    many = TextPrompt.parse(". ".join(["car", "red car", "cat", "dog", "tree", "person"] * 3))
    owl.check(many)  # many short phrases are fine: each is one query
    long = TextPrompt.parse("car " * MAX_QUERY_TOKENS)
    with pytest.raises(TextPromptError, match="tokens in one phrase"):
        owl.detect(IMAGE, long, Thresholds())


def test_a_cvat_detector_request_answers_masks_labelled_with_phrases(tmp_path: Path, owl_dir: Path) -> None:
    settings = make_settings(tmp_path, detector_model=owl_dir, detector_phrases="car. cat. dog")
    app = build_app(settings, model=FakeModel())
    frame = base64.b64encode(encode_image(IMAGE)).decode()
    loose = call(app, "POST", "/", {"image": frame, "threshold": 0.01})
    assert loose.status == 200, loose.body
    assert loose.body and {o["label"] for o in loose.body} <= {"car", "cat", "dog"}
    for obj in loose.body:
        assert obj["type"] == "mask" and 0.0 <= float(obj["confidence"]) <= 1.0
        *pixels, x0, y0, x1, y1 = obj["mask"]
        assert 0 <= x0 <= x1 < 160 and 0 <= y0 <= y1 < 120
        assert len(pixels) == (x1 - x0 + 1) * (y1 - y0 + 1)
    assert call(app, "POST", "/", {"image": frame, "threshold": 1.0}).body == []


def test_a_label_studio_textarea_answers_labelled_regions(tmp_path: Path, owl_dir: Path) -> None:
    loose = {"text_prompt": {"box_threshold": 0.0}}
    app = build_app(make_settings(tmp_path, detector_model=owl_dir, default_extra_params=loose), FakeModel())
    config = text_config("BrushLabels", labels=("Car", "Cat"))

    def regions(*extra: dict[str, object]) -> list[dict[str, object]]:
        body = text_body(data_uri(encode_image(IMAGE)), [textarea("cat. red car"), *extra], config)
        reply = call(app, "POST", "/predict", body)
        assert reply.status == 200, reply.body
        [result] = reply.body["results"]
        return list(result["result"])

    found = regions()
    brushes = [r for r in found if r["type"] == "brushlabels"]
    assert brushes and len(brushes) * 2 == len(found)  # and a rectangle per detection
    labels = {tuple(r["value"][r["type"]]) for r in found}  # type: ignore[index]
    assert labels <= {("Cat",), ("Car",)}  # "cat" exact (case-insensitive), "red car" -> first label
    assert regions(number("box_threshold", 1.0)) == []
