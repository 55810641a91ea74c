"""SAM2 on CPU inference runtimes: the encoder and decoder exported once to ONNX, served by
onnxruntime or OpenVINO behind the same model interface as the torch `Sam2Model`.

- `graphs`: the torch modules cut out of SAM2 and their ONNX export (needs torch);
- `artifacts`: where the graphs live, keyed and verified, rebuilt when stale or corrupt;
- `sessions`: a graph loaded by onnxruntime or OpenVINO;
- `transforms`: SAM2's pre/postprocessing in numpy;
- `model`: `RuntimeSam2Model`, the `SegmentationModel` over two runners;
- `loader`: `RUNTIME=auto|torch|onnxruntime|openvino` -> the model that serves;
- `threads`: intra-op threads from the container's CPU quota.
"""

from typing import Any

from .loader import CHOICES, PRECISIONS, RuntimeOptions, load_model, resolve_runtime


def describe(model: Any) -> dict[str, str]:
    """What serves, for /health and /metrics: {"runtime": ..., "precision": ...}."""
    return {
        "runtime": str(getattr(model, "runtime", "torch")),
        "precision": str(getattr(model, "precision", "f32")),
    }


__all__ = ["CHOICES", "PRECISIONS", "RuntimeOptions", "describe", "load_model", "resolve_runtime"]
