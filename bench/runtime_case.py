"""CPU runtimes side by side: torch vs onnxruntime vs OpenVINO, on this CPU, in one run.

    python bench/run.py --runtimes [--quick] [--model tiny|large] [--bf16]

Rows, with the CPU model and its ISA flags printed above the table:
- export of both graphs to ONNX, cold and cached (the cached one verifies SHA256s), and size;
- per runtime, in a fresh process each: loading the graphs cold (OpenVINO compiles, filling its
  model cache) and, in a second process, start-up with everything cached (import, `build_app`
  with its warm-up pass), then first and later clicks through the app (Label Studio `/predict`
  bodies, JPEGs served over HTTP) at 1024x768 and 4000x3000, and the serving process's peak RSS.
Ratios are torch / runtime (higher is better); masks are checked equal to torch's in
tests/test_runtime_parity.py, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import ModelFiles, Row, percentile

RUN_PY = Path(__file__).resolve().parent / "run.py"


def child_main(runtime: str, config: str, checkpoint: str, workdir: str, quick: bool, mode: str) -> None:
    """In a fresh process: `load` times loading the graphs; `serve` starts the app and clicks."""
    started = time.perf_counter()
    if mode == "load":
        from function.core.runtime.loader import RuntimeOptions, load_runtime_model

        runtime, _, precision = runtime.partition(":")
        options = RuntimeOptions(runtime, precision or "f32", None, Path(workdir) / "cache")
        model = load_runtime_model(runtime, config, Path(checkpoint), options)
        print(json.dumps({"load_s": time.perf_counter() - started, "precision": model.precision}))
        return
    from function.service.compose import build_app
    from function.settings import Settings

    from .clicks import Clicker, click_body, click_positions, image_server, synthetic_jpeg
    from .common import memory_mib

    runtime, _, precision = runtime.partition(":")
    settings = Settings(
        model_config=config,
        model_checkpoint=Path(checkpoint),
        device="cpu",
        runtime=runtime,
        cpu_precision=precision or "f32",
        runtime_cache_dir=Path(workdir) / "cache",
        warmup=True,
        prewarm=False,
        project_store_dir=Path(workdir) / "projects",
    )
    app = build_app(settings)
    result: dict[str, Any] = {"startup_s": time.perf_counter() - started}
    clicker = Clicker(app)
    later_n = 3 if quick else 10
    spots = click_positions(later_n + 1)
    for w, h in ((1024, 768), (4000, 3000)):
        path = f"/data/upload/1/{w}x{h}.jpg"
        with image_server({path: synthetic_jpeg(w, h, 1)}) as base:
            url = base + path
            first, _ = clicker.click(click_body(url, w, h, *spots[0], 1))
            later = [clicker.click(click_body(url, w, h, *p, 1))[0] for p in spots[1:]]
        result[f"{w}x{h}"] = {"first_ms": first, "later_ms": percentile(later, 50), "later_n": len(later)}
    result["peak_rss_mib"] = memory_mib()[1]
    result["precision"] = app.engine.model.precision if hasattr(app.engine.model, "precision") else "f32"
    app.close()
    print(json.dumps(result))


def _child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(RUN_PY), "--runtime-child", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"runtime child {args[0]} failed: {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def run(files: ModelFiles, workdir: Path, quick: bool, bf16: bool) -> list[Row]:
    from function.core.runtime.artifacts import ensure_graphs
    from function.core.runtime.graphs import export_checkpoint
    from function.core.runtime.sessions import installed_runtimes

    size = Path(files.config).stem
    cache = workdir / "cache"

    def export(encoder: Path, decoder: Path) -> dict[str, Any]:
        return export_checkpoint(files.config, files.checkpoint, encoder, decoder)

    started = time.perf_counter()
    graphs = ensure_graphs(files.checkpoint, files.config, export, cache, rebuild=True)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    ensure_graphs(files.checkpoint, files.config, export, cache)
    cached = time.perf_counter() - started
    rows = [
        Row(f"{size}: export to ONNX, cold (build SAM2 + trace both graphs)", cold, None, "s"),
        Row(f"{size}: export, cached (SHA256 check of the graphs)", cached, None, "s"),
        Row(f"{size}: ONNX artifact size (encoder + decoder)", graphs.nbytes / 2**20, None, "MiB"),
    ]
    runtimes = ["torch", *installed_runtimes()]
    if bf16 and "openvino" in runtimes:
        runtimes.append("openvino:bf16")
    base = [str(files.config), str(files.checkpoint), str(workdir), "1" if quick else "0"]
    served: dict[str, dict[str, Any]] = {}
    for runtime in runtimes:
        if runtime != "torch":
            for when in ("cold", "cached"):
                loaded = _child([runtime, *base, "load"])
                rows.append(
                    Row(
                        f"{size} {runtime}: load the graphs, {when}",
                        loaded["load_s"],
                        None,
                        "s",
                        f"runs {loaded['precision']}",
                    )
                )
        served[runtime] = _child([runtime, *base, "serve"])
    torch = served["torch"]
    for runtime, got in served.items():
        note = f"runs {got['precision']}"
        rows.append(
            Row(
                f"{size} {runtime}: start-up, artifacts cached (import + app + warm-up)",
                got["startup_s"],
                torch["startup_s"],
                "s",
                note,
            )
        )
        for image in ("1024x768", "4000x3000"):
            for kind, label in (("first_ms", "first click"), ("later_ms", "later click p50")):
                rows.append(
                    Row(
                        f"{size} {runtime}: {label} {image}",
                        got[image][kind],
                        torch[image][kind],
                        "ms",
                        "vs torch",
                    )
                )
        rows.append(
            Row(f"{size} {runtime}: peak RSS of the serving process", got["peak_rss_mib"], None, "MiB")
        )
    return rows


def cpu_line() -> str:
    from function.core.runtime.threads import intra_op_threads
    from function.tools.export_cli import cpu_description

    return f"CPU: {cpu_description()}; {intra_op_threads()} intra-op threads"
