"""Label Studio video (<Video> + <VideoRectangle smart="true">) through /predict, behind the
deterministic tracker: keyframes, windows and their edges, several objects, reverse, limits,
and the video read from Label Studio with its token (real mp4s, decoded with PyAV)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from function.service.app import App
from function.service.compose import build_app

from .fakes import FakeModel
from .support import FakeLabelStudio, call, fake_label_studio, make_settings
from .tracking_support import RADIUS, STEP_PX, FakeTracker, H, W, disc_box, write_mp4

FRAMES = 12  # frames in the test video
CONFIG = """<View>
  <Labels name="videoLabels" toName="video"><Label value="Car"/><Label value="Person"/></Labels>
  <Video name="video" value="$video" framerate="10.0"/>
  <VideoRectangle name="box" toName="video" smart="true"/>
</View>"""


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_mp4(tmp_path_factory.mktemp("video") / "disc.mp4", FRAMES).read_bytes()


def make(tmp_path: Path, **overrides: Any) -> tuple[App, FakeModel, FakeTracker]:
    model, fake = FakeModel(), FakeTracker()
    settings = make_settings(tmp_path, prewarm=False, **overrides)
    return build_app(settings, model=model, tracker_model=fake), model, fake


def keyframe(frame: int, box: tuple[float, float, float, float] | None = None) -> dict[str, Any]:
    """A Label Studio keyframe (1-based frame) around the disc's position on that frame."""
    x0, y0, x1, y1 = box or disc_box(frame - 1)
    return {
        "frame": frame,
        "x": x0 * 100 / W,
        "y": y0 * 100 / H,
        "width": (x1 - x0) * 100 / W,
        "height": (y1 - y0) * 100 / H,
        "enabled": True,
        "rotation": 0,
        "time": frame / 10,
    }


