"""Video files decoded frame by frame with PyAV: a header check, then only the frames asked for.

`probe` reads the container and stream headers (size, frame rate, frame count) and refuses a
video over the pixel limit before a single frame is decoded. `frames` seeks to the keyframe
before the first wanted frame and decodes forward, stopping after the last one; `frames_reversed`
does the same chunk by chunk from the end, so a backward window never holds more than one chunk
of decoded frames. Frame numbers are 0-based positions in a constant-frame-rate stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import VideoTooLarge, VideoUnreadable

log = logging.getLogger(__name__)

REVERSE_CHUNK = 16


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int  # from the header (or duration x fps); 0 when the container does not say

    @property
    def last_frame(self) -> int | None:
        return self.frames - 1 if self.frames > 0 else None


def _open(path: Path):  # type: ignore[no-untyped-def]
    import av

    try:
        container = av.open(str(path), "r")
    except (av.error.FFmpegError, OSError, ValueError):
        raise VideoUnreadable("the task's video cannot be opened as a video file") from None
    if not container.streams.video:
        container.close()
        raise VideoUnreadable("the task's video has no video stream")
    return container


def _rate(stream) -> Fraction:  # type: ignore[no-untyped-def]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else Fraction(25)


def probe(path: Path, max_pixels: int) -> VideoInfo:
    """Size, frame rate and frame count from the headers; VideoTooLarge past `max_pixels`."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width <= 0 or height <= 0:
            raise VideoUnreadable("the task's video stream has no frame size")
        if width * height > max_pixels:
            raise VideoTooLarge(
                f"video frames are {width}x{height} = {width * height} pixels, over the limit of "
                f"{max_pixels} (MAX_VIDEO_PIXELS)"
            )
        rate = _rate(stream)
        frames = int(stream.frames or 0)
        if not frames and stream.duration and stream.time_base:
            frames = int(stream.duration * stream.time_base * rate)
        elif not frames and container.duration:
            frames = int(container.duration / 1_000_000 * rate)
        return VideoInfo(width, height, float(rate), frames)
    finally:
        container.close()


def frames(path: Path, first: int, last: int) -> Iterator[tuple[int, np.ndarray]]:
    """(index, (H, W, 3) uint8 RGB) for every frame in [first, last], ascending."""
    if last < first:
        return
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate, base = _rate(stream), stream.time_base
        start = stream.start_time or 0
        if first > 0 and base:
            container.seek(start + int(Fraction(first) / rate / base), stream=stream, backward=True)
        counter = None
        for frame in container.decode(stream):
            if frame.pts is not None and base:
                index = round((frame.pts - start) * base * rate)
            else:  # no timestamps: count from the start (no seek was possible either)
                counter = 0 if counter is None else counter + 1
                index = counter
            if index < first:
                continue
            if index > last:
                break
            yield index, frame.to_ndarray(format="rgb24")
    finally:
        container.close()


def frames_reversed(
    path: Path, first: int, last: int, chunk: int = REVERSE_CHUNK
) -> Iterator[tuple[int, np.ndarray]]:
    """The frames of [first, last] in descending order, decoding `chunk` frames at a time."""
    hi = last
    while hi >= first:
        lo = max(first, hi - chunk + 1)
        block = list(frames(path, lo, hi))
        yield from reversed(block)
        hi = lo - 1
