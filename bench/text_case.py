"""Bench case: text prompts (detector + SAM2 per box) on a 1024x768 image, side by side.

Rows:
- text prompt, first call: detector + one image encode + one decode per box. Baseline: the
  same work without shared features (detector, then an image encode and a decode per box),
  what a per-box predictor costs.
- click after the text prompt on the same image: decoder only. Baseline: the same click on a
  cold cache (it pays for the image encoder).
- the same text prompt again (Label Studio asking per task after a batch): detections and
  features cached. Baseline: the first call.
- RSS with the detector loaded vs SAM2 alone.

The detector is Grounding DINO-T's architecture (Swin-T + BERT-base, 172 M parameters) with
random weights (`--quick`: a tiny random config); SAM2 is the chosen size with random weights.
Random weights find arbitrary boxes and, at Grounding DINO-T's size, saturate their scores
(hundreds tie at 1.0), so no threshold selects a typical number of boxes: the detector is
wrapped to keep the BOXES best detections of a threshold-0 run (`TopBoxes`; its compute is
unchanged), in ours and in the baseline alike. Requests go through `App.handle` in-process.

    python bench/text_case.py [--quick] [--device cpu|cuda] [--model tiny]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, markdown, memory_mib, model_files
from function.core.detector import Detection, TextPrompt, Thresholds
from function.core.hf_detector import TransformersDetector
from function.core.prompts import Prompt
from function.core.sam2_model import Sam2Model
from function.service.app import App
from function.service.compose import build_app
from function.service.messages import Request
from function.settings import Settings

WIDTH, HEIGHT = 1024, 768
BOXES = 5
PROMPT = "car. person. dog."
WORDS = ("car", "person", "dog", "cat", "tree")


def build_detector(directory: Path, full: bool) -> Path:
    """Random Grounding DINO saved like a downloaded one: GDINO-T's sizes when `full`, else the
    tests' tiny one (tests/detector_support.py)."""
    if not full:
        from tests.detector_support import build_tiny_detector

        return build_tiny_detector(directory)
    import torch
    from transformers import (
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    vocab = {w: i for i, w in enumerate(("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS))}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    config = GroundingDinoConfig()  # Swin-T backbone, BERT-base text encoder: GDINO-T
    image_processor = GroundingDinoImageProcessor()  # shortest edge 800, as GDINO-T ships
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(config).eval().save_pretrained(directory)
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


class TopBoxes:
    """The real detector, at thresholds 0, keeping its `k` best detections (bench only)."""

    def __init__(self, detector: TransformersDetector, k: int) -> None:
        self.detector = detector
        self.k = k
        self.device = detector.device
        self.name = detector.name

    def check(self, prompt: TextPrompt) -> None:
        self.detector.check(prompt)

    def detect(self, image: np.ndarray, prompt: TextPrompt, thresholds: Thresholds) -> list[Detection]:
        return self.detector.detect(image, prompt, Thresholds(0.0, 0.0))[: self.k]


def _pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _image(seed: int) -> str:
    buf = io.BytesIO()
    Image.fromarray(_pixels(seed)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _invoke(app: App, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    reply = app.handle(Request("POST", "/invocations", body))
    elapsed = (time.perf_counter() - started) * 1e3
    if reply.status != 200:
        raise RuntimeError(f"/invocations answered {reply.status}: {reply.body}")
    return elapsed, reply.body


def run(quick: bool, device: str, model: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="sam2-text-bench-") as tmp:
        work = Path(tmp)
        files = model_files(model, work)
        sam2 = Sam2Model.load(files.config, files.checkpoint, device)
        rss_sam2, _ = memory_mib()
        real = TransformersDetector.load(build_detector(work / "detector", not quick), sam2.device)
        detector = TopBoxes(real, BOXES)
        rss_both, _ = memory_mib()
        settings = Settings(warmup=False, prewarm=False, project_store_dir=work / "projects")
        app = build_app(settings, model=sam2, detector=detector)

        prompt = TextPrompt.parse(PROMPT)
        _invoke(app, {"action": "sam2", "image": _image(999), "x": 300, "y": 200})  # untimed warm-up
        trials = 1 if quick else 3
        first, again, click, cold_click, baseline = [], [], [], [], []
        for trial in range(trials):
            pixels = _pixels(trial)
            # Baseline first (no caches involved): detector, then an encode and a decode per box.
            started = time.perf_counter()
            found = detector.detect(pixels, prompt, Thresholds())
            if len(found) != BOXES:
                raise RuntimeError(f"the detector found {len(found)} boxes, not {BOXES}")
            for d in found:
                sam2.decode(sam2.encode(pixels), Prompt.build([], [], d.box))
            baseline.append((time.perf_counter() - started) * 1e3)
            image = _image(trial)
            text = {
                "action": "langsam",
                "text_prompt": PROMPT,
                "box_threshold": 0.0,
                "text_threshold": 0.0,
            }
            ms, body = _invoke(app, {**text, "image": image})
            first.append(ms)
            if len(body["boxes"]) != len(found):
                raise RuntimeError(f"ours found {len(body['boxes'])} boxes, the baseline {len(found)}")
            ms, _ = _invoke(app, {**text, "image": image})
            again.append(ms)
            ms, _ = _invoke(app, {"action": "sam2", "image": image, "x": 300, "y": 200})
            click.append(ms)
            ms, _ = _invoke(app, {"action": "sam2", "image": _image(1000 + trial), "x": 300, "y": 200})
            cold_click.append(ms)  # a new image of the same size: the encoder runs

    label = "tiny random detector" if quick else "GDINO-T size, random weights"
    med = lambda xs: float(np.median(xs))  # noqa: E731
    return [
        Row(f"text prompt 1024x768, {BOXES} boxes ({label})", med(first), med(baseline), "ms").as_json(),
        Row("click after text prompt, same image", med(click), med(cold_click), "ms").as_json(),
        Row("same text prompt again (cached)", med(again), med(first), "ms").as_json(),
        Row(f"RSS, SAM2 {model} + detector ({label})", rss_both, None, "MiB").as_json(),
        Row(f"RSS, SAM2 {model} alone", rss_sam2, None, "MiB").as_json(),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="tiny")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from bench.common import row_from_json

    found = run(args.quick, args.device, args.model)
    print(markdown([row_from_json(r) for r in found]))
    if args.json:
        for r in found:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
