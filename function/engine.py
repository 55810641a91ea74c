"""SAM2 behind one small interface: encode an image once, decode many prompts on it.

`Engine.segment(source, prompt)` is the only entry point the protocol adapters use. It looks
the image's features up in a `FeatureCache` keyed by the image content (plus any crop or
resize applied to it), runs the image encoder only on a miss, and runs the prompt decoder.
The engine knows nothing about Label Studio or CVAT.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import ServiceUnavailable
from .prompts import Prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFeatures:
    """Encoder output for one image.

    For SAM2: `image_embed` [1, 256, 64, 64] and `high_res_feats` ([1, 32, 256, 256],
    [1, 64, 128, 128]), 16 MiB in float32 whatever the input size. `image_hw` is the
    (height, width) of the encoded image, needed to map prompts and masks.
    """

    image_embed: Any
    high_res_feats: tuple[Any, ...]
    image_hw: tuple[int, int]
    nbytes: int


@dataclass(frozen=True)
class Segmentation:
    """The kept mask, (H, W) bool at the encoded image's size, and its predicted IoU."""

    mask: np.ndarray
    score: float


class SegmentationModel(Protocol):
    """What the engine needs from a model. `Sam2Model` is the real one."""

    device: str

    def encode(self, image: np.ndarray) -> ImageFeatures:
        """`image`: (H, W, 3) uint8 RGB."""

    def decode(self, features: ImageFeatures, prompt: Prompt) -> Segmentation:
        """`prompt` in pixel coordinates of the encoded image."""

    def free_memory(self) -> None:
        """Release allocator caches after an out-of-memory error."""


@dataclass(frozen=True)
class EncoderInput:
    """An image to encode, identified by `key` (content hash + view); pixels loaded lazily."""

    key: str
    pixels: Callable[[], np.ndarray]


