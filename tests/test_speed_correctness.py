"""The speed work must not change answers: RLE bytes, upsampled masks, fetch/decode counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from label_studio_sdk.converter.brush import bits2byte, mask2rle

import function.core.images as images_module
from function.adapters.labelstudio.brush import _header, _pack, mask_to_rle, run_starts
from function.core.prompts import Prompt

from .fakes import FakeModel
from .support import (
    call,
    encode_image,
    examples,
    fake_label_studio,
    keypoint,
    make_app,
    predict_body,
    rle_mask,
    sample_array,
)

# -- brush RLE -----------------------------------------------------------------------------

shapes = st.tuples(st.integers(1, 48), st.integers(1, 48))


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    """0/255 masks, any-valued uint8 masks, long runs and speckle, all small enough for the SDK."""
    h, w = draw(shapes)
    kind = draw(st.sampled_from(["binary", "any", "blocks", "speckled"]))
    if kind == "any":
        return draw(arrays(np.uint8, (h, w)))
    if kind == "blocks":
        mask = np.zeros((h, w), np.uint8)
        for _ in range(draw(st.integers(0, 4))):
            y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
            mask[y0 : y0 + draw(st.integers(1, h)), x0 : x0 + draw(st.integers(1, w))] = 255
        return mask
    bits = draw(arrays(np.bool_, (h, w)))
    if kind == "speckled":
        base = np.zeros((h, w), bool)
        base[: h // 2] = True
        bits = base ^ (bits & draw(arrays(np.bool_, (h, w))))  # about 25% of pixels flipped
    return bits.astype(np.uint8) * 255


@settings(max_examples=examples(300), deadline=None)
@given(masks())
def test_rle_is_byte_identical_to_the_sdk(mask: np.ndarray) -> None:
    assert mask_to_rle(mask) == mask2rle(mask)


@settings(max_examples=examples(100), deadline=None)
@given(arrays(np.bool_, shapes))
def test_bool_masks_encode_as_0_255(mask: np.ndarray) -> None:
    assert mask_to_rle(mask) == mask2rle(mask.astype(np.uint8) * 255)


@settings(max_examples=examples(300), deadline=None)
@given(arrays(np.uint8, st.integers(0, 300), elements=st.integers(0, 3)))
def test_run_starts_finds_every_change(flat: np.ndarray) -> None:
    expected = [i for i in range(len(flat)) if i == 0 or flat[i] != flat[i - 1]]
    assert run_starts(flat).tolist() == (expected if len(flat) else [0])


@pytest.mark.parametrize("pixels", [16383, 16384, 16385, 32768, 49153])
def test_runs_split_at_65536_values_like_the_sdk(pixels: int) -> None:
    # 16384 pixels = 65536 RLE values: the boundary where the SDK splits a run.
    mask = np.zeros((1, pixels), np.uint8)
    assert mask_to_rle(mask) == mask2rle(mask)
    mask[0, -1] = 255
    assert mask_to_rle(mask) == mask2rle(mask)


def test_large_smooth_and_speckled_masks_match_the_sdk() -> None:
    yy, xx = np.ogrid[:3000, :4000]
    smooth = (((xx - 2100) / 1500.0) ** 2 + ((yy - 1400) / 900.0) ** 2 <= 1).astype(np.uint8) * 255
    assert mask_to_rle(smooth) == mask2rle(smooth)
    rng = np.random.default_rng(0)
    speckled = smooth[:750, :1000].copy()
    speckled[rng.random(speckled.shape) < 0.02] ^= 255
    rle = mask_to_rle(speckled)
    assert rle == mask2rle(speckled)
    np.testing.assert_array_equal(rle_mask(rle, 1000, 750), speckled)


@pytest.mark.parametrize("count", [0, 4, 2**32 - 4, 2**32, 2**35 + 12])
def test_header_counts_are_written_like_the_sdk(count: int) -> None:
    # The SDK formats the value count with {:032b}: wider counts take more bits.
    bits = f"{count:032b}" + "00111" + "0010" + "0011" + "0111" + "1111"
    bits += "0" * (8 - len(bits) % 8)
    assert _pack(*_header(count)) == bits2byte(bits)


# -- the kept mask only, upsampled equally ---------------------------------------------------


@pytest.mark.sam2
def test_cv2_upsampling_matches_sam2_postprocess(sam2_model: Any) -> None:
    import torch

    rng = np.random.default_rng(3)
    coarse = torch.from_numpy(rng.normal(0, 6, (1, 1, 16, 16)).astype(np.float32))
    logits = torch.nn.functional.interpolate(coarse, (256, 256), mode="bicubic", align_corners=False)
    chosen = sam2_model.upsample_with
    try:
        for hw in ((768, 1024), (333, 517), (100, 150), (3000, 4000)):
            sam2_model.upsample_with = "torch"
            reference = sam2_model.upsample(logits, hw)
            sam2_model.upsample_with = "cv2"
            ours = sam2_model.upsample(logits, hw)
            assert ours.shape == reference.shape == hw and ours.dtype == bool
            full = sam2_model.predictor._transforms.postprocess_masks(logits, hw)[0, 0].numpy()
            differ = ours != reference
            # Only pixels within float rounding of the threshold may differ.
            assert np.all(np.abs(full[differ]) < 1e-3)
            assert differ.sum() <= 1e-5 * differ.size
            assert 0.05 < reference.mean() < 0.95  # the case is not trivial
    finally:
        sam2_model.upsample_with = chosen


@pytest.mark.sam2
def test_decode_upsamples_only_the_kept_mask_and_both_paths_agree(sam2_model: Any) -> None:
    image = sample_array(320, 240)
    features = sam2_model.encode(image)
    seen: list[tuple[int, ...]] = []
    original = sam2_model.upsample

    def recording(low_res: Any, hw: tuple[int, int]) -> np.ndarray:
        seen.append(tuple(low_res.shape))
        return original(low_res, hw)

    chosen = sam2_model.upsample_with
    try:
        sam2_model.upsample = recording
        prompts = [
            Prompt.build([(160.0, 120.0)], [], None),
            Prompt.build([(100.0, 90.0), (200.0, 150.0)], [], None),
        ]
        for prompt in prompts:
            sam2_model.upsample_with = "torch"
            reference = sam2_model.decode(features, prompt)
            sam2_model.upsample_with = "cv2"
            ours = sam2_model.decode(features, prompt)
            assert ours.mask.shape == (240, 320)
            assert ours.score == reference.score
            assert np.count_nonzero(ours.mask != reference.mask) <= 2
    finally:
        del sam2_model.upsample
        sam2_model.upsample_with = chosen
    # A single click asks for three masks; only the best one is upsampled, every time.
    assert seen and all(shape == (1, 1, 256, 256) for shape in seen)


# -- each image fetched and decoded once while cached ------------------------------------------


def test_each_image_is_fetched_and_decoded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decodes: list[int] = []
    original = images_module.decode_rgb

    def counting(data: bytes, size: tuple[int, int]) -> np.ndarray:
        decodes.append(1)
        return original(data, size)

    monkeypatch.setattr(images_module, "decode_rgb", counting)
    model = FakeModel(radius=15)
    with fake_label_studio() as ls:
        ls.files["/data/upload/1/a.jpg"] = encode_image(sample_array(), "JPEG", quality=95)
        app = make_app(tmp_path, model, label_studio_url=ls.url, label_studio_api_key=ls.legacy)
        for x in (40.0, 50.0, 60.0, 45.0):
            reply = call(app, "POST", "/predict", predict_body("/data/upload/1/a.jpg", [keypoint(x, 50.0)]))
            assert reply.status == 200
            value = reply.body["results"][0]["result"][0]["value"]
            mask = rle_mask(value["rle"], 640, 480)
            assert mask[240, int(x * 6.4)] == 255  # the mask covers the click
        gets = [path for method, path, _ in ls.requests if method == "GET"]
    assert gets == ["/data/upload/1/a.jpg"]
    assert len(decodes) == 1
    assert model.encode_calls == 1 and model.decode_calls == 4
