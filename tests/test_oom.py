"""GPU out of memory: the feature cache is emptied, allocator caches freed, the step retried
once; a second failure is a 503 JSON, the worker lives and the next request is served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from function.core.errors import OutOfMemory
from function.core.model import ImageFeatures, Segmentation
from function.core.prompts import Prompt
from function.core.sam2_model import Sam2Model
from function.service.app import App

from .fakes import FakeModel
from .reliability_support import assert_json_error, assert_still_serves, predicted_mask
from .support import call, data_uri, encode_image, keypoint, make_app, predict_body


class OomModel(FakeModel):
    """Raises out-of-memory on the next `fail_encodes` encodes / `fail_decodes` decodes."""

    def __init__(self) -> None:
        super().__init__(radius=5)
        self.fail_encodes = 0
        self.fail_decodes = 0
        self.freed = 0

    def _oom(self) -> BaseException:
        # The model contract: a device OOM surfaces as the domain's OutOfMemory.
        return OutOfMemory("cuda out of memory")

    def encode(self, image: np.ndarray) -> ImageFeatures:
        if self.fail_encodes:
            self.fail_encodes -= 1
            raise self._oom()
        return super().encode(image)

    def decode(self, features: ImageFeatures, prompt: Prompt) -> Segmentation:
        if self.fail_decodes:
            self.fail_decodes -= 1
            raise self._oom()
        return super().decode(features, prompt)

    def free_memory(self) -> None:
        self.freed += 1


def image_png(fill: int) -> bytes:
    return encode_image(np.full((48, 64, 3), fill, np.uint8))


def image_uri(fill: int) -> str:
    return data_uri(image_png(fill))


def warm_cache(app: App, model: OomModel, count: int = 3) -> None:
    for i in range(count):
        assert predicted_mask(
            call(app, "POST", "/predict", predict_body(image_uri(40 + i), [keypoint(50, 50)]))
        )[24, 32]
    assert len(model.encoded_images) == count


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory"),
    ],
    ids=["OutOfMemoryError", "RuntimeError"],
)
def test_sam2_model_reports_torch_oom_as_the_domain_error(error: BaseException) -> None:
    model = object.__new__(Sam2Model)  # only the device matters to the inference context
    model.device = "cpu"
    with pytest.raises(OutOfMemory), model._inference():
        raise error
    with pytest.raises(RuntimeError, match="shape mismatch"), model._inference():
        raise RuntimeError("shape mismatch in conv")


@pytest.mark.parametrize("where", ["encode", "decode"])
def test_one_oom_is_retried_after_trimming_the_cache(tmp_path: Path, where: str) -> None:
    model = OomModel()
    app = make_app(tmp_path, model)
    warm_cache(app, model)
    assert len(app.engine.cache) == 3
    setattr(model, f"fail_{where}s", 1)
    mask = predicted_mask(call(app, "POST", "/predict", predict_body(image_uri(200), [keypoint(25, 25)])))
    assert mask[12, 16] and not mask[40, 60]
    assert model.freed == 1
    # Encode OOM: emptied, then the retried image cached. Decode OOM: all but the image
    # being decoded on (its features are held by the decode anyway) dropped.
    assert len(app.engine.cache) == 1
    encodes = len(model.encoded_images)
    assert predicted_mask(call(app, "POST", "/predict", predict_body(image_uri(200), [keypoint(75, 75)])))[
        36, 48
    ]
    assert len(model.encoded_images) == encodes  # the next click on it needs no encode
    assert app.engine.cache.nbytes == model.feature_bytes


@pytest.mark.parametrize("where", ["encode", "decode"])
def test_persistent_oom_is_503_json_and_the_worker_serves_on(tmp_path: Path, where: str) -> None:
    model = OomModel()
    app = make_app(tmp_path, model)
    warm_cache(app, model, 2)
    setattr(model, f"fail_{where}s", 2)
    error = assert_json_error(
        call(app, "POST", "/predict", predict_body(image_uri(99), [keypoint(50, 50)])), 503
    )
    assert "out of memory" in error
    assert model.freed == 2
    kept = 0 if where == "encode" else 1  # a decode OOM keeps the image it decodes on
    assert len(app.engine.cache) == kept and app.engine.cache.nbytes == kept * model.feature_bytes
    # The image that failed is not stuck "in flight": the next click on it is served.
    assert predicted_mask(call(app, "POST", "/predict", predict_body(image_uri(99), [keypoint(50, 50)])))[
        24, 32
    ]
    assert_still_serves(app)


def test_other_runtime_errors_are_not_mistaken_for_oom(tmp_path: Path) -> None:
    class Broken(FakeModel):
        def encode(self, image: np.ndarray) -> ImageFeatures:
            raise RuntimeError("shape mismatch in conv")

    app = make_app(tmp_path, Broken())
    error = assert_json_error(
        call(app, "POST", "/predict", predict_body(image_uri(5), [keypoint(50, 50)])), 500
    )
    assert "shape mismatch" not in error  # internals stay in the logs
    assert len(app.engine.cache) == 0
