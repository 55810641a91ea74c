"""Label Studio video: `<Video>` + `<VideoRectangle smart="true">` keyframes -> tracked boxes.

Each `videorectangle` region in `context.result` is one object. Its prompt is its last keyframe
(in sequence order): the box becomes a SAM2 box prompt on that frame, and the object is tracked
forward (or backward, `extra_params.track_direction`) up to the frame before its next keyframe,
`max_frames_to_track` frames, or the end of the video. The answer is one `videorectangle` per
object with the same id, control and labels, its keyframes unchanged plus one box per tracked
frame. Label Studio frames are 1-based; the tracker's are 0-based positions in the stream.
The video is read from Label Studio like images (same URL resolution and token), streamed to a
temporary file and decoded frame by frame: only the window is decoded, never the whole video.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from function.core.geometry import Box
from function.core.masks import tight_bounds
from function.core.tracking import video
from function.core.tracking.errors import FrameMismatch, TrackingLimit
from function.core.tracking.model import TrackedMask, TrackPrompt
from function.core.tracking.tracker import Frame, ObjectPlan, Tracker
from function.settings import Settings

from ..errors import InvalidInput
from ..fields import finite_number
from .interface import LabelConfig
from .media import MediaFetcher
from .params import Options

log = logging.getLogger(__name__)

VIDEO_TYPE = "videorectangle"


def is_video_context(result: Any) -> bool:
    return isinstance(result, list) and any(
        isinstance(r, dict) and str(r.get("type", "")).lower() == VIDEO_TYPE for r in result
    )


@dataclass(frozen=True)
class Keyframe:
    frame: int  # 1-based
    box: tuple[float, float, float, float]  # percent x, y, width, height
    item: dict[str, Any]  # as sent: returned unchanged


@dataclass(frozen=True)
class VideoObject:
    region: dict[str, Any]
    keyframes: tuple[Keyframe, ...]  # sequence order; the last one is the prompt

    @property
    def prompt(self) -> Keyframe:
        return self.keyframes[-1]


def parse_objects(result: list[Any]) -> list[VideoObject]:
    objects = []
    for i, region in enumerate(result):
        if not isinstance(region, dict) or str(region.get("type", "")).lower() != VIDEO_TYPE:
            continue
        where = f"context.result[{i}]"
        value = region.get("value")
        sequence = value.get("sequence") if isinstance(value, dict) else None
        if not isinstance(sequence, list) or not sequence:
            raise InvalidInput(f"{where}.value.sequence must be a non-empty list of keyframes")
        keyframes = []
        for j, item in enumerate(sequence):
            at = f"{where}.value.sequence[{j}]"
            if not isinstance(item, dict):
                raise InvalidInput(f"{at} must be an object")
            frame = item.get("frame")
            if isinstance(frame, bool) or not isinstance(frame, int) or frame < 1:
                raise InvalidInput(f"{at}.frame must be a frame number >= 1")
            x, y, w, h = (
                finite_number(item.get(k), f"{at}.{k}", lo=-1e6, hi=1e6)
                for k in ("x", "y", "width", "height")
            )
            keyframes.append(Keyframe(frame, (x, y, w, h), item))
        objects.append(VideoObject(region, tuple(keyframes)))
    return objects


def _window(obj: VideoObject, limit: int, last_index: int | None, reverse: bool) -> tuple[int, int]:
    """(prompt index, last index to track), 0-based; equal when there is nothing to track."""
    p = obj.prompt.frame - 1
    others = {k.frame - 1 for k in obj.keyframes} - {p}
    if reverse:
        before = [f for f in others if f < p]
        return p, max(p - limit, 0, max(before) + 1 if before else 0)
    after = [f for f in others if f > p]
    end = p + limit
    if after:
        end = min(end, min(after) - 1)
    if last_index is not None:
        end = min(end, last_index)
    return p, max(end, p)


def _pixels_box(box: tuple[float, float, float, float], width: int, height: int) -> Box:
    x, y, w, h = box
    return Box.from_corners(
        x * width / 100, y * height / 100, (x + w) * width / 100, (y + h) * height / 100
    ).clipped(width, height)


class VideoTracking:
    def __init__(self, settings: Settings, tracker: Tracker, media: MediaFetcher, version: str) -> None:
        self.settings = settings
        self.tracker = tracker
        self.media = media
        self.version = version

    def predict_task(
        self, task: dict[str, Any], result: list[Any], config: LabelConfig | None, options: Options
    ) -> dict[str, Any]:
        objects = parse_objects(result)
        if not objects:
            return {"result": [], "score": 0.0, "model_version": self.version}
        s = self.settings
        limit = options.video.max_frames_to_track or s.max_frames_to_track
        if limit > s.max_frames_per_request:
            raise TrackingLimit(
                f"max_frames_to_track {limit} is over this function's MAX_FRAMES_PER_REQUEST "
                f"({s.max_frames_per_request})"
            )
        if len(objects) > self.tracker.max_objects:
            raise TrackingLimit(
                f"{len(objects)} video objects in one request; the limit is {self.tracker.max_objects} "
                "(TRACKING_MAX_OBJECTS)"
            )
        to_name = str(objects[0].region.get("to_name") or "video")
        key, framerate = _video_source(task, config, to_name)
        task_id = task.get("id") if isinstance(task.get("id"), int) else None
        with tempfile.TemporaryDirectory(prefix="sam2-video-") as folder:
            path = self.media.video_file(task["data"][key], task_id, Path(folder))
            info = video.probe(path, s.max_video_pixels)
            tracked = self._track(path, info, objects, limit, options.video.reverse)
        regions = [self._region(obj, tracked[i], info, framerate, config) for i, obj in enumerate(objects)]
        present = [r.present for masks in tracked for _, r in masks]
        score = sum(present) / len(present) if present else 0.0
        return {"result": regions, "score": float(score), "model_version": self.version}

    def _track(
        self, path: Path, info: video.VideoInfo, objects: list[VideoObject], limit: int, reverse: bool
    ) -> list[list[tuple[int, TrackedMask]]]:
        plans: dict[str, ObjectPlan] = {}
        for i, obj in enumerate(objects):
            p, end = _window(obj, limit, info.last_frame, reverse)
            if end != p and (info.last_frame is None or p <= info.last_frame):
                prompt = TrackPrompt(box=_pixels_box(obj.prompt.box, info.width, info.height))
                plans[str(i)] = ObjectPlan(prompt, p, end, reverse)
        out: list[list[tuple[int, TrackedMask]]] = [[] for _ in objects]
        if not plans:
            return out
        covered = set().union(
            *(
                range(min(p.prompt_frame, p.last_frame), max(p.prompt_frame, p.last_frame) + 1)
                for p in plans.values()
            )
        )
        if len(covered) > self.settings.max_frames_per_request:
            raise TrackingLimit(
                f"this request would track {len(covered)} frames; the limit is "
                f"{self.settings.max_frames_per_request} (MAX_FRAMES_PER_REQUEST)"
            )
        lo, hi = min(covered), max(covered)
        decoded = video.frames_reversed(path, lo, hi) if reverse else video.frames(path, lo, hi)
        for index, results in self.tracker.run(_frames(decoded, info), plans):
            for key, tracked in results.items():
                if index != plans[key].prompt_frame:
                    out[int(key)].append((index, tracked))
        return out

    def _region(
        self,
        obj: VideoObject,
        tracked: list[tuple[int, TrackedMask]],
        info: video.VideoInfo,
        framerate: float,
        config: LabelConfig | None,
    ) -> dict[str, Any]:
        items = [dict(k.item) for k in obj.keyframes]
        previous: dict[str, Any] | None = None
        for index, result in sorted(tracked, key=lambda t: t[0]):
            bounds = tight_bounds(result.mask) if result.present else None
            if bounds is None:
                if previous is not None:
                    previous["enabled"] = False  # the object is gone after this box
                previous = None
                continue
            x0, y0, x1, y1 = bounds
            frame = index + 1
            previous = {
                "frame": frame,
                "x": x0 * 100.0 / info.width,
                "y": y0 * 100.0 / info.height,
                "width": (x1 + 1 - x0) * 100.0 / info.width,
                "height": (y1 + 1 - y0) * 100.0 / info.height,
                "enabled": True,
                "rotation": 0,
                "time": frame / framerate,
            }
            items.append(previous)
        region = obj.region
        value = {k: v for k, v in region["value"].items() if k != "sequence"}
        value["sequence"] = sorted(items, key=lambda item: item["frame"])
        return {
            "id": region.get("id"),
            "from_name": _control_name(region, config),
            "to_name": region.get("to_name") or "video",
            "type": VIDEO_TYPE,
            "origin": "prediction",
            "value": value,
        }


def _frames(decoded: Iterator[tuple[int, Any]], info: video.VideoInfo) -> Iterator[Frame]:
    for index, pixels in decoded:
        if pixels.shape[:2] != (info.height, info.width):
            raise FrameMismatch("the video changes frame size mid-stream; this is not supported")
        yield Frame.from_pixels(index, pixels)


def _video_source(task: dict[str, Any], config: LabelConfig | None, to_name: str) -> tuple[str, float]:
    """(task data key, framerate) of the `<Video>` named `to_name`."""
    data = task.get("data")
    if not isinstance(data, dict) or not data:
        raise InvalidInput("task has no data")
    for name, key, rate in config.videos if config else ():
        if name == to_name:
            if key not in data:
                raise InvalidInput(f"task data has no {key!r} key for video {to_name!r}")
            return key, rate
    key = "video" if "video" in data or len(data) != 1 else next(iter(data))
    if key not in data:
        raise InvalidInput(f"task data has no 'video' key for video {to_name!r}")
    return key, 24.0


def _control_name(region: dict[str, Any], config: LabelConfig | None) -> str:
    """The region's own `from_name` when the config has it, else the config's VideoRectangle."""
    name = region.get("from_name")
    to_name = region.get("to_name") or "video"
    if config is not None:
        names = [c.name for c in config.controls if c.tag == "VideoRectangle" and c.to_name == to_name]
        if names and name not in names:
            return names[0]
    return str(name or "box")
