"""The detector interface and its transformers implementation, on a tiny random Grounding DINO
loaded through the production path. Random weights find arbitrary boxes: these tests assert
the contract (pixels inside the image, prompt phrases, ordering, thresholds), not what trained
weights would find."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from function.core.detector import DetectorMissing, TextPrompt, TextPromptError, Thresholds, snap_phrase
from function.core.hf_detector import TransformersDetector

from .support import sample_array

IMAGE = sample_array(160, 120)
PROMPT = TextPrompt.parse("a cat. remote control. red car")


def test_prompt_is_normalised_the_langsam_way() -> None:
    prompt = TextPrompt.parse("  Red CAR.person\n remote   control.. car ")
    assert prompt.phrases == ("red car", "person", "remote control", "car")
    assert prompt.text == "red car. person. remote control. car."


@pytest.mark.parametrize("raw", ["", "  ", " . . ", "\n"])
def test_an_empty_prompt_is_refused(raw: str) -> None:
    with pytest.raises(TextPromptError, match="empty"):
        TextPrompt.parse(raw)


def test_a_prompt_must_be_a_short_string() -> None:
    with pytest.raises(TextPromptError, match="string"):
        TextPrompt.parse(["car"])
    with pytest.raises(TextPromptError, match="too long"):
        TextPrompt.parse("car. " * 1000)


@pytest.mark.parametrize("box,text", [(-0.1, 0.2), (0.3, 1.5), (True, 0.2), ("0.3", 0.2)])
def test_thresholds_outside_zero_one_are_refused(box: object, text: object) -> None:
    with pytest.raises(TextPromptError, match="threshold"):
        Thresholds().with_overrides(box, text)


def test_thresholds_default_to_langsam_values() -> None:
    assert Thresholds() == Thresholds(0.3, 0.25)
    assert Thresholds().with_overrides(0.5, None) == Thresholds(0.5, 0.25)


def test_detector_labels_snap_to_prompt_phrases() -> None:
    phrases = ("red car", "remote control", "cat")
    assert snap_phrase("cat", phrases) == "cat"
    assert snap_phrase("remote control. [SEP]", phrases) == "remote control"
    assert snap_phrase("a red", phrases) == "red car"
    assert snap_phrase("", phrases) is None
    assert snap_phrase("[SEP]", phrases) is None


def test_a_directory_without_a_detector_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(DetectorMissing, match="download-detector"):
        TransformersDetector.load(tmp_path, "cpu")


def test_detections_are_pixel_boxes_inside_the_image_with_prompt_phrases(
    tiny_detector: TransformersDetector,
) -> None:
    found = tiny_detector.detect(IMAGE, PROMPT, Thresholds(0.0, 0.0))
    assert found, "box threshold 0 keeps every query of the tiny model"
    h, w = IMAGE.shape[:2]
    for d in found:
        assert 0 <= d.box.x0 < d.box.x1 <= w and 0 <= d.box.y0 < d.box.y1 <= h
        assert d.phrase in PROMPT.phrases
        assert 0.0 <= d.score <= 1.0
    scores = [d.score for d in found]
    assert scores == sorted(scores, reverse=True)


def test_the_box_threshold_changes_the_number_of_detections(tiny_detector: TransformersDetector) -> None:
    everything = tiny_detector.detect(IMAGE, PROMPT, Thresholds(0.0, 0.0))
    middle = float(np.median([d.score for d in everything]))
    fewer = tiny_detector.detect(IMAGE, PROMPT, Thresholds(middle, 0.0))
    assert 0 < len(fewer) < len(everything)
    assert all(d.score > middle for d in fewer)
    assert tiny_detector.detect(IMAGE, PROMPT, Thresholds(1.0, 0.0)) == []


def test_the_text_threshold_drops_boxes_that_name_no_phrase(tiny_detector: TransformersDetector) -> None:
    loose = tiny_detector.detect(IMAGE, PROMPT, Thresholds(0.0, 0.0))
    assert tiny_detector.detect(IMAGE, PROMPT, Thresholds(0.0, 1.0)) == []
    assert len(loose) > 0


def test_a_prompt_over_the_token_limit_is_refused(tiny_detector: TransformersDetector) -> None:
    long = TextPrompt.parse(". ".join(f"red car {i}" for i in range(20)))
    with pytest.raises(TextPromptError, match="tokens"):
        tiny_detector.check(long)
    with pytest.raises(TextPromptError, match="tokens"):
        tiny_detector.detect(IMAGE, long, Thresholds())
    tiny_detector.check(PROMPT)  # within the limit
