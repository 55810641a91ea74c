"""Where a task's image is, and what a first click on it will encode (clicks and prewarm share it)."""

from __future__ import annotations

from typing import Any

from function.core.engine import EncoderInput
from function.core.images import LoadedImage
from function.core.pipeline import Segmenter

from ..errors import InvalidInput
from .interface import LabelConfig
from .projects import Projects


def first_image_name(config: LabelConfig | None) -> str:
    return config.images[0][0] if config and config.images else "image"


def task_image(task: dict[str, Any], config: LabelConfig | None, to_name: str) -> tuple[Any, int | None]:
    """(image reference, task id) of the image `to_name` in `task`."""
    data = task.get("data")
    if not isinstance(data, dict) or not data:
        raise InvalidInput("task has no data")
    key = (config.data_key(to_name) if config else None) or (
        "image" if "image" in data or len(data) != 1 else next(iter(data))
    )
    if key not in data:
        raise InvalidInput(f"task data has no {key!r} key for image {to_name!r}")
    task_id = task.get("id") if isinstance(task.get("id"), int) else None
    return data[key], task_id


class FirstClick:
    """What prewarm prepares when Label Studio opens a task: the image and the view a first
    click on it will encode (the same cache key)."""

    def __init__(self, projects: Projects, segmenter: Segmenter) -> None:
        self.projects = projects
        self.segmenter = segmenter

    def image(self, task: dict[str, Any], pid: str | None) -> tuple[Any, int | None]:
        """(image reference, task id) that a first click on `task` will load: the first image."""
        config = self.projects.label_config(pid)
        return task_image(task, config, first_image_name(config))

    def encoder_input(self, image: LoadedImage, pid: str | None) -> EncoderInput | None:
        """None when the view depends on the click (subpatching crops around it)."""
        options = self.projects.options(pid)
        if options.subpatching is not None:
            return None
        return self.segmenter.first_click_input(image, options.fullframe_resize)
