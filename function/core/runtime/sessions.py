"""One exported graph loaded by a CPU inference runtime, behind `run(feeds) -> outputs`.

Both runners are safe to call from several threads at once (the engine decodes while the
prewarmer encodes): onnxruntime sessions are, and OpenVINO gets one infer request per thread.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .artifacts import package_version

log = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "openvino")


class GraphRunner(Protocol):
    precision: str

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def runtime_version(runtime: str) -> str:
    return package_version(runtime)


def installed_runtimes() -> list[str]:
    return [r for r in RUNTIMES if runtime_version(r) != "none"]


class OnnxRuntimeRunner:
    """onnxruntime's CPU execution provider, `threads` intra-op threads, f32."""

    precision = "f32"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initializers are noise
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(self.output_names, feeds))


class OpenVinoRunner:
    """OpenVINO on CPU, compiled once (cached under `cache_dir`), `threads` inference threads.

    `precision="bf16"` is a hint: CPUs without native bf16 (AVX512_BF16 / AMX) keep f32.
    `self.precision` is what the compiled model reports it really runs.
    """

    def __init__(self, path: Path, threads: int, cache_dir: Path, precision: str = "f32") -> None:
        import openvino as ov

        core = ov.Core()
        core.set_property({"CACHE_DIR": str(cache_dir)})
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        }
        started = time.perf_counter()
        self.compiled = core.compile_model(str(path), "CPU", config)
        self.compile_seconds = time.perf_counter() - started
        self.precision = _precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self._local = threading.local()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer(feeds)
        # Copies: the request's output buffers are reused by its next call.
        return [np.array(result[name], copy=True) for name in self.output_names]


def _precision_name(value: Any) -> str:
    text = str(getattr(value, "get_type_name", lambda: value)()).lower()
    if "bf16" in text:
        return "bf16"
    if "f16" in text:
        return "f16"
    return "f32"


def load_runner(runtime: str, path: Path, threads: int, cache_dir: Path, precision: str) -> GraphRunner:
    if runtime == "onnxruntime":
        if precision != "f32":
            raise ValueError("onnxruntime serves f32 only; CPU_PRECISION=bf16 needs RUNTIME=openvino")
        return OnnxRuntimeRunner(path, threads)
    if runtime == "openvino":
        return OpenVinoRunner(path, threads, cache_dir, precision)
    raise ValueError(f"unknown runtime {runtime!r}")
