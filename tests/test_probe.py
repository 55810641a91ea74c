"""The probe CLI: real /setup + /predict cycles over HTTP and in-process, its files and pictures."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from function.__main__ import main
from function.service.server import LocalServer
from function.tools import probe, probe_cli
from function.tools.sample import BALL_CENTRE, SAMPLE_SIZE, sample_png

from .fakes import FakeModel
from .local_function import serve_app
from .support import (
    encode_image,
    make_app,
    region_mask,
    sample_array,
)


@pytest.fixture
def fake() -> FakeModel:
    return FakeModel(radius=20)


@pytest.fixture
def server(tmp_path: Path, fake: FakeModel) -> Iterator[LocalServer]:
    with serve_app(make_app(tmp_path, fake)) as srv:
        yield srv


def run_probe(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(["probe", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else out), err


def brush_mask(prediction: dict[str, Any]) -> np.ndarray:
    (region,) = prediction["results"][0]["result"]
    return region_mask(region) > 0


def disc(cx: float, cy: float, r: int, size: tuple[int, int] = SAMPLE_SIZE) -> np.ndarray:
    yy, xx = np.ogrid[: size[1], : size[0]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2


def test_default_run_over_http_writes_json_and_pictures(
    server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], fake: FakeModel
) -> None:
    out = tmp_path / "probe_out"
    code, prediction, err = run_probe(capsys, "--url", server.url, "--out", str(out))
    assert code == 0, err
    # The default prompt clicks the sample's ball; the fake model answers a disc around the click.
    assert np.array_equal(brush_mask(prediction), disc(*BALL_CENTRE, 20))
    assert json.loads((out / "prediction.json").read_text()) == prediction
    sent = json.loads((out / "request.json").read_text())
    assert sent["setup"]["schema"] == sent["predict"]["label_config"]
    assert json.loads(sent["setup"]["extra_params"]) == {}
    image_value = sent["predict"]["tasks"][0]["data"]["image"]
    assert image_value.startswith("data:image/png;base64,<") and "elided" in image_value
    (point,) = sent["predict"]["params"]["context"]["result"]
    assert point["is_positive"] is True
    assert (point["value"]["x"], point["value"]["y"]) == pytest.approx((468 / 640 * 100, 318 / 480 * 100))

    overlay = np.asarray(Image.open(out / "overlay.png").convert("RGB"))
    assert overlay.shape == (480, 640, 3)
    original = np.asarray(Image.open(io.BytesIO(sample_png())).convert("RGB"))
    changed = (overlay != original).any(axis=2)
    assert changed[disc(*BALL_CENTRE, 15)].all()  # tinted inside the mask (and the click dot)
    assert not changed[~disc(*BALL_CENTRE, 26)].any()  # untouched beyond mask, outline and dot
    cutout = Image.open(out / "region-1.png")
    assert cutout.mode == "RGBA" and cutout.size == (41, 41)
    alpha = np.asarray(cutout)[:, :, 3]
    assert alpha[20, 20] == 255 and alpha[0, 0] == 0  # the disc is opaque, its corners clear

    assert "encoder ran" in err and "decode" in err and "fetch" in err and "render" in err
    assert fake.encode_calls == 1  # the timing repeat hit the feature cache

    # A second probe of the same image: the features are cached, /metrics tells the probe so.
    code, _, err = run_probe(capsys, "--url", server.url)
    assert code == 0 and "cache hit: the image features were already cached" in err
    assert fake.encode_calls == 1


def test_fractions_box_and_negative_points_reach_the_function(
    server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "rect.png"
    image.write_bytes(encode_image(sample_array(320, 240)))
    out = tmp_path / "out"
    argv = ["--url", server.url, str(image), "--out", str(out)]
    code, prediction, err = run_probe(capsys, *argv, "--point", "0.5,0.25", "--point", "10,20,neg")
    assert code == 0, err
    assert np.array_equal(brush_mask(prediction), disc(160, 60, 20, (320, 240)))
    regions = json.loads((out / "request.json").read_text())["predict"]["params"]["context"]["result"]
    assert [(r["value"]["x"], r["value"]["y"], r["is_positive"]) for r in regions] == [
        (50.0, 25.0, True),
        (pytest.approx(10 / 320 * 100), pytest.approx(20 / 240 * 100), False),
    ]
    assert Image.open(out / "overlay.png").size == (320, 240)

    code, prediction, err = run_probe(capsys, *argv, "--box", "0.25,0.5,0.5,0.25")
    assert code == 0, err
    expected = np.zeros((240, 320), bool)
    expected[120:180, 80:240] = True
    assert np.array_equal(brush_mask(prediction), expected)


def test_yaml_config_with_cli_overrides(
    server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.json"
    params.write_text('{"return_format": {"type": "Brush"}}')
    config = tmp_path / "probe.yaml"
    config.write_text(
        f"url: {server.url}\npoints: ['100,100']\nextra-params: {params}\n"
        f"label: ball\nout: {tmp_path / 'o'}\n"
    )
    code, prediction, err = run_probe(capsys, "--config", str(config), "--point", "200,150")
    assert code == 0, err
    (region,) = prediction["results"][0]["result"]
    assert region["type"] == "brush" and region["from_name"] == "brush_plain"
    assert np.array_equal(brush_mask(prediction), disc(200, 150, 20))  # the CLI point won
    sent = json.loads((tmp_path / "o" / "request.json").read_text())
    assert json.loads(sent["setup"]["extra_params"]) == {"return_format": {"type": "Brush"}}
    assert sent["predict"]["params"]["context"]["result"][0]["value"]["keypointlabels"] == ["ball"]
    # Different extra_params -> a different probe project: concurrent probes never clash.
    assert sent["setup"]["project"] == probe.project_for({"return_format": {"type": "Brush"}})
    assert sent["setup"]["project"] != probe.project_for({})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--point", "10,0.5"], "mixes integers (pixels) and decimals"),
        (["--point", "1.5,0.5"], "must lie in 0..1"),
        (["--point", "10,20,maybe"], "must be pos or neg"),
        (["--box", "1,2,3"], "expected 4 numbers"),
        (["--prompt", "{nope"], "--prompt is not valid JSON"),
        (["--prompt", '{"type": "Polygon", "geometry": [1, 2]}'], "KeyPointLabels or RectangleLabels"),
        (["--box", "1,2,3,4", "--prompt", '{"type": "Rectangle", "geometry": [5, 6, 7, 8]}'], "one box"),
        (["/no/such/image.png"], "cannot read /no/such/image.png"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    server: LocalServer, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run_probe(capsys, "--url", server.url, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_unknown_config_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "probe.yaml"
    config.write_text("pointz: ['1,2']\n")
    code, _, err = run_probe(capsys, "--config", str(config))
    assert code == 2 and "unknown key(s) pointz" in err


def test_function_errors_exit_1_with_the_functions_message(
    server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_probe(capsys, "--url", server.url, "--point", "5000,10")
    assert code == 1
    assert "/predict answered HTTP 422" in err and "outside the 640x480 image" in err
    params = tmp_path / "bad.json"
    params.write_text('{"return_format": {"type": "BrushLabel"}}')
    code, _, err = run_probe(capsys, "--url", server.url, "--extra-params", str(params))
    assert code == 1 and "/setup answered HTTP 400" in err


def test_unreachable_url_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_probe(capsys, "--url", "http://user:secret@127.0.0.1:9")
    assert code == 1 and "cannot reach the function at http://127.0.0.1:9" in err
    assert "secret" not in err


def test_without_url_it_falls_back_to_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fake: FakeModel
) -> None:
    monkeypatch.delenv("ML_BACKEND_URL", raising=False)
    monkeypatch.setattr(probe_cli, "DEFAULT_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    app = make_app(tmp_path, fake)
    monkeypatch.setattr(probe_cli, "load_in_process", lambda log: probe.InProcessTransport(app))
    code, prediction, err = run_probe(capsys)
    assert code == 0, err
    assert "no function answers at http://127.0.0.1:9; loading the model in this process" in err
    assert np.array_equal(brush_mask(prediction), disc(*BALL_CENTRE, 20))


@pytest.mark.sam2
def test_in_process_with_real_sam2(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production path: build_app(Settings.from_env) loads SAM2 (random weights) here."""
    monkeypatch.setenv("MODEL_CHECKPOINT", str(tiny_checkpoint))
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.setenv("PROJECT_STORE_DIR", str(tmp_path / "projects"))
    out = tmp_path / "out"
    code, prediction, err = run_probe(capsys, "--in-process", "--out", str(out), "--box", "398,248,140,140")
    assert code == 0, err
    assert "model configs/sam2.1/sam2.1_hiera_t.yaml loaded" in err and "encoder ran" in err
    assert brush_mask(prediction).shape == (480, 640)
    for name in ("prediction.json", "request.json", "overlay.png"):
        assert (out / name).stat().st_size > 0
    assert Image.open(out / "overlay.png").size == SAMPLE_SIZE


