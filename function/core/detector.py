"""Open-vocabulary detection: text + image -> boxes (pixels), scores, phrases.

The implementation (`hf_detector.TransformersDetector`) runs a transformers zero-shot
detector (Grounding DINO-T; MM-Grounding-DINO-T and OWLv2 load through the same classes) from a local
directory, once per process, on SAM2's device; this module holds the interface and the
domain rules, and imports no torch.

Prompts are normalised the LangSAM way: lower case, phrases separated by `.` (or new lines),
each ending with `.` (`"Car. Person"` -> `"car. person."`). Every detection is reported with one
of the prompt's phrases; a box whose text tokens stay below the text threshold matches no
phrase and is dropped, so both thresholds shape the number of detections (OWLv2 scores a box
per phrase, not per token: only the box threshold applies to it).

Knows no protocol: a bad prompt is a `TextPromptError` (an `InvalidPrompt`) whose message
names no field; the adapter that parsed the request prefixes the field it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .errors import ExpectedError, InvalidPrompt
from .geometry import Box

DEFAULT_BOX_THRESHOLD = 0.3  # LangSAM's defaults
DEFAULT_TEXT_THRESHOLD = 0.25
MAX_PROMPT_CHARS = 2000  # a guard before tokenising; the tokenizer's limit is checked too
_SEPARATORS = re.compile(r"[.\n]+")
_SPACES = re.compile(r"\s+")
_SPECIAL = re.compile(r"\[(?:cls|sep|pad|unk|mask)\]")


class TextPromptError(InvalidPrompt):
    """A text prompt or its thresholds cannot be used (empty, too long, out of range)."""


class DetectorNotConfigured(ExpectedError):
    """A text prompt arrived but this deployment loads no detector."""

    HOW_TO = (
        "text prompts need a detector: run `python -m function download-detector --dir DIR` on a "
        "machine that is online, then set DETECTOR_MODEL=DIR for the function"
    )

    def __init__(self) -> None:
        super().__init__(self.HOW_TO)


class DetectorMissing(RuntimeError):
    """The configured detector directory holds no detector (checked at start)."""


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
