"""Choose and load the model that serves: torch, or SAM2's exported graphs in a CPU runtime.

`RUNTIME=auto` serves with torch on CUDA and with onnxruntime on CPU (faster than torch on
every CPU measured, and no compile wait); when the export or the runtime fails it falls back
to torch with one warning. An explicitly named runtime that fails stops the start-up instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import Graphs, ensure_graphs
from .sessions import RUNTIMES, load_runner, runtime_version
from .threads import intra_op_threads

log = logging.getLogger(__name__)

CHOICES = ("auto", "torch", *RUNTIMES)
PRECISIONS = ("f32", "bf16")


@dataclass(frozen=True)
class RuntimeOptions:
    runtime: str = "auto"
    precision: str = "f32"
    threads: int | None = None  # None: from the cgroup CPU quota
    cache_dir: Path | None = None  # None: next to the checkpoint


def resolve_runtime(runtime: str, device: str) -> str:
    if runtime == "auto":
        return "torch" if device.startswith("cuda") else "onnxruntime"
    return runtime


def load_graphs(model_config: str, checkpoint: Path, cache_dir: Path | None, rebuild: bool = False) -> Graphs:
    """The checkpoint's verified graphs; exported (SAM2 built on CPU, then dropped) when needed."""
    from .graphs import export_checkpoint

    def export(encoder: Path, decoder: Path) -> dict[str, Any]:
        return export_checkpoint(model_config, checkpoint, encoder, decoder)

    return ensure_graphs(checkpoint, model_config, export, cache_dir, rebuild)


def load_runtime_model(runtime: str, model_config: str, checkpoint: Path, options: RuntimeOptions) -> Any:
    """A `RuntimeSam2Model` for `runtime`; a graph its runtime cannot load is rebuilt once."""
    from .model import RuntimeSam2Model

    if runtime == "onnxruntime" and options.precision != "f32":
        raise ValueError("onnxruntime serves f32 only; CPU_PRECISION=bf16 needs RUNTIME=openvino")
    threads = intra_op_threads(options.threads)
    started = time.perf_counter()
    graphs = load_graphs(model_config, checkpoint, options.cache_dir)
    for attempt in (1, 2):
        cache = graphs.runtime_dir(runtime, runtime_version(runtime), options.precision)
        try:
            encoder = load_runner(runtime, graphs.encoder, threads, cache, options.precision)
            decoder = load_runner(runtime, graphs.decoder, threads, cache, options.precision)
            break
        except Exception as exc:
            if attempt == 2:
                raise
            log.warning(
                "%s could not load the graphs in %s (%s): rebuilding them", runtime, graphs.folder, exc
            )
            graphs = load_graphs(model_config, checkpoint, options.cache_dir, rebuild=True)
    model = RuntimeSam2Model(runtime, encoder, decoder, graphs, threads, (model_config, checkpoint))
    log.info(
        "serving SAM2 with %s %s (%s, %d threads), ready in %.1f s",
        runtime,
        runtime_version(runtime),
        model.precision,
        threads,
        time.perf_counter() - started,
    )
    return model


def load_model(model_config: str, checkpoint: Path, device: str, options: RuntimeOptions) -> Any:
    """The `SegmentationModel` that serves, per `options.runtime` (see the module docstring)."""
    from ..sam2_model import Sam2Model

    runtime = resolve_runtime(options.runtime, device)
    if runtime != "torch":
        try:
            return load_runtime_model(runtime, model_config, checkpoint, options)
        except Exception as exc:
            if options.runtime != "auto":
                raise
            log.warning(
                "RUNTIME=auto: %s failed (%s: %s); serving with torch instead",
                runtime,
                type(exc).__name__,
                exc,
            )
    model = Sam2Model.load(model_config, checkpoint, device)
    if model.device == "cpu":
        model.use_threads(intra_op_threads(options.threads))
    return model
