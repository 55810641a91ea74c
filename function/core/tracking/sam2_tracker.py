"""SAM2's video memory driven one frame at a time, on the weights the image model already holds.

`Sam2Tracker` wraps `Sam2Model` (the image model): its `nn.Module` is shallow-copied, so every
submodule and parameter is the *same object* (no second copy of the weights); only the two
flags SAM2's video predictor sets differently are changed on the copy. Frame features come from
the image engine's `ImageFeatures` (the feature cache), turned back into the flattened form
`SAM2Base.track_step` reads. With the other files of `core`, the only place that imports torch.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..model import ImageFeatures
from ..sam2_model import Sam2Model
from ..wire import CorruptEntry
from .model import FrameMemory, MemoryBank, TrackedMask, TrackPrompt

# SAM2 compares frame indices with the video length; a session has no known end.
_UNBOUNDED_FRAMES = 1 << 30


class Sam2Tracker:
    def __init__(self, image_model: Sam2Model) -> None:
        video = copy.copy(image_model.sam2)  # shares _modules/_parameters: the same weights
        # What build_sam2_video_predictor sets beyond the image model's options.
        video.binarize_mask_from_pts_for_mem_enc = True
        self.video = video
        self.image_model = image_model
        self.device = image_model.device
        self.image_size = int(video.image_size)
        self._lock = threading.Lock()
        self._top_pos: Any = None
        self._maskmem_pos_enc: list[Any] | None = None

    # -- features -------------------------------------------------------------------------
    def _vision(self, features: ImageFeatures) -> tuple[list[Any], list[Any], list[tuple[int, int]]]:
        """ImageFeatures -> (vision feats, pos embeds, sizes), flattened (HW, 1, C) per level.

        The image path stores the top level with `no_mem_embed` added (SAM2's image predictor
        does so); tracking needs it without, since memory attention adds its own memory."""
        import torch

        # Features from a CPU runtime (core/runtime) are numpy arrays: viewed as tensors, no copy.
        top = torch.as_tensor(features.image_embed, device=self.device)
        levels = [*(torch.as_tensor(x, device=self.device) for x in features.high_res_feats), top]
        sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in levels]
        flat = [x.flatten(2).permute(2, 0, 1) for x in levels]
        if self.video.directly_add_no_mem_embed:
            flat[-1] = flat[-1].float() - self.video.no_mem_embed
        pos = [None] * (len(levels) - 1) + [self._top_position(top)]
        return flat, pos, sizes

    def _top_position(self, top: Any) -> Any:
        """The sine position encoding of the top level: a function of its shape only."""
        with self._lock:
            if self._top_pos is None or self._top_pos.shape[0] != top.shape[-2] * top.shape[-1]:
                pe = self.video.image_encoder.neck.position_encoding(top.float())
                self._top_pos = pe.flatten(2).permute(2, 0, 1)
            return self._top_pos

    # -- TrackerModel ---------------------------------------------------------------------
    def start(
        self, features: ImageFeatures, prompt: TrackPrompt, frame: int
    ) -> tuple[FrameMemory, TrackedMask]:
        import torch
        import torch.nn.functional as F

        h, w = features.image_hw
        points = masks = None
        with self.image_model._inference():
            if prompt.box is not None:
                b = prompt.box
                scale = torch.tensor([self.image_size / w, self.image_size / h])
                coords = torch.tensor([[b.x0, b.y0], [b.x1, b.y1]], dtype=torch.float32) * scale
                points = {
                    "point_coords": coords[None].to(self.device),
                    "point_labels": torch.tensor([[2, 3]], dtype=torch.int32, device=self.device),
                }
            else:
                assert prompt.mask is not None
                m = torch.as_tensor(prompt.mask, dtype=torch.float32, device=self.device)[None, None]
                size = (self.image_size, self.image_size)
                m = F.interpolate(m, size=size, mode="bilinear", align_corners=False, antialias=True)
                masks = (m >= 0.5).float()
            out = self._step(features, frame, True, points, masks, {}, {}, False)
        return self._outputs(out, features.image_hw)

    def track(self, features: ImageFeatures, bank: MemoryBank, frame: int) -> tuple[FrameMemory, TrackedMask]:
        cond = {bank.prompt_frame: self._entry(bank.prompt)}
        # Pointer-only frames are offered only where SAM2 reads pointers, never mask memory.
        near = range(frame - 6, frame + 7)
        recent = {f: self._entry(m) for f, m in bank.recent if m.mask_memory or f not in near}
        with self.image_model._inference():
            out = self._step(features, frame, False, None, None, cond, recent, bank.reverse)
        return self._outputs(out, features.image_hw)

    def pointer_only(self, memory: FrameMemory) -> FrameMemory:
        ptr = memory.data["obj_ptr"]
        return FrameMemory({"obj_ptr": ptr}, ptr.numel() * ptr.element_size(), mask_memory=False)

    # -- MemoryCodec (shared.py): a memory as plain arrays, bfloat16 as its raw 16 bits ------
    def export_memory(self, memory: FrameMemory) -> dict[str, np.ndarray]:
        import torch

        out = {"obj_ptr": memory.data["obj_ptr"].float().cpu().numpy()}
        maskmem = memory.data.get("maskmem_features")
        if maskmem is not None:
            out["maskmem_bf16"] = maskmem.to(torch.bfloat16).cpu().view(torch.int16).numpy()
        return out

    def import_memory(self, arrays: Mapping[str, np.ndarray], mask_memory: bool) -> FrameMemory:
        import torch

        side = self.image_size // 16  # SAM2's memory is at the top level's stride
        ptr_shape, maskmem_shape = (1, int(self.video.hidden_dim)), (1, int(self.video.mem_dim), side, side)
        expected: dict[str, tuple[tuple[int, ...], Any]] = {"obj_ptr": (ptr_shape, np.float32)}
        if mask_memory:
            expected["maskmem_bf16"] = (maskmem_shape, np.int16)
        if set(arrays) != set(expected) or any(
            arrays[k].shape != shape or arrays[k].dtype != dtype for k, (shape, dtype) in expected.items()
        ):
            raise CorruptEntry("memory arrays of another model")
        ptr = torch.from_numpy(arrays["obj_ptr"].copy()).to(self.device)
        data = {"obj_ptr": ptr}
        nbytes = ptr.numel() * ptr.element_size()
        if mask_memory:
            bits = torch.from_numpy(arrays["maskmem_bf16"].copy())
            maskmem = bits.view(torch.bfloat16).to(self.device)
            data["maskmem_features"] = maskmem
            nbytes += maskmem.numel() * maskmem.element_size()
            if self._maskmem_pos_enc is None:  # a replica continuing a track it did not start
                with self.image_model._inference():
                    x = maskmem.float()
                    pos = self.video.memory_encoder.position_encoding(x).to(x.dtype)
                with self._lock:
                    self._maskmem_pos_enc = [pos[0:1].clone()]
        return FrameMemory(data, int(nbytes), mask_memory)

    # -- internals ------------------------------------------------------------------------
    def _entry(self, memory: FrameMemory) -> dict[str, Any]:
        return {
            "maskmem_features": memory.data.get("maskmem_features"),
            "maskmem_pos_enc": self._maskmem_pos_enc,
            "obj_ptr": memory.data["obj_ptr"],
        }

    def _step(
        self,
        features: ImageFeatures,
        frame: int,
        is_prompt: bool,
        points: dict[str, Any] | None,
        masks: Any,
        cond: dict[int, Any],
        recent: dict[int, Any],
        reverse: bool,
    ) -> dict[str, Any]:
        feats, pos, sizes = self._vision(features)
        return self.video.track_step(
            frame_idx=frame,
            is_init_cond_frame=is_prompt,
            current_vision_feats=feats,
            current_vision_pos_embeds=pos,
            feat_sizes=sizes,
            point_inputs=points,
            mask_inputs=masks,
            output_dict={"cond_frame_outputs": cond, "non_cond_frame_outputs": recent},
            num_frames=_UNBOUNDED_FRAMES,
            track_in_reverse=reverse,
            run_mem_encoder=True,
        )

    def _outputs(self, out: dict[str, Any], hw: tuple[int, int]) -> tuple[FrameMemory, TrackedMask]:
        import torch

        if self._maskmem_pos_enc is None:
            with self._lock:  # a constant of the model: kept once, not per frame
                self._maskmem_pos_enc = [x[0:1].clone() for x in out["maskmem_pos_enc"]]
        maskmem = out["maskmem_features"].to(torch.bfloat16)  # as SAM2's video predictor stores it
        ptr = out["obj_ptr"].float()
        nbytes = maskmem.numel() * maskmem.element_size() + ptr.numel() * ptr.element_size()
        memory = FrameMemory({"maskmem_features": maskmem, "obj_ptr": ptr}, int(nbytes))
        score = float(out["object_score_logits"].float().reshape(-1)[0].item())
        mask = self.image_model.upsample(out["pred_masks"], hw)
        if score <= 0:
            mask = np.zeros(hw, bool)
        return memory, TrackedMask(mask, score, score > 0)