class FeatureCache:
    """LRU of `ImageFeatures`, bounded in bytes, with one computation per key in flight.

    Concurrent requests for a key that is being encoded wait for that pass instead of
    starting another one.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
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
            features = compute()
            self._put(key, features)
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
    last_encode_cached: bool = field(default=False)


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

    def _with_oom_retry(self, step: Callable[[], Any], keep: int = 0) -> Any:
        try:
            return step()
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            log.warning("GPU out of memory: trimming the feature cache and retrying once")
            self.cache.trim(keep=keep)
            self.model.free_memory()
            try:
                return step()
            except Exception as again:
                if _is_out_of_memory(again):
                    self.model.free_memory()
                    raise ServiceUnavailable("GPU out of memory; try again shortly") from None
                raise


def _is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a runtime dependency
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={device} but torch sees no CUDA device")
    return device


class Sam2Model:
    """The real SAM2 image model. One instance per process, safe for concurrent calls.

    No predictor state is shared between calls: `encode` runs `set_image` on a shallow copy
    of one `SAM2ImagePredictor` (sharing its weights and transforms), and `decode` calls the
    prompt encoder and mask decoder with explicit tensors.
    """

    def __init__(self, sam2: Any, device: str) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.device = device
        self.predictor = SAM2ImagePredictor(sam2)
        self.sam2 = sam2
        # "cv2" (CPU: faster, see `upsample`) or "torch" (SAM2's own postprocess_masks).
        self.upsample_with = "torch" if device.startswith("cuda") else "cv2"
        self._dense_pe: Any = None

    @classmethod
    def load(cls, config: str, checkpoint: Path, device: str = "auto") -> Sam2Model:
        """Build SAM2 from a Hydra `config` name and a checkpoint file (`{"model": state}`)."""
        import torch
        from sam2.build_sam import build_sam2

        device = resolve_device(device)
        if device.startswith("cuda"):
            # TF32 matmuls: free speed on Ampere+ with no visible effect on masks.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        sam2 = build_sam2(config, str(checkpoint), device=device, mode="eval")
        return cls(sam2, device)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        import torch

        # Autocast is thread-local, so it is entered per call, never once at import.
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.startswith("cuda")
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            yield

    def encode(self, image: np.ndarray) -> ImageFeatures:
        predictor = copy.copy(self.predictor)
        with self._inference():
            predictor.set_image(image)
        feats = predictor._features
        embed, high_res = feats["image_embed"], tuple(feats["high_res_feats"])
        nbytes = sum(t.numel() * t.element_size() for t in (embed, *high_res))
        h, w = image.shape[:2]
        return ImageFeatures(embed, high_res, (int(h), int(w)), int(nbytes))

    def decode(self, features: ImageFeatures, prompt: Prompt) -> Segmentation:
        import torch

        transforms = self.predictor._transforms
        model = self.sam2
        hw = features.image_hw
        with self._inference():
            coords = torch.as_tensor(prompt.points, dtype=torch.float32, device=self.device)
            coords = transforms.transform_coords(coords[None], normalize=True, orig_hw=hw)
            labels = torch.as_tensor(prompt.labels, dtype=torch.int32, device=self.device)[None]
            if prompt.box is not None:
                box = torch.tensor([prompt.box.as_tuple()], dtype=torch.float32, device=self.device)
                box_coords = transforms.transform_boxes(box, normalize=True, orig_hw=hw)  # 1x2x2
                box_labels = torch.tensor([[2, 3]], dtype=torch.int32, device=self.device)
                coords = torch.cat([box_coords, coords], dim=1)
                labels = torch.cat([box_labels, labels], dim=1)
            sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            # One click is ambiguous (part or whole?): ask for three masks, keep the best.
            multimask = prompt.is_single_point
            low_res, iou, _, _ = model.sam_mask_decoder(
                image_embeddings=features.image_embed,
                image_pe=self._image_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
                repeat_image=False,
                high_res_features=list(features.high_res_feats),
            )
            best = int(iou[0].argmax())
            # Only the kept low-res mask (1x1x256x256) is upsampled to full resolution.
            mask = self.upsample(low_res[:, best : best + 1], hw)
            score = float(iou[0, best].float().item())
        return Segmentation(mask, score)

    def _image_pe(self) -> Any:
        """The decoder's dense positional encoding: a function of the weights alone, so it is
        computed once instead of on every click (a few percent of a decode on CPU)."""
        if self._dense_pe is None:
            self._dense_pe = self.sam2.sam_prompt_encoder.get_dense_pe()
        return self._dense_pe

    def upsample(self, low_res: Any, hw: tuple[int, int]) -> np.ndarray:
        """(1, 1, 256, 256) mask logits -> (H, W) bool, bilinear with half-pixel centres.

        On CPU OpenCV's INTER_LINEAR computes the same interpolation as SAM2's
        `F.interpolate(bilinear, align_corners=False)` several times faster (masks differ
        only where a logit is within float rounding of the threshold). On CUDA the upsample
        stays on the GPU and only the bool mask is copied back.
        """
        if self.upsample_with == "torch":
            kept = self.predictor._transforms.postprocess_masks(low_res, hw)
            return (kept[0, 0] > self.predictor.mask_threshold).cpu().numpy()
        import cv2

        logits = low_res[0, 0].float().cpu().numpy()
        full = cv2.resize(logits, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
        return full > self.predictor.mask_threshold

    def compile_encoder(self) -> None:
        """`torch.compile` the image encoder (its input is always 1024x1024: one graph).

        Opt-in: compiling takes about a minute and on CPU gains nothing measurable, so it
        only pays on a GPU serving many images; the first encode afterwards compiles.
        """
        import torch

        self.sam2.image_encoder = torch.compile(self.sam2.image_encoder, dynamic=False)

    def free_memory(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def warm_up(self) -> None:
        """One small pass so the first user does not pay for lazy initialisation."""
        image = np.full((64, 64, 3), 127, np.uint8)
        features = self.encode(image)
        self.decode(features, Prompt.build([(32.0, 32.0)], [], None))
