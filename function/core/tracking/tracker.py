"""The tracking engine: frame features through the image engine's cache, one model step per
object and frame, memory banks bounded, sessions kept in a `SessionStore`.

Two ways in:
- `start` / `step`: one frame per call, state server-side between calls (CVAT's tracker).
- `run`: a window of frames in one call, the banks living only for that call (Label Studio).
Either way each frame is encoded once, whatever the number of objects, and a frame already
encoded for a click (same cache key) is not encoded again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine import EncoderInput, Engine
from ..images import content_key
from .errors import FrameMismatch, TrackingExpired, TrackingLimit
from .model import MemoryBank, TrackedMask, TrackerModel, TrackPrompt
from .session import SessionStore, Snapshot, StateRef
from .shared import SharedSnapshots

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """One video frame: its index in the video, encoder input (cache key + lazy pixels), size."""

    index: int
    source: EncoderInput
    hw: tuple[int, int]

    @classmethod
    def from_pixels(cls, index: int, pixels: np.ndarray) -> Frame:
        """A decoded (H, W, 3) uint8 RGB frame, keyed by its content (so the same pixels are
        encoded once, whichever video or request they come from)."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        h, w = pixels.shape[:2]
        key = "rgb-" + content_key(pixels.tobytes()) + f"-{w}x{h}"
        return cls(index, EncoderInput(key, lambda: pixels), (h, w))


@dataclass(frozen=True)
class ObjectPlan:
    """Track one object: prompt on `prompt_frame`, then every frame up to `last_frame`
    (inclusive; below `prompt_frame` when `reverse`)."""

    prompt: TrackPrompt
    prompt_frame: int
    last_frame: int
    reverse: bool = False

    def covers(self, index: int) -> bool:
        lo, hi = sorted((self.prompt_frame, self.last_frame))
        return lo <= index <= hi


@dataclass
class TrackingStats:
    steps: int = 0
    prompts: int = 0
    frames: int = 0
    step_seconds: float = 0.0
    frames_encoded: int = field(default=0)


