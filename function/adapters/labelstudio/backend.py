"""The Label Studio ML backend endpoints."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from function.core.detector import Thresholds
from function.core.errors import ExpectedError, PatchTooSmall, ResizeNotPossible
from function.core.images import LoadedImage
from function.core.pipeline import MaskResult, Segmenter
from function.core.prompts import Prompt
from function.core.text_segment import TextSegmenter
from function.settings import Settings

from ..errors import BadRequest, InvalidInput
from .context import PromptRegions, parse_regions
from .interface import DEFAULT_CONFIG, Control, LabelConfig
from .media import MediaFetcher
from .params import Options, decode_extra_params, parse_options
from .projects import Projects, ProjectState, project_id
from .results import mask_regions
from .tasks import first_image_name, task_image
from .text import TextPredictor, TextRequest, find_text_request
from .video import VideoTracking, is_video_context

log = logging.getLogger(__name__)

# (tasks, project id): called when Label Studio opens a task (a /predict without context).
TaskOpenHook = Callable[[list[dict[str, Any]], str | None], None]


class LabelStudioBackend:
    def __init__(
        self,
        settings: Settings,
        segmenter: Segmenter,
        media: MediaFetcher,
        projects: Projects,
        model_info: dict[str, Any],
        on_task_open: TaskOpenHook | None = None,
        text: TextSegmenter | None = None,
        video: VideoTracking | None = None,
    ) -> None:
        self.settings = settings
        self.segmenter = segmenter
        self.media = media
        self.projects = projects
        self.model_info = model_info
        self.version = settings.resolved_version
        self.on_task_open = on_task_open
        defaults = Thresholds(settings.detector_box_threshold, settings.detector_text_threshold)
        self.text = TextPredictor(text, defaults, output_control, self.version)
        self.video = video

    # -- cheap routes -------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {"status": "UP", "model_class": "SAM2", "model_version": self.version, **self.model_info}

    def versions(self) -> dict[str, Any]:
        return {"versions": [self.version]}

    def setup(self, body: Any) -> dict[str, Any]:
        """Validate and store the project's label config and extra_params. No model, no network."""
        body = _object(body, "/setup")
        raw = decode_extra_params(body.get("extra_params"))
        parse_options(raw)  # invalid params answer 400 here, where Label Studio shows them
        pid = project_id(body.get("project"))
        schema = body.get("schema")
        if pid is not None:
            self.projects.store.save(pid, ProjectState(schema if isinstance(schema, str) else "", raw))
        return {"model_version": self.version}

    def webhook(self, body: Any) -> tuple[int, dict[str, Any]]:
        action = body.get("action") if isinstance(body, dict) else None
        if action == "START_TRAINING":
            return 201, {"status": "ok", "result": {"training": "not supported"}}
        return 200, {"status": "ok"}

    def train(self, body: Any) -> dict[str, Any]:
        return {"status": "ok", "result": {"training": "not supported"}}

    # -- /predict -----------------------------------------------------------------------
    def predict(self, body: Any) -> dict[str, Any]:
        body = _object(body, "/predict")
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise BadRequest("/predict needs a non-empty list of tasks")
        if not all(isinstance(t, dict) for t in tasks):
            raise BadRequest("every task must be an object")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise BadRequest("params must be an object")
        context = params.get("context")
        pid = project_id(body.get("project"))
        if context is None:
            options = self.projects.options(pid)
            default = options.text_prompt.default
            if default is not None:  # the project pre-annotates with its default prompt
                request = TextRequest(default, "extra_params.text_prompt.default")
                config = self.projects.label_config(pid, body.get("label_config"))
                return self._text_batch(tasks, request, config, options)
            # Task open, test or batch retrieve: answer at once, never touch the image.
            if self.on_task_open is not None:
                self.on_task_open(tasks, pid)
            if self.settings.empty_prediction_on_no_context:
                return {"results": [self._empty() for _ in tasks]}
            return {"results": []}
        if not isinstance(context, dict):
            raise BadRequest("params.context must be an object or null")
        result = context.get("result", [])
        config = self.projects.label_config(pid, body.get("label_config"))
        options = self.projects.options(pid)
        if is_video_context(result):
            if self.video is None:
                raise InvalidInput("video tracking needs the SAM2 model; this function has none loaded")
            return {"results": [self.video.predict_task(t, result, config, options) for t in tasks]}
        regions = parse_regions(result)
        text = find_text_request(result, config) if regions.is_empty else None
        if text is not None:
            self.text.check(text)
            return {"results": [self._text_task(t, text, config, options) for t in tasks]}
        return {"results": [self._predict_task(t, regions, config, options) for t in tasks]}

    def _text_task(
        self, task: dict[str, Any], request: TextRequest, config: LabelConfig | None, options: Options
    ) -> dict[str, Any]:
        to_name = request.to_name or first_image_name(config)
        value, task_id = task_image(task, config, to_name)
        return self.text.predict(request, self.media.load(value, task_id), to_name, config, options)

    def _text_batch(
        self, tasks: list[dict[str, Any]], request: TextRequest, config: LabelConfig | None, options: Options
    ) -> dict[str, Any]:
        """Every task when the batch fits the time budget; else only the first one, which makes
        Label Studio ask again one task per call (text-prompts spec, section 1). Work already
        done is not lost: features and detections stay cached for those calls."""
        self.text.check(request)
        started = time.monotonic()
        results = []
        for i, task in enumerate(tasks):
            try:
                results.append(self._text_task(task, request, config, options))
            except ExpectedError as exc:
                if len(tasks) == 1:
                    raise
                log.warning("batch text prompt: task %s answered empty: %s", task.get("id"), exc.message)
                results.append(self._empty())
            projected = (time.monotonic() - started) / (i + 1) * len(tasks)
            if i + 1 < len(tasks) and projected > self.settings.predict_budget_s:
                log.info(
                    "batch of %d tasks would take ~%.0f s (budget %.0f s): answering the first task only",
                    len(tasks),
                    projected,
                    self.settings.predict_budget_s,
                )
                return {"results": results[:1]}
        return {"results": results}

    def _empty(self) -> dict[str, Any]:
        return {"result": [], "score": 0.0, "model_version": self.version}

    def _predict_task(
        self, task: dict[str, Any], regions: PromptRegions, config: LabelConfig | None, options: Options
    ) -> dict[str, Any]:
        if regions.is_empty:
            return self._empty()
        to_name = regions.to_name or first_image_name(config)
        control, to_name = output_control(config, options, to_name)
        value, task_id = task_image(task, config, to_name)
        image = self.media.load(value, task_id)
        prompt = regions.to_prompt(image.width, image.height).validated(
            image.width, image.height, self.settings.max_prompt_points
        )
        if not prompt.can_segment:
            return self._empty()
        result = self._segment(image, prompt, options)
        label = self._label(regions.label, control) if control.carries_label else None
        found = mask_regions(result.mask, result.score, control, to_name, label, options.return_format)
        return {"result": found, "score": float(result.score), "model_version": self.version}

    def _segment(self, image: LoadedImage, prompt: Prompt, options: Options) -> MaskResult:
        try:
            return self.segmenter.segment(
                image,
                prompt,
                resize=options.fullframe_resize,
                patching=options.subpatching,
                post=options.postprocess,
            )
        # Name the option at fault, as the project wrote it.
        except ResizeNotPossible as exc:
            raise InvalidInput(f"extra_params.fullframe_resize: {exc.message}") from None
        except PatchTooSmall as exc:
            raise InvalidInput(f"extra_params.subpatching: {exc.message}") from None

    @staticmethod
    def _label(label: str | None, control: Control) -> str:
        if label is not None and (not control.labels or label in control.labels):
            return label
        if label is not None:
            log.warning(
                "label %r is not in <%s name=%r>; using its first label", label, control.tag, control.name
            )
        return control.labels[0] if control.labels else (label or "object")


def output_control(config: LabelConfig | None, options: Options, to_name: str) -> tuple[Control, str]:
    """The control to answer with, and the image name it is bound to."""
    tags = [options.return_type]
    if options.return_type == "BrushLabels":
        tags.append("Brush")  # an unlabeled brush answers a BrushLabels project too
    # 1. The project's own config, bound to the clicked image.
    if config is not None:
        for tag in tags:
            control = config.control(tag, to_name)
            if control is not None:
                return control, to_name
    # 2. No config (direct calls, probes), or a BrushLabels project whose config lacks one:
    #    the default control "tag" of the configured type on the image "image".
    if config is None or options.return_type == "BrushLabels":
        base = DEFAULT_CONFIG.controls[0]
        return Control(base.name, options.return_type, base.to_name, base.labels), base.to_name
    raise InvalidInput(
        f"the label config has no <{options.return_type}> bound to image {to_name!r}; "
        "add one or change extra_params.return_format.type"
    )


def _object(body: Any, route: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"{route} expects a JSON object body")
    return body
