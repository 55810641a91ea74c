"""What tracking needs from a model, in plain types (no torch here).

A track is a sequence of frames. On its first frame an object is given a prompt (a box or a
mask); on every later frame the model reads the object's `MemoryBank` (the prompted frame and
the most recent frames) and answers a mask. Each answered frame adds one `FrameMemory` to a
*new* bank: banks are immutable, so any older bank a client refers to stays valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..geometry import Box
from ..model import ImageFeatures

# SAM2 reads the prompted frame, the 6 frames before the current one (num_maskmem = 7) and
# the object pointers of up to 15 earlier frames (max_obj_ptrs_in_encoder = 16).
RECENT_MASK_MEMORIES = 6
RECENT_POINTERS = 15


@dataclass(frozen=True)
class TrackPrompt:
    """Where an object is on its first frame: a box, or a (H, W) bool mask, in frame pixels."""

    box: Box | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.box is None) == (self.mask is None):
            raise ValueError("a track prompt is either a box or a mask")


@dataclass(frozen=True)
class TrackedMask:
    """One object on one frame: (H, W) bool mask at the frame's size, and whether SAM2 thinks
    the object is visible (its object score is positive)."""

    mask: np.ndarray
    score: float
    present: bool


@dataclass(frozen=True, eq=False)
class FrameMemory:
    """What one frame leaves in an object's memory. `data` is model-specific (tensors);
    `mask_memory` is False once only the object pointer is kept."""

    data: Any
    nbytes: int
    mask_memory: bool = True


@dataclass(frozen=True)
class MemoryBank:
    """An object's memory after some frame: the prompted frame, then recent frames, newest last."""

    prompt_frame: int
    prompt: FrameMemory
    recent: tuple[tuple[int, FrameMemory], ...] = ()
    reverse: bool = False

    @property
    def last_frame(self) -> int:
        return self.recent[-1][0] if self.recent else self.prompt_frame

    @property
    def memories(self) -> tuple[FrameMemory, ...]:
        return (self.prompt, *(m for _, m in self.recent))

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self.memories)

    def next_frame(self) -> int:
        return self.last_frame + (-1 if self.reverse else 1)

    def advanced(self, frame: int, memory: FrameMemory, strip: Any) -> MemoryBank:
        """A new bank with `frame` appended; only the newest `RECENT_MASK_MEMORIES` frames keep
        their mask memory (`strip(memory)` keeps the pointer), only `RECENT_POINTERS` stay."""
        recent = [*self.recent[-(RECENT_POINTERS - 1) :], (frame, memory)]
        cut = len(recent) - RECENT_MASK_MEMORIES
        kept = tuple((f, strip(m) if i < cut and m.mask_memory else m) for i, (f, m) in enumerate(recent))
        return MemoryBank(self.prompt_frame, self.prompt, kept, self.reverse)


class TrackerModel(Protocol):
    """The model side of tracking. `Sam2Tracker` is the real one."""

    def start(
        self, features: ImageFeatures, prompt: TrackPrompt, frame: int
    ) -> tuple[FrameMemory, TrackedMask]:
        """Segment `prompt` on a frame without memory and encode it as the prompt memory."""

    def track(self, features: ImageFeatures, bank: MemoryBank, frame: int) -> tuple[FrameMemory, TrackedMask]:
        """Segment the object on `frame` from its memory."""

    def pointer_only(self, memory: FrameMemory) -> FrameMemory:
        """The same memory without its mask features (what frames older than 6 keep)."""