def test_in_process_on_the_command_line_beats_a_url_in_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fake: FakeModel
) -> None:
    config = tmp_path / "probe.yaml"
    config.write_text("url: http://127.0.0.1:9\npoint: '0.5,0.5'\n")
    app = make_app(tmp_path, fake)
    monkeypatch.setattr(probe_cli, "load_in_process", lambda log: probe.InProcessTransport(app))
    code, prediction, err = run_probe(capsys, "--config", str(config), "--in-process")
    assert code == 0, err
    assert "probing the in-process function" in err
    assert np.array_equal(brush_mask(prediction), disc(320, 240, 20))


def test_polygon_and_rectangle_predictions_are_drawn_per_region(tmp_path: Path) -> None:
    """The result shapes the polygon/rectangle return formats produce, written as Label Studio has them."""
    image = probe.read_image(None, 5.0)
    polygon = {"points": [[60, 50], [80, 50], [80, 80]], "closed": True, "polygonlabels": ["object"]}
    box = {"x": 10, "y": 10, "width": 20, "height": 30, "rotation": 0, "rectanglelabels": ["object"]}
    regions = [
        {"type": "polygonlabels", "value": polygon, "score": 0.8},
        {"type": "rectanglelabels", "value": box, "score": 0.7},
        {"type": "keypointlabels", "value": {"x": 1, "y": 1}},
    ]
    run = probe.ProbeRun({}, {"tasks": []}, {"results": [{"result": regions, "score": 0.8}]})
    spec = probe_cli.default_prompt(image, is_sample=True)
    lines = probe.write_outputs(tmp_path, run, image, spec)
    assert lines[0].startswith("region 1: polygonlabels ['object'] score 0.800")
    assert lines[1].startswith("region 2: rectanglelabels ['object'] score 0.700")
    assert lines[2].startswith("region 3: not drawn")
    assert Image.open(tmp_path / "region-1.png").size == (129, 145)  # 20% x 30% of 640x480, + 1
    assert Image.open(tmp_path / "region-2.png").size == (129, 145)
    assert not (tmp_path / "region-3.png").exists()
    assert Image.open(tmp_path / "overlay.png").size == SAMPLE_SIZE