class Tracker:
    def __init__(
        self,
        engine: Engine,
        model: TrackerModel,
        store: SessionStore,
        max_objects: int = 16,
        shared: SharedSnapshots | None = None,
    ) -> None:
        self.engine = engine
        self.model = model
        self.store = store
        self.max_objects = max_objects
        self.shared = shared  # snapshots other replicas can continue (FEATURE_STORE_URL)
        self.stats = TrackingStats()

    def metrics(self) -> dict[str, Any]:
        store = self.store
        return {
            "sessions": len(store),
            "snapshots": store.snapshot_count,
            "memory_bytes": store.nbytes,
            "max_memory_bytes": store.limits.max_bytes,
            "evictions": store.evictions,
            "prompts": self.stats.prompts,
            "steps": self.stats.steps,
            "frames": self.stats.frames,
            "frames_encoded": self.stats.frames_encoded,
            "step_seconds": round(self.stats.step_seconds, 3),
            "shared": self.shared.metrics() if self.shared else {"enabled": False},
        }

    def _check_objects(self, count: int) -> None:
        if count > self.max_objects:
            raise TrackingLimit(
                f"{count} objects in one track; the limit is {self.max_objects} (TRACKING_MAX_OBJECTS)"
            )

    def _features(self, frame: Frame):  # type: ignore[no-untyped-def]
        features, cached = self.engine.features(frame.source)
        self.stats.frames += 1
        self.stats.frames_encoded += 0 if cached else 1
        if tuple(features.image_hw) != tuple(frame.hw):
            raise FrameMismatch("frame features do not match the frame size")
        return features

    def _start_one(self, features, prompt: TrackPrompt, index: int, reverse: bool):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        memory, result = self.model.start(features, prompt, index)
        self.stats.prompts += 1
        self.stats.step_seconds += time.perf_counter() - started
        return MemoryBank(index, memory, (), reverse), result

    def _track_one(self, features, bank: MemoryBank, index: int):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        memory, result = self.model.track(features, bank, index)
        self.stats.steps += 1
        self.stats.step_seconds += time.perf_counter() - started
        return bank.advanced(index, memory, self.model.pointer_only), result

    # -- snapshots: here, else from the shared tier -------------------------------------
    def _snapshot(self, ref: StateRef) -> Snapshot:
        try:
            return self.store.get(ref)
        except TrackingExpired:
            loaded = self.shared.load(ref) if self.shared else None
            if loaded is None:
                raise
            return self.store.adopt(loaded)

    def _keep(self, session: str, frame: int, hw: tuple[int, int], banks: dict[str, MemoryBank]) -> Snapshot:
        ref = self.store.next_ref(session)
        if self.shared:
            ref = self.shared.reserve(ref)
        snapshot = Snapshot(ref, frame, hw, banks)
        self.store.put(snapshot)
        if self.shared:  # before the reply: the next call may land on another replica
            self.shared.save(snapshot)
        return snapshot

    # -- one frame per call, sessions --------------------------------------------------
    def start(
        self, frame: Frame, prompts: Mapping[str, TrackPrompt], reverse: bool = False
    ) -> tuple[Snapshot, dict[str, TrackedMask]]:
        """A new session: each object prompted on `frame`."""
        if not prompts:
            raise TrackingLimit("nothing to track: no objects given")
        self._check_objects(len(prompts))
        features = self._features(frame)
        banks, results = {}, {}
        for key, prompt in prompts.items():
            banks[key], results[key] = self._start_one(features, prompt, frame.index, reverse)
        return self._keep(self.store.new_session(), frame.index, frame.hw, banks), results

    def step(
        self, ref: StateRef, frame: Frame | None, objects: Iterable[str] | None = None
    ) -> tuple[Snapshot, dict[str, TrackedMask]]:
        """Continue the snapshot `ref` on the next frame (`frame.index` is ignored: the next
        frame of each bank is taken). `objects`: the subset to continue (default all)."""
        snapshot = self._snapshot(ref)
        if frame is None:
            raise FrameMismatch("no frame to track on")
        if tuple(frame.hw) != tuple(snapshot.frame_hw):
            h, w = snapshot.frame_hw
            raise FrameMismatch(
                f"frame is {frame.hw[1]}x{frame.hw[0]} but this track started on a {w}x{h} frame"
            )
        wanted = list(snapshot.banks) if objects is None else list(dict.fromkeys(objects))
        missing = [k for k in wanted if k not in snapshot.banks]
        if missing:
            raise FrameMismatch(f"object {missing[0]!r} is not part of this tracking state")
        features = self._features(frame)
        banks, results = {}, {}
        for key in wanted:
            bank = snapshot.banks[key]
            banks[key], results[key] = self._track_one(features, bank, bank.next_frame())
        next_frame = banks[wanted[0]].last_frame if wanted else snapshot.frame
        return self._keep(ref.session, next_frame, snapshot.frame_hw, banks), results

    # -- a window of frames in one call --------------------------------------------------
    def run(
        self, frames: Iterable[Frame], plans: Mapping[str, ObjectPlan]
    ) -> Iterator[tuple[int, dict[str, TrackedMask]]]:
        """Track every object of `plans` over `frames` (ascending, or descending when the
        plans are reverse). Yields (frame index, masks of the objects tracked on it),
        prompt frames included. Frames no plan covers are skipped without encoding."""
        self._check_objects(len(plans))
        banks: dict[str, MemoryBank] = {}
        for frame in frames:
            active = [k for k, p in plans.items() if p.covers(frame.index)]
            if not active:
                continue
            features = self._features(frame)
            results = {}
            for key in active:
                plan = plans[key]
                if frame.index == plan.prompt_frame:
                    banks[key], results[key] = self._start_one(
                        features, plan.prompt, frame.index, plan.reverse
                    )
                elif key in banks:
                    banks[key], results[key] = self._track_one(features, banks[key], frame.index)
            yield frame.index, results
