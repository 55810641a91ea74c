"""Cold start and memory per model size.

Import torch and SAM2, build the app as Nuclio's `init_context` does (`build_app(settings)`:
checkpoint load plus the warm-up pass), then click once on a 1024x768 image so the feature
cache holds one image; report times and RSS. The chosen size is measured in the bench
process itself (nothing imported torch before) and its model serves the other cases; other
sizes each get a fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from function.service.compose import build_app

from .common import ModelFiles, Row

RUN_PY = Path(__file__).resolve().parent / "run.py"


def import_runtime() -> float:
    """Import what `init_context` imports (torch, SAM2, the app); seconds it took."""
    started = time.perf_counter()
    import sam2.build_sam  # noqa: F401
    import torch  # noqa: F401

    import function.service.app  # noqa: F401

    return time.perf_counter() - started


def cold_start(
    config: str, checkpoint: str, device: str, compile_encoder: bool, workdir: str, import_s: float
) -> tuple[dict[str, Any], Any]:
    """Build the app as `init_context` does, click once; (measurements, the app)."""
    import base64

    from function.core.sam2_model import Sam2Model
    from function.service.app import Request
    from function.settings import Settings

    from .clicks import click_body, synthetic_jpeg
    from .common import memory_mib

    # What RUNTIME=auto serves here (onnxruntime on CPU) starts from artifacts a CPU image bakes
    # at build time: export them first, timed apart (bench/runtime_case.py has the details).
    # RUNTIME from the environment (default auto), so `RUNTIME=torch python bench/run.py` measures torch.
    runtime = Settings.from_env(os.environ).runtime
    export_s = export_for_auto(config, Path(checkpoint), device, runtime)
    started = time.perf_counter()
    settings = Settings(
        model_config=config,
        model_checkpoint=Path(checkpoint),
        device=device,
        runtime=runtime,
        warmup=True,
        project_store_dir=Path(workdir) / "projects",
    )
    if compile_encoder:
        model = Sam2Model.load(config, Path(checkpoint), device)
        model.compile_encoder()
        model.warm_up()  # compiles here: counted in the cold start
        app = build_app(settings, model)
    else:
        app = build_app(settings)
    created = time.perf_counter()
    image = "data:image/jpeg;base64," + base64.b64encode(synthetic_jpeg(1024, 768, 99)).decode()
    reply = app.handle(Request("POST", "/predict", click_body(image, 1024, 768, 50.0, 50.0, 1)))
    assert reply.status == 200, reply.text[:300]
    cache = app.engine.cache
    rss, peak = memory_mib()
    result = {
        "import_s": import_s,
        "create_s": created - started,
        "export_s": export_s,
        "runtime": getattr(app.engine.model, "runtime", "torch"),
        "rss_mib": rss,
        "peak_mib": peak,
        "cache_bytes_per_image": cache.nbytes / max(len(cache), 1),
    }
    return result, app


def export_for_auto(config: str, checkpoint: Path, device: str, runtime: str = "auto") -> float:
    """Seconds to export the ONNX graphs when `runtime` serves from them on `device`, else 0."""
    from function.core.runtime import resolve_runtime
    from function.core.runtime.loader import load_graphs

    if resolve_runtime(runtime, device) == "torch":
        return 0.0
    started = time.perf_counter()
    load_graphs(config, checkpoint, None)
    return time.perf_counter() - started


def child_main(config: str, checkpoint: str, device: str, compile_encoder: bool, workdir: str) -> None:
    """Runs in a fresh process: prints one JSON object."""
    import_s = import_runtime()
    result, _ = cold_start(config, checkpoint, device, compile_encoder, workdir, import_s)
    print(json.dumps(result))


def measure(
    size: str, files: ModelFiles, device: str, compile_encoder: bool, workdir: Path
) -> dict[str, Any]:
    cmd = [sys.executable, str(RUN_PY), "--startup-child", files.config, str(files.checkpoint)]
    cmd += ["--device", device, "--workdir", str(workdir)] + (["--compile"] if compile_encoder else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"startup child for {size} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def startup_rows(size: str, result: dict[str, Any]) -> list[Row]:
    init_s = result["import_s"] + result["create_s"]
    note = f"import {result['import_s']:.1f} s + App.create {result['create_s']:.1f} s"
    note += f", runtime {result.get('runtime', 'torch')}"
    export = (
        [Row(f"export {size} to ONNX (once per checkpoint, before the start)", result["export_s"], None, "s")]
        if result.get("export_s")
        else []
    )
    return [
        *export,
        Row(f"cold start {size}: import + App.create (load, warm-up)", init_s, None, "s", note),
        Row(f"memory {size}: RSS after start + one click", result["rss_mib"], None, "MiB"),
        Row(f"memory {size}: peak RSS", result["peak_mib"], None, "MiB"),
    ]


def cache_row(result: dict[str, Any]) -> Row:
    per_image = result["cache_bytes_per_image"] / 2**20
    return Row("memory: feature cache per image (any size, float32)", per_image, None, "MiB")
