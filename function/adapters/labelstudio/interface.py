"""The parts of a Label Studio label config this backend needs: image tags and controls."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

OUTPUT_TYPES = ("BrushLabels", "Brush", "PolygonLabels", "Polygon", "RectangleLabels", "Rectangle")


@dataclass(frozen=True)
class Control:
    name: str
    tag: str  # e.g. "BrushLabels"
    to_name: str
    labels: tuple[str, ...]

    @property
    def carries_label(self) -> bool:
        """`*Labels` controls put the label under their type's key; plain ones carry none."""
        return self.tag.endswith("Labels")


@dataclass(frozen=True)
class LabelConfig:
    controls: tuple[Control, ...]
    images: tuple[tuple[str, str], ...]  # (Image tag name, task data key)
    videos: tuple[tuple[str, str, float], ...] = ()  # (Video tag name, task data key, framerate)

    def data_key(self, to_name: str) -> str | None:
        return dict(self.images).get(to_name)

    def control(self, tag: str, to_name: str) -> Control | None:
        """The first control of type `tag` bound to the image `to_name`."""
        for c in self.controls:
            if c.tag.lower() == tag.lower() and c.to_name == to_name:
                return c
        return None


# What a backend with no label config answers with: one image "image", a BrushLabels "tag".
DEFAULT_CONFIG = LabelConfig(
    controls=(Control("tag", "BrushLabels", "image", ("object",)),),
    images=(("image", "image"),),
)


@functools.lru_cache(maxsize=64)
def parse_label_config(xml: str) -> LabelConfig | None:
    """Parse with label-studio-sdk's LabelInterface; None for an empty or unreadable config."""
    if not xml or not xml.strip():
        return None
    from label_studio_sdk.label_interface import LabelInterface

    try:
        interface = LabelInterface(xml)
    except Exception as exc:  # the SDK raises several types for malformed XML
        log.warning("ignoring unreadable label config: %s", type(exc).__name__)
        return None
    controls = []
    for c in interface.controls:
        for to_name in c.to_name or ():
            controls.append(Control(c.name, c.tag, to_name, tuple(getattr(c, "labels", None) or ())))
    images = tuple((o.name, (o.value or "").lstrip("$")) for o in interface.objects if o.tag == "Image")
    videos = tuple(
        (o.name, (o.value or "").lstrip("$"), _framerate(getattr(o, "attr", {}) or {}))
        for o in interface.objects
        if o.tag == "Video"
    )
    return LabelConfig(tuple(controls), images, videos)


def _framerate(attrs: dict[str, str]) -> float:
    """`<Video framerate>`; Label Studio's own default (24) when absent or not a positive number."""
    try:
        rate = float(attrs.get("framerate", "") or 24.0)
    except ValueError:
        return 24.0
    return rate if 0 < rate < 1000 else 24.0