def region(rid: str, *frames: int, labels: list[str] | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {
        "sequence": [keyframe(f) for f in frames],
        "framesCount": FRAMES,
        "duration": 1.2,
    }
    if labels:
        value["labels"] = labels
    return {"id": rid, "from_name": "box", "to_name": "video", "type": "videorectangle", "value": value}


def predict(app: App, video: str, regions: list[dict[str, Any]], status: int = 200) -> dict[str, Any]:
    body = {
        "tasks": [{"id": 7, "data": {"video": video}}],
        "project": "3.1700000000",
        "label_config": CONFIG,
        "params": {"context": {"result": regions}},
    }
    reply = call(app, "POST", "/predict", body)
    assert reply.status == status, reply.body
    return reply.body


def data_uri(mp4: bytes) -> str:
    return "data:video/mp4;base64," + base64.b64encode(mp4).decode()


def frames_of(result: dict[str, Any]) -> list[int]:
    return [item["frame"] for item in result["value"]["sequence"]]


def test_one_object_from_frame_one_tracks_the_next_n_frames(tmp_path: Path, mp4: bytes) -> None:
    app, model, _ = make(tmp_path, max_frames_to_track=4)
    out = predict(app, data_uri(mp4), [region("obj1", 1, labels=["Car"])])
    (result,) = out["results"][0]["result"]
    assert result["id"] == "obj1" and result["type"] == "videorectangle"
    assert (result["from_name"], result["to_name"]) == ("box", "video")
    assert result["value"]["labels"] == ["Car"] and result["value"]["framesCount"] == FRAMES
    assert frames_of(result) == [1, 2, 3, 4, 5]  # the keyframe, then exactly 4 tracked frames
    assert result["value"]["sequence"][0] == keyframe(1)  # keyframes come back unchanged
    for item in result["value"]["sequence"][1:]:
        assert item["enabled"] is True and item["rotation"] == 0
        assert item["time"] == pytest.approx(item["frame"] / 10.0)
        # the fake moves the prompt box STEP_PX per frame: the box follows the disc
        expected_x = (disc_box(0)[0] + STEP_PX * (item["frame"] - 1)) * 100 / W
        assert item["x"] == pytest.approx(expected_x, abs=100 / W)
        assert item["width"] == pytest.approx((2 * RADIUS + 1) * 100 / W, abs=100 / W)
    assert model.encode_calls == 5  # the prompt frame and 4 tracked frames, each once
    json.dumps(out)


def test_several_objects_keyframes_mid_video_next_keyframe_and_last_frame(tmp_path: Path, mp4: bytes) -> None:
    app, model, fake = make(tmp_path, max_frames_to_track=5)
    regions = [
        region("mid", 4),  # starts at frame 4 (not 1): frames 5-9
        region("gap", 2, 5),  # last keyframe in order is 5 ... but 2 came first: prompt 5, frames 6-10
        region("stop", 7, 3),  # prompt 3 (last in order), next keyframe 7: frames 4-6 only
        region("end", 10),  # frames 11-12: the video ends at frame 12
    ]
    out = {r["id"]: frames_of(r) for r in predict(app, data_uri(mp4), regions)["results"][0]["result"]}
    assert out == {
        "mid": [4, 5, 6, 7, 8, 9],
        "gap": [2, 5, 6, 7, 8, 9, 10],
        "stop": [3, 4, 5, 6, 7],
        "end": [10, 11, 12],
    }
    assert model.encode_calls == 10  # frames 3-12 (0-based 2-11), each encoded once for all objects
    assert fake.starts == 4


def test_reverse_tracks_back_to_the_previous_keyframe_or_frame_one(tmp_path: Path, mp4: bytes) -> None:
    app, _, _ = make(tmp_path, default_extra_params={"track_direction": "reverse", "max_frames_to_track": 3})
    regions = [region("back", 8), region("first", 2), region("stop", 3, 6)]
    out = {r["id"]: frames_of(r) for r in predict(app, data_uri(mp4), regions)["results"][0]["result"]}
    assert out == {"back": [5, 6, 7, 8], "first": [1, 2], "stop": [3, 4, 5, 6]}


def test_per_project_window_and_the_request_limit(tmp_path: Path, mp4: bytes) -> None:
    app, _, _ = make(tmp_path, max_frames_per_request=6)
    setup = {"project": "3.1700000000", "schema": CONFIG, "extra_params": {"max_frames_to_track": 2}}
    assert call(app, "POST", "/setup", setup).status == 200
    (result,) = predict(app, data_uri(mp4), [region("a", 3)])["results"][0]["result"]
    assert frames_of(result) == [3, 4, 5]
    setup["extra_params"] = {"max_frames_to_track": 7}
    assert call(app, "POST", "/setup", setup).status == 200
    err = predict(app, data_uri(mp4), [region("a", 3)], status=422)
    assert "MAX_FRAMES_PER_REQUEST" in err["error"]
    setup["extra_params"] = {"track_direction": "sideways"}
    assert call(app, "POST", "/setup", setup).status == 400


def test_limits_objects_pixels_and_bad_regions_are_clear_errors(tmp_path: Path, mp4: bytes) -> None:
    app, _, _ = make(tmp_path, tracking_max_objects=1)
    assert (
        "TRACKING_MAX_OBJECTS" in predict(app, data_uri(mp4), [region("a", 1), region("b", 1)], 422)["error"]
    )
    app, _, _ = make(tmp_path, max_video_pixels=100 * 50)
    assert "MAX_VIDEO_PIXELS" in predict(app, data_uri(mp4), [region("a", 1)], 413)["error"]
    app, _, _ = make(tmp_path, max_video_bytes=1024)
    assert "MAX_VIDEO_MB" in predict(app, data_uri(mp4), [region("a", 1)], 413)["error"]
    app, _, _ = make(tmp_path)
    bad = region("a", 1)
    bad["value"]["sequence"][0]["frame"] = 0
    assert "frame" in predict(app, data_uri(mp4), [bad], 422)["error"]
    garbage = "data:video/mp4;base64," + base64.b64encode(b"not a video" * 100).decode()
    assert predict(app, garbage, [region("a", 1)], 422)["error"]


def test_an_object_that_leaves_the_frame_is_disabled_after_its_last_box(tmp_path: Path, mp4: bytes) -> None:
    app, _, _ = make(tmp_path, max_frames_to_track=6)
    near_edge = region("edge", 1)
    near_edge["value"]["sequence"] = [keyframe(1, (100, 40, 115, 55))]  # fake moves it 5 px/frame
    (result,) = predict(app, data_uri(mp4), [near_edge])["results"][0]["result"]
    sequence = result["value"]["sequence"]
    assert [i["frame"] for i in sequence] == [1, 2, 3, 4, 5, 6]  # gone after x 128
    assert sequence[-1]["enabled"] is False and all(i["enabled"] for i in sequence[:-1])


def test_the_video_comes_from_label_studio_with_the_token(tmp_path: Path, mp4: bytes) -> None:
    ls = FakeLabelStudio(files={"/data/upload/3/disc.mp4": mp4})
    with fake_label_studio(ls):
        app, model, _ = make(
            tmp_path, label_studio_url=ls.url, label_studio_api_key=ls.legacy, max_frames_to_track=2
        )
        (result,) = predict(app, "/data/upload/3/disc.mp4", [region("a", 5)])["results"][0]["result"]
        assert frames_of(result) == [5, 6, 7]
        assert model.encode_calls == 3
        gets = [r for r in ls.requests if r[0] == "GET"]
        assert gets and all(h.get("Authorization") == f"Token {ls.legacy}" for _, _, h in gets)
        small, _, _ = make(
            tmp_path, label_studio_url=ls.url, label_studio_api_key=ls.legacy, max_video_bytes=2048
        )
        err = predict(small, "/data/upload/3/disc.mp4", [region("a", 5)], 413)
        assert "video is larger" in err["error"]


def test_decoded_frames_are_the_videos_frames(tmp_path: Path, mp4: bytes) -> None:
    """Off-by-one guard below the protocol: frame n (0-based) decoded after a seek is frame n."""
    from function.core.tracking.video import frames, frames_reversed, probe

    from .tracking_support import disc_frame

    path = tmp_path / "v.mp4"
    path.write_bytes(mp4)
    info = probe(path, 10**7)
    assert (info.width, info.height, info.frames, info.last_frame) == (W, H, FRAMES, FRAMES - 1)
    for first, last in ((0, 2), (5, 7), (10, 30)):
        got = list(frames(path, first, last))
        assert [i for i, _ in got] == list(range(first, min(last, FRAMES - 1) + 1))
        for i, px in got:
            others = [np.abs(px.astype(int) - disc_frame(j).astype(int)).mean() for j in range(FRAMES)]
            assert int(np.argmin(others)) == i
    assert [i for i, _ in frames_reversed(path, 3, 9, chunk=3)] == [9, 8, 7, 6, 5, 4, 3]


def test_frame_settings_are_checked_at_start() -> None:
    from function.settings import Settings, SettingsError

    settings = Settings.from_env({"MAX_FRAMES_TO_TRACK": "40", "MAX_FRAMES_PER_REQUEST": "50"})
    assert (settings.max_frames_to_track, settings.max_frames_per_request) == (40, 50)
    assert Settings.from_env({"MAX_FRAMES_PER_REQUEST": "4"}).max_frames_to_track == 4
    with pytest.raises(SettingsError, match="MAX_FRAMES_TO_TRACK"):
        Settings.from_env({"MAX_FRAMES_TO_TRACK": "60", "MAX_FRAMES_PER_REQUEST": "50"})
