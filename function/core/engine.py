"""Encode an image once, decode many prompts on it.

`Engine.segment(source, prompt)` is the entry point of the segmentation pipeline. It looks
the image's features up in a `FeatureCache` keyed by the image content (plus any crop or
resize applied to it), runs the image encoder only on a miss, and runs the prompt decoder.
The engine knows nothing about Label Studio or CVAT, nor which framework runs the model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from .errors import OutOfMemory
from .model import ImageFeatures, Segmentation, SegmentationModel
from .prompts import Prompt

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class EncoderInput:
    """An image to encode, identified by `key` (content hash + view); pixels loaded lazily."""

    key: str
    pixels: Callable[[], np.ndarray]


class SharedTier(Protocol):
    """A store behind the LRU that other processes share (core/feature_store.FeatureTier).

    `get` never raises and is bounded by a short timeout; `publish` returns at once."""

    def get(self, key: str) -> ImageFeatures | None: ...

    def publish(self, key: str, features: ImageFeatures) -> None: ...

    def metrics(self) -> dict[str, Any]: ...


class FeatureCache:
    """LRU of `ImageFeatures`, bounded in bytes, with one computation per key in flight.

    Concurrent requests for a key that is being encoded wait for that pass instead of
    starting another one.
    """

    def __init__(self, max_bytes: int, tier: SharedTier | None = None) -> None:
        self.max_bytes = max_bytes
        self.tier = tier
        self._entries: OrderedDict[str, ImageFeatures] = OrderedDict()
        self._in_flight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def is_in_flight(self, key: str) -> bool:
        with self._lock:
            return key in self._in_flight

    def get_or_compute(self, key: str, compute: Callable[[], ImageFeatures]) -> tuple[ImageFeatures, bool]:
        """Return (features, was_cached)."""
        while True:
            with self._lock:
                found = self._entries.get(key)
                if found is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return found, True
                pending = self._in_flight.get(key)
                if pending is None:
                    pending = self._in_flight[key] = threading.Event()
                    self.misses += 1
                    break
            pending.wait()
            # The other pass finished (or failed): look again, maybe compute ourselves.
        try:
            # Second tier (shared by replicas): asked only by the one pass that owns the key.
            shared = self.tier.get(key) if self.tier is not None else None
            if shared is not None:
                self._put(key, shared)
                return shared, True
            features = compute()
            self._put(key, features)
            if self.tier is not None:
                self.tier.publish(key, features)  # written by a background thread
            return features, False
        finally:
            with self._lock:
                self._in_flight.pop(key).set()

    def _put(self, key: str, features: ImageFeatures) -> None:
        if features.nbytes > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = features
            self.nbytes += features.nbytes
            while self.nbytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.nbytes -= evicted.nbytes

    def trim(self, keep: int = 0) -> None:
        """Drop all but the `keep` most recently used entries."""
        with self._lock:
            while len(self._entries) > keep:
                _, evicted = self._entries.popitem(last=False)
                self.nbytes -= evicted.nbytes


@dataclass
class EngineStats:
    encoder_calls: int = 0
    decoder_calls: int = 0
    encode_seconds: float = 0.0


class Engine:
    """Segments prompts on images, encoding each image (view) once while it stays cached."""

    def __init__(self, model: SegmentationModel, cache: FeatureCache) -> None:
        self.model = model
        self.cache = cache
        self.stats = EngineStats()

    def features(self, source: EncoderInput) -> tuple[ImageFeatures, bool]:
        """Features of `source`, and whether they came from the cache."""

        def encode() -> ImageFeatures:
            pixels = source.pixels()
            started = time.perf_counter()
            features = self._with_oom_retry(lambda: self.model.encode(pixels))
            self.stats.encoder_calls += 1
            self.stats.encode_seconds += time.perf_counter() - started
            return features

        return self.cache.get_or_compute(source.key, encode)

    def segment(self, source: EncoderInput, prompt: Prompt) -> tuple[Segmentation, bool]:
        """Segment `prompt` (pixels of the source image). Returns (segmentation, cache hit)."""
        features, cached = self.features(source)
        self.stats.decoder_calls += 1
        # Decoding holds this image's features anyway: dropping them (the most recently
        # used entry) would free nothing now and cost a re-encode on the next click.
        return self._with_oom_retry(lambda: self.model.decode(features, prompt), keep=1), cached

    def has_features(self, key: str) -> bool:
        """Whether features for `key` are cached or being computed right now."""
        return key in self.cache or self.cache.is_in_flight(key)

    def metrics(self) -> dict[str, Any]:
        cache = self.cache
        return {
            "feature_cache": {
                "entries": len(cache),
                "bytes": cache.nbytes,
                "max_bytes": cache.max_bytes,
                "hits": cache.hits,
                "misses": cache.misses,
            },
            "encoder_calls": self.stats.encoder_calls,
            "decoder_calls": self.stats.decoder_calls,
            "feature_store": cache.tier.metrics() if cache.tier is not None else {"enabled": False},
        }

    def _with_oom_retry(self, step: Callable[[], T], keep: int = 0) -> T:
        try:
            return step()
        except OutOfMemory:
            log.warning("out of memory: trimming the feature cache and retrying once")
            self.cache.trim(keep=keep)
            self.model.free_memory()
            try:
                return step()
            except OutOfMemory:
                self.model.free_memory()
                raise OutOfMemory("GPU out of memory; try again shortly") from None
