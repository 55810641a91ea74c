"""Engine and FeatureCache: byte-bounded LRU, single-flight encodes, decoder-only second clicks,
and the real SAM2 decode path equal to SAM2ImagePredictor's."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from function.core.engine import EncoderInput, Engine, FeatureCache
from function.core.geometry import Box
from function.core.images import ImageCache, LoadedImage
from function.core.model import ImageFeatures
from function.core.pipeline import Segmenter
from function.core.prompts import Prompt

from .fakes import FakeModel
from .support import encode_image, sample_array

MiB = 2**20


def feats(nbytes: int, tag: Any = None) -> ImageFeatures:
    return ImageFeatures(tag, (), (1, 1), nbytes)


def test_cache_is_bounded_in_bytes_and_evicts_least_recently_used() -> None:
    cache = FeatureCache(3 * MiB)
    for key in "abc":
        cache.get_or_compute(key, lambda: feats(MiB))
    assert len(cache) == 3 and cache.nbytes == 3 * MiB
    cache.get_or_compute("a", lambda: pytest.fail("a is cached"))  # a becomes most recent
    cache.get_or_compute("d", lambda: feats(MiB))
    assert "b" not in cache  # least recently used went first
    assert all(k in cache for k in "acd")
    assert cache.nbytes == 3 * MiB
    cache.get_or_compute("e", lambda: feats(2 * MiB))
    assert cache.nbytes <= 3 * MiB
    assert "e" in cache and "d" in cache and "a" not in cache and "c" not in cache
    assert (cache.hits, cache.misses) == (1, 5)


def test_entry_larger_than_the_budget_is_returned_but_not_kept() -> None:
    cache = FeatureCache(MiB)
    cache.get_or_compute("small", lambda: feats(MiB // 2))
    value, cached = cache.get_or_compute("huge", lambda: feats(2 * MiB, "huge"))
    assert value.image_embed == "huge" and not cached
    assert "huge" not in cache and "small" in cache


def test_zero_budget_caches_nothing() -> None:
    cache = FeatureCache(0)
    calls = []
    for _ in range(2):
        cache.get_or_compute("k", lambda: calls.append(1) or feats(1))  # type: ignore[func-returns-value]
    assert len(calls) == 2 and len(cache) == 0


def test_single_flight_two_threads_one_compute() -> None:
    cache = FeatureCache(10 * MiB)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def compute() -> ImageFeatures:
        calls.append(1)
        started.set()
        assert release.wait(10)
        return feats(MiB, "shared")

    results: list[tuple[ImageFeatures, bool]] = []
    first = threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute)))
    first.start()
    assert started.wait(10)
    assert cache.is_in_flight("k")
    second = threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute)))
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert len(calls) == 1
    assert sorted(cached for _, cached in results) == [False, True]
    assert results[0][0] is results[1][0]
    assert not cache.is_in_flight("k")


def test_failed_compute_is_not_cached_and_a_waiter_retries() -> None:
    cache = FeatureCache(10 * MiB)
    started, release = threading.Event(), threading.Event()

    def failing() -> ImageFeatures:
        started.set()
        assert release.wait(10)
        raise RuntimeError("encoder broke")

    errors: list[BaseException] = []

    def run_failing() -> None:
        try:
            cache.get_or_compute("k", failing)
        except RuntimeError as exc:
            errors.append(exc)

    first = threading.Thread(target=run_failing)
    first.start()
    assert started.wait(10)
    results: list[tuple[ImageFeatures, bool]] = []
    second = threading.Thread(
        target=lambda: results.append(cache.get_or_compute("k", lambda: feats(1, "ok")))
    )
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert len(errors) == 1
    assert results and results[0][0].image_embed == "ok" and results[0][1] is False


def test_trim_keeps_most_recent() -> None:
    cache = FeatureCache(10 * MiB)
    for key in "abc":
        cache.get_or_compute(key, lambda: feats(MiB))
    cache.trim(keep=1)
    assert len(cache) == 1 and "c" in cache and cache.nbytes == MiB


def image_input(pixels: np.ndarray, key: str) -> EncoderInput:
    return EncoderInput(key, lambda: pixels)


def test_second_click_on_the_same_image_runs_no_encoder_pass() -> None:
    model = FakeModel()
    engine = Engine(model, FeatureCache(100 * MiB))
    pixels = sample_array()
    first, cached1 = engine.segment(image_input(pixels, "img"), Prompt.build([(300, 240)], [], None))
    second, cached2 = engine.segment(
        image_input(pixels, "img"), Prompt.build([(100, 100)], [(300, 240)], None)
    )
    assert (cached1, cached2) == (False, True)
    assert model.encode_calls == 1 and engine.stats.encoder_calls == 1
    assert model.decode_calls == 2 and engine.stats.decoder_calls == 2
    assert first.mask[240, 300] and second.mask[100, 100] and not second.mask[240, 300]


def test_pixels_are_not_decoded_on_a_cache_hit() -> None:
    model = FakeModel()
    engine = Engine(model, FeatureCache(100 * MiB))
    segmenter = Segmenter(engine, ImageCache(100 * MiB))
    image = LoadedImage.from_bytes(encode_image(sample_array()), 10**8)
    segmenter.segment(image, Prompt.build([(10, 10)], [], None))
    twin = LoadedImage.from_bytes(encode_image(sample_array()), 10**8)  # same bytes, new object
    result = segmenter.segment(twin, Prompt.build([(20, 20)], [], None))
    assert result.cached and not twin.is_decoded
    assert model.encode_calls == 1


def test_concurrent_requests_on_different_images_get_their_own_features() -> None:
    model = FakeModel(encode_seconds=0.05)
    engine = Engine(model, FeatureCache(100 * MiB))
    images = {f"img{i}": np.full((8, 8, 3), i * 20, np.uint8) for i in range(6)}
    seen: dict[str, float] = {}

    def work(key: str) -> None:
        features, _ = engine.features(image_input(images[key], key))
        seen[key] = features.image_embed

    threads = [threading.Thread(target=work, args=(k,)) for k in images for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert model.encode_calls == len(images)
    assert seen == {k: float(v.mean()) for k, v in images.items()}


# -- real SAM2 (random weights), loaded through the production path -----------------------


@pytest.fixture(scope="module")
def real_image() -> np.ndarray:
    return sample_array(320, 240)


@pytest.mark.sam2
def test_real_sam2_second_click_costs_no_encoder_pass(sam2_model: Any, real_image: np.ndarray) -> None:
    engine = Engine(sam2_model, FeatureCache(512 * MiB))
    source = image_input(real_image, "real")
    seg1, cached1 = engine.segment(source, Prompt.build([(150, 120)], [], None))
    seg2, cached2 = engine.segment(source, Prompt.build([(150, 120)], [(20, 20)], Box(96, 72, 208, 168)))
    assert (cached1, cached2) == (False, True)
    assert engine.stats.encoder_calls == 1 and engine.stats.decoder_calls == 2
    for seg in (seg1, seg2):
        assert seg.mask.shape == (240, 320) and seg.mask.dtype == bool
        assert np.isfinite(seg.score)
    assert engine.cache.nbytes > 0


@pytest.mark.sam2
def test_real_sam2_decode_equals_sam2_image_predictor(sam2_model: Any, real_image: np.ndarray) -> None:
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    reference = SAM2ImagePredictor(sam2_model.sam2)
    reference.set_image(real_image)
    features = sam2_model.encode(real_image)

    # One point: multimask, keep the best by predicted IoU.
    ours = sam2_model.decode(features, Prompt.build([(150.5, 120.0)], [], None))
    masks, ious, _ = reference.predict(
        point_coords=np.array([[150.5, 120.0]]), point_labels=np.array([1]), multimask_output=True
    )
    best = int(np.argmax(ious))
    assert np.array_equal(ours.mask, masks[best].astype(bool))
    assert ours.score == pytest.approx(float(ious[best]), abs=1e-5)

    # A box: one mask.
    ours = sam2_model.decode(features, Prompt.build([], [], Box(96, 72, 208, 168)))
    masks, ious, _ = reference.predict(box=np.array([96, 72, 208, 168]), multimask_output=False)
    assert np.array_equal(ours.mask, masks[0].astype(bool))
    assert ours.score == pytest.approx(float(ious[0]), abs=1e-5)

    # Points and a box together, positive and negative.
    prompt = Prompt.build([(150, 120)], [(100, 80)], Box(96, 72, 208, 168))
    ours = sam2_model.decode(features, prompt)
    masks, ious, _ = reference.predict(
        point_coords=np.array([[150, 120], [100, 80]]),
        point_labels=np.array([1, 0]),
        box=np.array([96, 72, 208, 168]),
        multimask_output=False,
    )
    assert np.array_equal(ours.mask, masks[0].astype(bool))


@pytest.mark.sam2
def test_sam2_loads_through_the_production_path(tiny_checkpoint: Path) -> None:
    """The fixture checkpoint has Meta's layout: {"model": state_dict}."""
    import torch

    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    assert set(state) == {"model"} and "image_encoder.trunk.pos_embed" in state["model"]
