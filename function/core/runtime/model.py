"""SAM2 served from its exported graphs by a CPU runtime, behind the engine's model interface.

Same inputs, same outputs, same numbers as `Sam2Model` on CPU: the preprocessing, the prompt
transform, SAM2's mask choice and the upsample are `transforms`' numpy versions of the torch
path (tested side by side in tests/test_runtime_parity.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..feature_store import CorruptEntry
from ..model import ImageFeatures, Segmentation
from ..prompts import Prompt
from .artifacts import Graphs
from .sessions import GraphRunner
from .transforms import choose_mask, preprocess, prompt_inputs, upsample


class RuntimeSam2Model:
    """`encode` runs the encoder graph once per image; `decode` the decoder graph per prompt."""

    device = "cpu"

    def __init__(
        self,
        runtime: str,
        encoder: GraphRunner,
        decoder: GraphRunner,
        graphs: Graphs,
        threads: int,
        source: tuple[str, Path] | None = None,
    ) -> None:
        self.runtime = runtime
        self.encoder = encoder
        self.decoder = decoder
        self.graphs = graphs
        self.config = graphs.config
        self.image_size = int(self.config["image_size"])
        self.mask_threshold = float(self.config["mask_threshold"])
        self.threads = threads
        self.source = source  # (model config, checkpoint): what `torch_twin` loads
        self._twin: Any = None
        # What runs, as the runtime reports it (OpenVINO may keep f32 where bf16 was asked for).
        self.precision = (
            encoder.precision
            if encoder.precision == decoder.precision
            else (f"encoder {encoder.precision}, decoder {decoder.precision}")
        )

    def encode(self, image: np.ndarray) -> ImageFeatures:
        embed, hr0, hr1 = self.encoder.run({"image": preprocess(image, self.image_size)})
        h, w = image.shape[:2]
        nbytes = embed.nbytes + hr0.nbytes + hr1.nbytes
        return ImageFeatures(embed, (hr0, hr1), (int(h), int(w)), int(nbytes))

    def decode_logits(self, features: ImageFeatures, prompt: Prompt) -> tuple[np.ndarray, float]:
        """The kept low-res (256x256) mask logits and its predicted IoU."""
        box = prompt.box.as_tuple() if prompt.box is not None else None
        coords, labels = prompt_inputs(prompt.points, prompt.labels, box, features.image_hw, self.image_size)
        hr0, hr1 = features.high_res_feats
        masks, iou = self.decoder.run(
            {
                "image_embed": features.image_embed,
                "high_res_feats_0": hr0,
                "high_res_feats_1": hr1,
                "point_coords": coords,
                "point_labels": labels,
            }
        )
        # One click is ambiguous (part or whole?): choose among three masks, as Sam2Model does.
        return choose_mask(masks, iou, prompt.is_single_point, self.config)

    def decode(self, features: ImageFeatures, prompt: Prompt) -> Segmentation:
        logits, score = self.decode_logits(features, prompt)
        return Segmentation(upsample(logits, features.image_hw, self.mask_threshold), score)

    def torch_twin(self) -> Any:
        """The same checkpoint as a torch `Sam2Model` on CPU, loaded once: video tracking runs
        SAM2's memory modules, which are not exported; they take this model's features."""
        if self._twin is None:
            from ..sam2_model import Sam2Model

            if self.source is None:
                raise RuntimeError("no checkpoint to load the torch model from")
            self._twin = Sam2Model.load(self.source[0], self.source[1], "cpu")
            self._twin.use_threads(self.threads)
        return self._twin

    def export_features(self, features: ImageFeatures) -> list[np.ndarray]:
        """float16 arrays for the shared feature tier, the format `Sam2Model` writes: features
        are within 1e-5 of torch's, so replicas of either kind share one tier."""
        return [np.asarray(a, np.float16) for a in (features.image_embed, *features.high_res_feats)]

    def import_features(self, arrays: list[np.ndarray], image_hw: tuple[int, int]) -> ImageFeatures:
        if [a.shape[:2] for a in arrays] != [(1, 256), (1, 32), (1, 64)]:
            raise CorruptEntry("not SAM2 image features")
        embed, hr0, hr1 = (np.ascontiguousarray(a, np.float32) for a in arrays)
        return ImageFeatures(embed, (hr0, hr1), image_hw, int(embed.nbytes + hr0.nbytes + hr1.nbytes))

    def free_memory(self) -> None:
        """Nothing to release: CPU runtimes hold no allocator cache worth trimming."""

    def warm_up(self) -> None:
        """One small pass so the first user does not pay for lazy initialisation."""
        features = self.encode(np.full((64, 64, 3), 127, np.uint8))
        self.decode(features, Prompt.build([(32.0, 32.0)], [], None))
