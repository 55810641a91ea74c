"""Where a later click spends its time: pyinstrument over later clicks through the app."""

from __future__ import annotations

from dataclasses import replace

from function.core.model import SegmentationModel
from function.service.compose import build_app
from function.settings import Settings

from .clicks import Clicker, click_body, click_positions, image_server, synthetic_jpeg


def profile_later_clicks(
    model: SegmentationModel, settings: Settings, width: int, height: int, clicks: int
) -> str:
    from pyinstrument import Profiler

    app = Clicker(build_app(replace(settings, feature_cache_bytes=256 << 20), model))
    files = {"/data/upload/1/profile.jpg": synthetic_jpeg(width, height, 1234)}
    spots = click_positions(clicks + 1)
    with image_server(files) as base:
        url = base + "/data/upload/1/profile.jpg"
        app.click(click_body(url, width, height, *spots[0], 1))  # the first click encodes
        profiler = Profiler(interval=0.0005)
        profiler.start()
        for spot in spots[1:]:
            app.click(click_body(url, width, height, *spot, 1))
        profiler.stop()
    text: str = profiler.output_text(unicode=False, color=False, show_all=False)
    return text
