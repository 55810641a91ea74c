"""Open-vocabulary detection: text + image -> boxes (pixels), scores, phrases.

The default implementation runs a transformers zero-shot detector (Grounding DINO-T; the
MM-Grounding-DINO-T checkpoints load through the same classes) from a local directory. It is
loaded once per process, on the same device as SAM2, and never downloads anything: the weights
come from `python -m function download-detector` on a machine that is online.

Prompts are normalised the LangSAM way: lower case, phrases separated by `.` (or new lines),
each ending with `.` (`"Car. Person"` -> `"car. person."`). Every detection is reported with one
of the prompt's phrases; a box whose text tokens stay below the text threshold matches no
phrase and is dropped, so both thresholds shape the number of detections.

Knows no protocol: errors are `TextPromptError`s, mapped to HTTP statuses by the adapters.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..geometry import Box

log = logging.getLogger(__name__)

DEFAULT_BOX_THRESHOLD = 0.3  # LangSAM's defaults
DEFAULT_TEXT_THRESHOLD = 0.25
MAX_PROMPT_CHARS = 2000  # a guard before tokenising; the tokenizer's limit is checked too
DEFAULT_REPO = "IDEA-Research/grounding-dino-tiny"
_SEPARATORS = re.compile(r"[.\n]+")
_SPACES = re.compile(r"\s+")
_SPECIAL = re.compile(r"\[(?:cls|sep|pad|unk|mask)\]")


class TextPromptError(ValueError):
    """A text prompt or its thresholds cannot be used. `message` names no field: the adapter
    that parsed the request knows which field it came from and prefixes it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DetectorNotConfigured(RuntimeError):
    """A text prompt arrived but this deployment loads no detector."""

    HOW_TO = (
        "text prompts need a detector: run `python -m function download-detector --dir DIR` on a "
        "machine that is online, then set DETECTOR_MODEL=DIR for the function"
    )

    def __init__(self) -> None:
        super().__init__(self.HOW_TO)
        self.message = self.HOW_TO


class DetectorMissing(RuntimeError):
    """DETECTOR_MODEL names a directory that holds no detector (checked at start)."""


@dataclass(frozen=True)
class TextPrompt:
    """Normalised phrases, in prompt order, without duplicates."""

    phrases: tuple[str, ...]

    @property
    def text(self) -> str:
        """What the detector reads: `"car. person."`."""
        return " ".join(f"{p}." for p in self.phrases)

    @classmethod
    def parse(cls, raw: Any) -> TextPrompt:
        if not isinstance(raw, str):
            raise TextPromptError(f"must be a string, got {type(raw).__name__}")
        if len(raw) > MAX_PROMPT_CHARS:
            raise TextPromptError(f"is too long ({len(raw)} characters, at most {MAX_PROMPT_CHARS})")
        phrases: list[str] = []
        for part in _SEPARATORS.split(raw.lower()):
            phrase = _SPACES.sub(" ", part).strip(" ,;")
            if phrase and phrase not in phrases:
                phrases.append(phrase)
        if not phrases:
            raise TextPromptError("is empty; write one or more phrases such as 'car. person.'")
        return cls(tuple(phrases))


def _threshold(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise TextPromptError(f"{name} must be a number between 0 and 1, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Thresholds:
    """`box`: minimum detection score; `text`: minimum score of a phrase's tokens."""

    box: float = DEFAULT_BOX_THRESHOLD
    text: float = DEFAULT_TEXT_THRESHOLD

    def __post_init__(self) -> None:
        _threshold(self.box, "box_threshold")
        _threshold(self.text, "text_threshold")

    def with_overrides(self, box: Any = None, text: Any = None) -> Thresholds:
        """These thresholds with any given value replaced (validated, named in errors)."""
        return Thresholds(
            self.box if box is None else _threshold(box, "box_threshold"),
            self.text if text is None else _threshold(text, "text_threshold"),
        )


@dataclass(frozen=True)
class Detection:
    """A box in pixels of the image (clipped to it), its score and the prompt phrase it matched."""

    box: Box
    score: float
    phrase: str


class Detector(Protocol):
    device: str
    name: str

    def check(self, prompt: TextPrompt) -> None:
        """Raise TextPromptError when the prompt cannot be read whole (too many tokens)."""

    def detect(self, image: np.ndarray, prompt: TextPrompt, thresholds: Thresholds) -> list[Detection]:
        """`image`: (H, W, 3) uint8 RGB. Detections sorted by score, best first."""


def snap_phrase(label: str, phrases: tuple[str, ...]) -> str | None:
    """The prompt phrase a detector's text label names: the same phrase, else the one sharing
    most words with it (first in prompt order on ties), else None."""
    text = _SPACES.sub(" ", _SPECIAL.sub(" ", label.lower()).replace(".", " ")).strip()
    if not text:
        return None
    if text in phrases:
        return text
    words = set(text.split())
    best, overlap = None, 0
    for phrase in phrases:
        shared = len(words & set(phrase.split()))
        if shared > overlap:
            best, overlap = phrase, shared
    return best


class TransformersDetector:
    """`AutoModelForZeroShotObjectDetection` + `AutoProcessor` from a local directory."""

    def __init__(self, model: Any, processor: Any, device: str, name: str) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.name = name
        tokenizer = getattr(processor, "tokenizer", None)
        limit = getattr(model.config, "max_text_len", None) or getattr(tokenizer, "model_max_length", None)
        self.max_tokens = int(limit) if limit and limit < 1_000_000 else None
        self._lock = threading.Lock()  # tokenizers are not re-entrant across threads

    @classmethod
    def load(cls, directory: Path, device: str) -> TransformersDetector:
        """Load from `directory` (config.json, weights, processor files); nothing is downloaded."""
        if not (directory / "config.json").is_file():
            raise DetectorMissing(
                f"DETECTOR_MODEL={directory} holds no detector (no config.json); fetch one with "
                f"`python -m function download-detector --dir {directory}` on a machine that is online"
            )
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        processor = AutoProcessor.from_pretrained(str(directory), local_files_only=True)
        model = AutoModelForZeroShotObjectDetection.from_pretrained(str(directory), local_files_only=True)
        model = model.to(device).eval()
        log.info("detector %s loaded from %s on %s", type(model).__name__, directory, device)
        return cls(model, processor, device, directory.name)

    def _tokens(self, prompt: TextPrompt) -> int:
        with self._lock:
            return len(self.processor.tokenizer(prompt.text)["input_ids"])

    def check(self, prompt: TextPrompt) -> None:
        if self.max_tokens is None:
            return
        count = self._tokens(prompt)
        if count > self.max_tokens:
            raise TextPromptError(
                f"is too long for the detector ({count} tokens, at most {self.max_tokens}); "
                "use fewer or shorter phrases"
            )

    def detect(self, image: np.ndarray, prompt: TextPrompt, thresholds: Thresholds) -> list[Detection]:
        import torch
        from PIL import Image

        self.check(prompt)
        h, w = image.shape[:2]
        with self._lock:
            inputs = self.processor(images=Image.fromarray(image), text=prompt.text, return_tensors="pt")
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
            results = self.processor.post_process_grounded_object_detection(
                outputs,
                inputs["input_ids"],
                threshold=thresholds.box,
                text_threshold=thresholds.text,
                target_sizes=[(h, w)],
            )[0]
        scores = results["scores"].float().cpu().numpy()
        boxes = results["boxes"].float().cpu().numpy()
        labels = results.get("text_labels") or results.get("labels") or []
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
