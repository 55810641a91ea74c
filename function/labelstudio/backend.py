"""The Label Studio ML backend endpoints."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..core.detector import Thresholds
from ..core.text_segment import TextSegmenter
from ..engine import EncoderInput, Engine
from ..errors import BadRequest, HttpError, Unprocessable
from ..images import ImageCache, LoadedImage
from ..pipeline import encoder_input, full_frame_view, segment
from ..settings import Settings
from .context import PromptRegions, parse_regions
from .interface import DEFAULT_CONFIG, Control, LabelConfig, parse_label_config
from .media import MediaFetcher
from .params import Options, decode_extra_params, parse_options
from .projects import ProjectState, ProjectStore, project_id
from .results import mask_regions
from .text import TextPredictor, TextRequest, find_text_request

log = logging.getLogger(__name__)

TaskOpenHook = Callable[[list[dict[str, Any]], str | None], None]


class LabelStudioBackend:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        images: ImageCache,
        media: MediaFetcher,
        store: ProjectStore,
        model_info: dict[str, Any],
        text: TextSegmenter | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.images = images
        self.media = media
        self.store = store
        self.model_info = model_info
        self.version = settings.resolved_version
        self.on_task_open: TaskOpenHook | None = None
        defaults = Thresholds(settings.detector_box_threshold, settings.detector_text_threshold)
        self.text = TextPredictor(text, defaults, self._output_control, self.version)

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
            self.store.save(pid, ProjectState(schema if isinstance(schema, str) else "", raw))
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
            stored = self.store.get(pid)
            options = self._options(stored)
            default = options.text_prompt.default
            if default is not None:  # the project pre-annotates with its default prompt
                request = TextRequest(default, "extra_params.text_prompt.default")
                config = self._label_config(body.get("label_config"), stored)
                return self._text_batch(tasks, request, config, options)
            # Task open, test or batch retrieve: answer at once, never touch the image.
            if self.on_task_open is not None:
                self.on_task_open(tasks, pid)
            if self.settings.empty_prediction_on_no_context:
                return {"results": [self._empty() for _ in tasks]}
            return {"results": []}
        if not isinstance(context, dict):
            raise BadRequest("params.context must be an object or null")
        regions = parse_regions(context.get("result", []))
        stored = self.store.get(pid)
        config = self._label_config(body.get("label_config"), stored)
        options = self._options(stored)
        text = find_text_request(context.get("result"), config) if regions.is_empty else None
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
            except HttpError as exc:
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

    def _label_config(self, xml: Any, stored: ProjectState | None) -> LabelConfig | None:
        config = parse_label_config(xml) if isinstance(xml, str) else None
        if config is None and stored is not None:
            config = parse_label_config(stored.label_config)
        return config

    def _output_control(
        self, config: LabelConfig | None, options: Options, to_name: str
    ) -> tuple[Control, str]:
        """The control to answer with, and the image name it is bound to."""
        wanted = [options.return_type]
        if options.return_type == "BrushLabels":
            wanted.append("Brush")
        # Without a label config (direct calls, probes) answer with a default control "tag"
        # of the configured type; BrushLabels also falls back to it when the config lacks one.
        base = DEFAULT_CONFIG.controls[0]
        default = LabelConfig(
            (Control(base.name, options.return_type, base.to_name, base.labels),), DEFAULT_CONFIG.images
        )
        for cfg in (config, default if config is None or options.return_type == "BrushLabels" else None):
            if cfg is None:
                continue
            name = to_name if cfg.data_key(to_name) is not None or cfg is config else "image"
            for tag in wanted:
                control = cfg.control(tag, name)
                if control is not None:
                    return control, name
        raise Unprocessable(
            f"the label config has no <{options.return_type}> bound to image {to_name!r}; "
            "add one or change extra_params.return_format.type"
        )

    def _predict_task(
        self, task: dict[str, Any], regions: PromptRegions, config: LabelConfig | None, options: Options
    ) -> dict[str, Any]:
        if regions.is_empty:
            return self._empty()
        to_name = regions.to_name or first_image_name(config)
        control, to_name = self._output_control(config, options, to_name)
        value, task_id = task_image(task, config, to_name)
        image = self.media.load(value, task_id)
        prompt = regions.to_prompt(image.width, image.height).validated(
            image.width, image.height, self.settings.max_prompt_points
        )
        if not prompt.can_segment:
            return self._empty()
        result = segment(
            self.engine,
            image,
            prompt,
            self.images,
            resize=options.fullframe_resize,
            patching=options.subpatching,
            post=options.postprocess,
        )
        label = self._label(regions.label, control) if control.tag.endswith("Labels") else None
        found = mask_regions(result.mask, result.score, control, to_name, label, options.return_format)
        return {"result": found, "score": float(result.score), "model_version": self.version}

    def _options(self, stored: ProjectState | None) -> Options:
        return parse_options(stored.extra_params if stored else dict(self.settings.default_extra_params))

    def first_click_source(self, image: LoadedImage, pid: str | None) -> EncoderInput | None:
        """What a first click on this project's `image` will encode (same cache key), or None
        when that depends on the click (subpatching crops around it)."""
        options = self._options(self.store.get(pid))
        if options.subpatching is not None:
            return None
        return encoder_input(image, full_frame_view(image, options.fullframe_resize), self.images)

    def task_open_image(self, task: dict[str, Any], pid: str | None) -> tuple[Any, int | None]:
        """(image reference, task id) that a first click on `task` will load: the project's first image."""
        config = self._label_config(None, self.store.get(pid))
        return task_image(task, config, first_image_name(config))

    @staticmethod
    def _label(label: str | None, control: Control) -> str:
        if label is not None and (not control.labels or label in control.labels):
            return label
        if label is not None:
            log.warning(
                "label %r is not in <%s name=%r>; using its first label", label, control.tag, control.name
            )
        return control.labels[0] if control.labels else (label or "object")


def first_image_name(config: LabelConfig | None) -> str:
    return config.images[0][0] if config and config.images else "image"


def task_image(task: dict[str, Any], config: LabelConfig | None, to_name: str) -> tuple[Any, int | None]:
    """(image reference, task id) of the image `to_name` in `task`; clicks and prewarm share it."""
    data = task.get("data")
    if not isinstance(data, dict) or not data:
        raise Unprocessable("task has no data")
    key = (config.data_key(to_name) if config else None) or (
        "image" if "image" in data or len(data) != 1 else next(iter(data))
    )
    if key not in data:
        raise Unprocessable(f"task data has no {key!r} key for image {to_name!r}")
    task_id = task.get("id") if isinstance(task.get("id"), int) else None
    return data[key], task_id


def _object(body: Any, route: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"{route} expects a JSON object body")
    return body
