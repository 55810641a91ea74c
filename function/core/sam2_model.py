"""The real SAM2 image model (torch). The only module of the package that imports torch."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OutOfMemory
from .feature_store import CorruptEntry
from .model import ImageFeatures, Segmentation
from .prompts import Prompt


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's CUDA OOM, or the RuntimeError some kernels raise instead."""
    import torch

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
        self.runtime = "torch"
        # What the model computes in: bf16 autocast on CUDA, f32 on CPU (see `_inference`).
        self.precision = "bf16-autocast" if device.startswith("cuda") else "f32"
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
        try:
            with torch.inference_mode(), autocast:
                yield
        except Exception as exc:
            if is_out_of_memory(exc):  # the engine trims its cache and retries once
                raise OutOfMemory(f"{self.device} out of memory") from exc
            raise

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

    def export_features(self, features: ImageFeatures) -> list[np.ndarray]:
        """float16 arrays for the shared tier (8 MiB per image; masks agree >= 99.99 %)."""
        import torch

        tensors = (features.image_embed, *features.high_res_feats)
        return [t.detach().to("cpu", torch.float16).numpy() for t in tensors]

    def import_features(self, arrays: list[np.ndarray], image_hw: tuple[int, int]) -> ImageFeatures:
        import torch

        if [a.shape[:2] for a in arrays] != [(1, 256), (1, 32), (1, 64)]:
            raise CorruptEntry("not SAM2 image features")
        # float16 travels; the decoder gets float32 like after a local encode.
        tensors = [torch.from_numpy(a.astype(np.float32)).to(self.device) for a in arrays]
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        return ImageFeatures(tensors[0], tuple(tensors[1:]), image_hw, int(nbytes))

    def use_threads(self, threads: int) -> None:
        """Intra-op threads for CPU inference (torch's default is every visible core)."""
        import torch

        torch.set_num_threads(threads)

    def free_memory(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def warm_up(self) -> None:
        """One small pass so the first user does not pay for lazy initialisation."""
        image = np.full((64, 64, 3), 127, np.uint8)
        features = self.encode(image)
        self.decode(features, Prompt.build([(32.0, 32.0)], [], None))
