"""Bench case: first click after a task open (prewarmed) vs a cold first click.

Ours: Label Studio opens the task (`/predict`, context null), the annotator looks at the image
for a moment (2 s; 1 s with `quick`), then clicks: the first click's latency. Baseline: the same
first click with PREWARM off, which pays for the image encoder. A third row gives a later click
on the same image (features cached) for reference: prewarm works when the first click costs
what a later click costs.

Real SAM2 from MODEL_CHECKPOINT when set (or the published checkpoint of `model` when it was
downloaded), else a random-weight checkpoint built from the config (as tests/conftest.py does):
weights do not change the timing. Requests go through `App.handle` in-process, images as data:
URIs, so no network time is measured.

    python bench/prewarm_case.py [--quick] [--device cpu|cuda] [--model tiny]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from function.core.checkpoints import CHECKPOINTS, default_checkpoint_dir
from function.core.sam2_model import Sam2Model
from function.service.app import App, Request
from function.service.compose import build_app
from function.settings import Settings, config_for_checkpoint, normalize_model_config

FULL_DELAY_S = 2.0
QUICK_DELAY_S = 1.0
WIDTH, HEIGHT = 1280, 960

LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<BrushLabels name="tag" toName="image"><Label value="object"/></BrushLabels>'
    '<KeyPointLabels name="tag2" toName="image" smart="true"><Label value="object"/></KeyPointLabels>'
    "</View>"
)


def _checkpoint(model: str, workdir: Path) -> tuple[str, Path, str]:
    """(config, checkpoint, what it is) for `model` (a size like `tiny`, or a config name)."""
    env = os.environ.get("MODEL_CHECKPOINT")
    if env and Path(env).is_file():
        config = os.environ.get("MODEL_CONFIG")
        path = Path(env)
        return (normalize_model_config(config) if config else config_for_checkpoint(path)), path, path.name
    known = CHECKPOINTS.get(model)
    config = known.config if known else normalize_model_config(model)
    if known is not None and (default_checkpoint_dir() / known.filename).is_file():
        return config, default_checkpoint_dir() / known.filename, known.filename
    import torch
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    built = build_sam2(config, None, device="cpu")
    path = workdir / "random-weights.pt"
    torch.save({"model": built.state_dict()}, path)
    return config, path, f"{Path(config).stem} (random weights)"


def _image(seed: int) -> str:
    """A distinct photo-sized JPEG data: URI per seed: smooth shapes plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = (np.sin(xx / (40 + seed)) + np.cos(yy / (55 + seed))) * 60 + 128
    pixels = np.stack([base, base[::-1], base[:, ::-1]], axis=-1)
    pixels += rng.normal(0, 12, pixels.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _predict(app: App, image: str, task_id: int, click: tuple[float, float] | None) -> float:
    """Send a task-open (`click` None) or a click; return its latency in ms."""
    context = None
    if click is not None:
        region = {
            "type": "keypointlabels",
            "from_name": "tag2",
            "to_name": "image",
            "original_width": WIDTH,
            "original_height": HEIGHT,
            "value": {"x": click[0], "y": click[1], "width": 0.5, "keypointlabels": ["object"]},
            "is_positive": True,
        }
        context = {"result": [region]}
    body: dict[str, Any] = {
        "tasks": [{"id": task_id, "data": {"image": image}}],
        "project": "1.1",
        "label_config": LABEL_CONFIG,
        "params": {"context": context},
    }
    started = time.perf_counter()
    reply = app.handle(Request("POST", "/predict", body))
    elapsed = (time.perf_counter() - started) * 1e3
    if reply.status != 200:
        raise RuntimeError(f"/predict answered {reply.status}: {reply.body}")
    return elapsed


def _hits(app: App) -> int:
    return int(app.metrics()["feature_cache"]["hits"])


def run(quick: bool, device: str, model: str) -> list[dict[str, Any]]:
    """Rows {name, ours, baseline, unit, ratio = baseline/ours}; `model` is a size (`tiny`) or config."""
    trials = 1 if quick else 5  # --quick must keep the whole bench/run.py under 60 s
    delay_s = QUICK_DELAY_S if quick else FULL_DELAY_S
    with tempfile.TemporaryDirectory(prefix="sam2-prewarm-bench-") as tmp:
        config, checkpoint, what = _checkpoint(model or "tiny", Path(tmp))
        sam2 = Sam2Model.load(config, checkpoint, device)
        sam2.warm_up()
        base = Settings(
            model_config=config,
            model_checkpoint=checkpoint,
            device=device,
            warmup=False,
            project_store_dir=Path(tmp) / "projects",
        )
        images = [_image(i) for i in range(trials + 1)]
        cold_app = build_app(replace(base, prewarm=False), model=sam2)
        warm_app = build_app(replace(base, prewarm=True), model=sam2)
        try:
            if not quick:
                # One untimed round on a spare image: first-call allocations are not the subject.
                _predict(cold_app, images[-1], 99, (50.0, 50.0))
            cold, prewarmed, later = [], [], []
            for i in range(trials):
                cold.append(_predict(cold_app, images[i], i, (40.0, 45.0)))
            # The case asks whether prewarm hides the encode behind the annotator's look at the
            # image; where one encode takes longer than the nominal delay (a slow or busy CPU),
            # the delay is stretched to cover it, and the row says so.
            needed_s = 1.25 * max(cold) / 1e3
            if needed_s > delay_s:
                print(
                    f"note: encode takes ~{max(cold) / 1e3:.1f} s; delay {delay_s:g} s -> {needed_s:.1f} s",
                    file=sys.stderr,
                )
                delay_s = needed_s
            for i in range(trials):
                _predict(warm_app, images[i], i, None)  # the task opens
                time.sleep(delay_s)  # the annotator looks at the image
                hits = _hits(warm_app)
                prewarmed.append(_predict(warm_app, images[i], i, (40.0, 45.0)))
                if _hits(warm_app) == hits:
                    print(
                        f"note: trial {i}: prewarm had not started the encode in {delay_s} s", file=sys.stderr
                    )
                later.append(_predict(warm_app, images[i], i, (60.0, 55.0)))
            if warm_app.prewarmer is not None:
                warm_app.prewarmer.drain(60.0)
                print(f"prewarm metrics: {warm_app.metrics()['prewarm']}", file=sys.stderr)
        finally:
            if warm_app.prewarmer is not None:
                warm_app.prewarmer.close()
    cold_ms = statistics.median(cold)
    suffix = f"{what}, {sam2.device}, {WIDTH}x{HEIGHT}, median of {trials}"
    rows = [
        ("first click after task open", statistics.median(prewarmed)),
        ("later click, same image (reference)", statistics.median(later)),
    ]
    return [
        {
            "name": f"{name} vs first click cold ({delay_s:.1f} s annotator delay; {suffix})",
            "ours": round(ours, 1),
            "baseline": round(cold_ms, 1),
            "unit": "ms",
            "ratio": round(cold_ms / ours, 2) if ours > 0 else float("inf"),
        }
        for name, ours in rows
    ]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| case | ours | baseline | unit | ratio (baseline/ours) |", "|---|---:|---:|---|---:|"]
    lines += [f"| {r['name']} | {r['ours']} | {r['baseline']} | {r['unit']} | {r['ratio']} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default=os.environ.get("MODEL_SIZE", "tiny"))
    args = parser.parse_args()
    print(markdown(run(args.quick, args.device, args.model)))


if __name__ == "__main__":
    main()
