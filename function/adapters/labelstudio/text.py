"""Text prompts in Label Studio: a `<TextArea>` result (interactive) or the project's default
prompt (batch) -> detector -> SAM2 per box -> one labelled region per detection.

The TextArea is matched by its `from_name` against the label config's TextAreas, never by
position; `value.text` lists every submission and the newest (last) one is the prompt.
Optional `<Number>` controls whose names contain `box_threshold` / `text_threshold` carry
per-request thresholds. Regions come in the project's output format (brush, polygon or
rectangle), plus a rectangle per detection when the config also has a `RectangleLabels` on
the image; labels are filled from the phrase (exact, then case-insensitive match with the
control's labels, else its first label).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from function.core.detector import DetectorNotConfigured, TextPrompt, Thresholds
from function.core.images import LoadedImage
from function.core.text_segment import TextSegment, TextSegmenter

from ..errors import InvalidInput
from ..fields import text_prompt_field
from .interface import Control, LabelConfig
from .params import Options
from .results import box_region, mask_regions

log = logging.getLogger(__name__)

OutputControl = Callable[[LabelConfig | None, Options, str], tuple[Control, str]]


@dataclass(frozen=True)
class TextRequest:
    """A text prompt from one request: where it came from (`field`, for errors) and the
    thresholds the request itself sets (None: project or deployment default)."""

    prompt: TextPrompt
    field: str
    to_name: str | None = None
    box_threshold: float | None = None
    text_threshold: float | None = None


def _textarea_names(config: LabelConfig | None) -> set[str] | None:
    if config is None:
        return None  # no config to match against (direct calls): any TextArea result counts
    return {c.name for c in config.controls if c.tag.lower() == "textarea"}


def _latest_text(value: Any, where: str) -> str:
    texts = value.get("text") if isinstance(value, dict) else None
    if isinstance(texts, str):
        return texts
    if not isinstance(texts, list) or not texts or not isinstance(texts[-1], str):
        raise InvalidInput(f"{where}.value.text must be a non-empty list of strings")
    return texts[-1]


def _number_value(region: dict[str, Any], where: str) -> float:
    value = region.get("value")
    number = value.get("number") if isinstance(value, dict) else None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0.0 <= number <= 1.0:
        raise InvalidInput(f"{where} ({region.get('from_name')!r}) must be a number between 0 and 1")
    return float(number)


def find_text_request(result: Any, config: LabelConfig | None) -> TextRequest | None:
    """The newest TextArea prompt in `context.result`, or None when it holds none."""
    if not isinstance(result, list):
        return None
    names = _textarea_names(config)
    found: tuple[str, str, str | None] | None = None
    box = text = None
    for i, region in enumerate(result):
        if not isinstance(region, dict):
            continue
        kind = str(region.get("type", "")).lower()
        where = f"context.result[{i}]"
        name = region.get("from_name")
        if kind == "textarea":
            if names is not None and name not in names:
                raise InvalidInput(
                    f"{where}.from_name {name!r} is no <TextArea> of the label config; add "
                    '<TextArea name="prompt" toName="image"/> to use text prompts'
                )
            to_name = region.get("to_name") if isinstance(region.get("to_name"), str) else None
            found = (_latest_text(region.get("value"), where), f"{where}.value.text", to_name)
        elif kind == "number" and isinstance(name, str):
            if "box_threshold" in name:
                box = _number_value(region, where)
            elif "text_threshold" in name:
                text = _number_value(region, where)
    if found is None:
        return None
    raw, field, to_name = found
    with text_prompt_field(field):
        prompt = TextPrompt.parse(raw)
    return TextRequest(prompt, field, to_name, box, text)


def phrase_label(phrase: str, control: Control) -> str | None:
    """The control's label for a detected phrase: exact, then case-insensitive, else the first."""
    if not control.carries_label:
        return None
    if phrase in control.labels:
        return phrase
    by_lower = {label.lower(): label for label in control.labels}
    if phrase.lower() in by_lower:
        return by_lower[phrase.lower()]
    return control.labels[0] if control.labels else phrase


def thresholds_for(request: TextRequest, options: Options, defaults: Thresholds) -> Thresholds:
    """Request (`<Number>` controls) over project (`extra_params.text_prompt`) over deployment."""
    project = defaults.with_overrides(options.text_prompt.box_threshold, options.text_prompt.text_threshold)
    with text_prompt_field(request.field):
        return project.with_overrides(request.box_threshold, request.text_threshold)


def regions_for(
    segments: list[TextSegment],
    output: Control,
    to_name: str,
    config: LabelConfig | None,
    options: Options,
) -> list[dict[str, Any]]:
    """One region per detection in `output`'s format (+ a rectangle when the config has one)."""
    boxes = config.control("RectangleLabels", to_name) if config is not None else None
    rect_output = output.tag.lower().startswith("rectangle")
    found: list[dict[str, Any]] = []
    for seg in segments:
        shape = seg.mask.shape
        if rect_output:
            found.append(
                box_region(seg.box, shape, seg.score, output, to_name, phrase_label(seg.phrase, output))
            )
        elif seg.mask.any():
            label = phrase_label(seg.phrase, output)
            regions = mask_regions(seg.mask, seg.score, output, to_name, label, options.return_format)
            found.extend(regions)
        if boxes is not None and not rect_output:
            found.append(
                box_region(seg.box, shape, seg.score, boxes, to_name, phrase_label(seg.phrase, boxes))
            )
    return found


class TextPredictor:
    """Runs one task's text prompt; the backend supplies the parsed config and options."""

    def __init__(
        self,
        segmenter: TextSegmenter | None,
        defaults: Thresholds,
        output_control: OutputControl,
        version: str,
    ) -> None:
        self.segmenter = segmenter
        self.defaults = defaults
        self.output_control = output_control
        self.version = version

    def require(self, field: str) -> TextSegmenter:
        if self.segmenter is None:
            log.warning("text prompt refused: no detector configured (set DETECTOR_MODEL)")
            with text_prompt_field(field):
                raise DetectorNotConfigured()
        return self.segmenter

    def check(self, request: TextRequest) -> None:
        """Refuse a prompt the detector cannot read whole, before any image is loaded."""
        segmenter = self.require(request.field)
        with text_prompt_field(request.field):
            segmenter.detector.check(request.prompt)

    def predict(
        self,
        request: TextRequest,
        image: LoadedImage,
        to_name: str,
        config: LabelConfig | None,
        options: Options,
    ) -> dict[str, Any]:
        segmenter = self.require(request.field)
        thresholds = thresholds_for(request, options, self.defaults)
        control, to_name = self.output_control(config, options, to_name)
        with text_prompt_field(request.field):
            segments = segmenter.segment(
                image, request.prompt, thresholds, resize=options.fullframe_resize, post=options.postprocess
            )
        found = regions_for(segments, control, to_name, config, options)
        log.info(
            "text prompt %r: %d detections, %d regions (box %.2f, text %.2f)",
            request.prompt.text,
            len(segments),
            len(found),
            thresholds.box,
            thresholds.text,
        )
        score = max((s.score for s in segments), default=0.0)
        return {"result": found, "score": float(score), "model_version": self.version}
