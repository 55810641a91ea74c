"""The two SAM2 graphs exported to ONNX: the image encoder and the prompt decoder.

The cut follows `SAM2ImagePredictor`: the encoder graph is `set_image` after preprocessing
(backbone, `_prepare_backbone_features`, `no_mem_embed`, reshape to [B, C, H, W]); the
decoder graph is the prompt encoder + mask decoder for a dynamic number of points (a box is
two extra points labelled 2 and 3, exactly how SAM2 embeds boxes). The decoder returns all
four mask tokens' logits and IoU predictions; SAM2's choice between them (tokens 1-3 for an
ambiguous single click, token 0 or its stability fallback otherwise) is made in numpy by
`runtime.postprocess`, so one graph serves every prompt.

With `sam2_model`, the only module that imports torch and sam2 (import-linter allows both):
only the export path loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ENCODER_INPUTS = ("image",)
ENCODER_OUTPUTS = ("image_embed", "high_res_feats_0", "high_res_feats_1")
DECODER_INPUTS = ("image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels")
DECODER_OUTPUTS = ("low_res_masks", "iou_predictions")
OPSET = 17
# Bump when the graphs' inputs, outputs or cut change: older artifacts become stale.
GRAPH_VERSION = 1


def _modules(sam2: Any) -> tuple[Any, Any]:
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = sam2
            size = sam2.image_size
            # Feature map sizes per level, as SAM2ImagePredictor._bb_feat_sizes for 1024.
            self.sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            backbone_out = self.model.forward_image(image)
            _, vision_feats, _, _ = self.model._prepare_backbone_features(backbone_out)
            if self.model.directly_add_no_mem_embed:
                vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
            feats = [
                feat.permute(1, 2, 0).reshape(1, -1, h, w)
                for feat, (h, w) in zip(vision_feats, self.sizes, strict=True)
            ]
            return feats[2], feats[0], feats[1]

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.prompt_encoder = sam2.sam_prompt_encoder
            self.mask_decoder = sam2.sam_mask_decoder
            # A function of the weights alone: folded into the graph as a constant.
            self.register_buffer("image_pe", sam2.sam_prompt_encoder.get_dense_pe().detach().clone())

        def forward(
            self,
            image_embed: torch.Tensor,
            high_res_feats_0: torch.Tensor,
            high_res_feats_1: torch.Tensor,
            point_coords: torch.Tensor,
            point_labels: torch.Tensor,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            sparse, dense = self.prompt_encoder(points=(point_coords, point_labels), boxes=None, masks=None)
            masks, iou, _, _ = self.mask_decoder.predict_masks(
                image_embeddings=image_embed,
                image_pe=self.image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                repeat_image=False,
                high_res_features=[high_res_feats_0, high_res_feats_1],
            )
            return masks, iou

    return Encoder().eval(), Decoder().eval()


def decoder_config(sam2: Any) -> dict[str, Any]:
    """What numpy needs to choose among the decoder's four outputs like SAM2 does."""
    dec = sam2.sam_mask_decoder
    return {
        "image_size": int(sam2.image_size),
        "dynamic_multimask_via_stability": bool(dec.dynamic_multimask_via_stability),
        "stability_delta": float(dec.dynamic_multimask_stability_delta),
        "stability_thresh": float(dec.dynamic_multimask_stability_thresh),
        "mask_threshold": 0.0,
    }


def export_checkpoint(model_config: str, checkpoint: Path, encoder: Path, decoder: Path) -> dict[str, Any]:
    """Build SAM2 from the checkpoint on CPU, export both graphs, return the decoder config."""
    from sam2.build_sam import build_sam2

    model = build_sam2(model_config, str(checkpoint), device="cpu", mode="eval")
    export_graphs(model, encoder, decoder)
    return decoder_config(model)


def export_graphs(sam2: Any, encoder_path: Path, decoder_path: Path) -> None:
    """Export both graphs (TorchScript exporter, opset 17) from a loaded SAM2 on any device."""
    import warnings

    import torch

    encoder, decoder = _modules(sam2)
    device = next(sam2.parameters()).device
    size = int(sam2.image_size)
    image = torch.zeros(1, 3, size, size, device=device)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(
            encoder,
            (image,),
            str(encoder_path),
            input_names=list(ENCODER_INPUTS),
            output_names=list(ENCODER_OUTPUTS),
            opset_version=OPSET,
            dynamo=False,
        )
        embed, hr0, hr1 = encoder(image)
        coords = torch.tensor([[[10.0, 10.0], [500.0, 400.0], [20.0, 30.0]]], device=device)
        labels = torch.tensor([[1, 2, 3]], dtype=torch.int32, device=device)
        torch.onnx.export(
            decoder,
            (embed, hr0, hr1, coords, labels),
            str(decoder_path),
            input_names=list(DECODER_INPUTS),
            output_names=list(DECODER_OUTPUTS),
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
            opset_version=OPSET,
            dynamo=False,
        )
