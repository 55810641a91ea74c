"""The transformers implementation of `Detector`: `AutoModelForZeroShotObjectDetection` +
`AutoProcessor` loaded from a local directory: Grounding DINO-T and MM-Grounding-DINO-T (one
`"car. person."` string, boxes scored per phrase token) or OWLv2 / OWL-ViT (one query per
phrase, one score per box; the text threshold does not apply). The path follows the loaded
model's `config.model_type`.

With `sam2_model` the only modules that import torch. Nothing is downloaded at load or request
time; `download_detector` (the `download-detector` command) fetches a directory once, on a
machine that is online.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .detector import Detection, DetectorMissing, TextPrompt, TextPromptError, Thresholds, snap_phrase
from .errors import OutOfMemory
from .geometry import Box

log = logging.getLogger(__name__)

DEFAULT_REPO = "IDEA-Research/grounding-dino-tiny"
QUERY_MODELS = ("owlv2", "owlvit")  # a list of text queries per image, labels are query indices


class TransformersDetector:
    """`AutoModelForZeroShotObjectDetection` + `AutoProcessor` from a local directory."""

    def __init__(self, model: Any, processor: Any, device: str, name: str) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.name = name
        self.queries = getattr(model.config, "model_type", "") in QUERY_MODELS
        tokenizer = getattr(processor, "tokenizer", None)
        if self.queries:  # each phrase is read alone, up to the text tower's positions
            limit = getattr(getattr(model.config, "text_config", None), "max_position_embeddings", None)
        else:
            limit = getattr(model.config, "max_text_len", None)
        limit = limit or getattr(tokenizer, "model_max_length", None)
        self.max_tokens = int(limit) if limit and limit < 1_000_000 else None
        self._lock = threading.Lock()  # tokenizers are not re-entrant across threads

    @classmethod
    def load(cls, directory: Path, device: str) -> TransformersDetector:
        """Load from `directory` (config.json, weights, processor files); nothing is downloaded."""
        if not (directory / "config.json").is_file():
            raise DetectorMissing(
                f"{directory} holds no detector (no config.json); fetch one with "
                f"`python -m function download-detector --dir {directory}` on a machine that is online"
            )
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        processor = AutoProcessor.from_pretrained(str(directory), local_files_only=True)
        model = AutoModelForZeroShotObjectDetection.from_pretrained(str(directory), local_files_only=True)
        model = model.to(device).eval()
        log.info("detector %s loaded from %s on %s", type(model).__name__, directory, device)
        return cls(model, processor, device, directory.name)

    def _tokens(self, prompt: TextPrompt) -> int:
        """Tokens of the whole prompt, or of its longest phrase for a query model."""
        texts = list(prompt.phrases) if self.queries else [prompt.text]
        with self._lock:
            return max(len(ids) for ids in self.processor.tokenizer(texts)["input_ids"])

    def check(self, prompt: TextPrompt) -> None:
        if self.max_tokens is None:
            return
        count = self._tokens(prompt)
        if count > self.max_tokens:
            raise TextPromptError(
                f"is too long for the detector ({count} tokens{' in one phrase' if self.queries else ''}, "
                f"at most {self.max_tokens}); use fewer or shorter phrases"
            )

    def detect(self, image: np.ndarray, prompt: TextPrompt, thresholds: Thresholds) -> list[Detection]:
        import torch
        from PIL import Image

        self.check(prompt)
        h, w = image.shape[:2]
        text: Any = [list(prompt.phrases)] if self.queries else prompt.text
        with self._lock:
            inputs = self.processor(images=Image.fromarray(image), text=text, return_tensors="pt")
        inputs = inputs.to(self.device)
        try:
            with torch.inference_mode():
                outputs = self.model(**inputs)
                if self.queries:  # boxes scaled from the padded square; labels index the phrases
                    results = self.processor.post_process_grounded_object_detection(
                        outputs, threshold=thresholds.box, target_sizes=[(h, w)], text_labels=text
                    )[0]
                else:
                    results = self.processor.post_process_grounded_object_detection(
                        outputs,
                        inputs["input_ids"],
                        threshold=thresholds.box,
                        text_threshold=thresholds.text,
                        target_sizes=[(h, w)],
                    )[0]
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise OutOfMemory("GPU out of memory in the text detector; try again shortly") from None
        scores = results["scores"].float().cpu().numpy()
        boxes = results["boxes"].float().cpu().numpy()
        labels = results.get("text_labels")
        if labels is None:  # older transformers: Grounding DINO's phrases under "labels"
            labels = results.get("labels", [])
        found = []
        for score, (x0, y0, x1, y1), label in zip(scores, boxes, labels, strict=False):
            phrase = snap_phrase(str(label), prompt.phrases)
            box = Box.from_corners(float(x0), float(y0), float(x1), float(y1)).clipped(w, h)
            if phrase is None or box.width <= 0 or box.height <= 0:
                continue
            found.append(Detection(box, float(score), phrase))
        found.sort(key=lambda d: -d.score)
        return found


class DetectorDownloadError(RuntimeError):
    """The detector could not be fetched (offline, unknown repository, disk)."""


def download_detector(repo: str, target: Path, revision: str | None = None) -> Path:
    """Fetch a transformers detector (config, weights, processor files) into `target`.

    Run on a machine that is online, once; the function only ever loads from the directory."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a dependency of transformers
        raise DetectorDownloadError(
            "huggingface_hub is not installed: pip install -r requirements.txt"
        ) from None
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
    try:
        snapshot_download(repo, revision=revision, local_dir=str(target), allow_patterns=patterns)
    except Exception as exc:  # offline, DNS, 401/404, disk: one clear line, never a traceback
        raise DetectorDownloadError(
            f"cannot download {repo} ({type(exc).__name__}); this command needs a machine that can "
            f"reach the Hugging Face Hub. Offline: copy a downloaded directory here and set "
            f"DETECTOR_MODEL={target}"
        ) from None
    if not (target / "config.json").is_file():
        raise DetectorDownloadError(f"{repo} has no config.json: is it a transformers detector?")
    return target
