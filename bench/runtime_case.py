"""CPU runtimes side by side: torch vs onnxruntime vs OpenVINO, on this CPU, in one run.

    python bench/run.py --runtimes [--quick] [--model tiny|large] [--bf16]

Rows, with the CPU model and its ISA flags printed above the table:
- export of both graphs to ONNX, cold and cached (the cached one verifies SHA256s), and size;
- per runtime, in a fresh process each: loading the graphs cold (OpenVINO compiles, filling its
  model cache) and, in a second process, start-up with everything cached (import, `build_app`
  with its warm-up pass) and the peak RSS of a process serving one 4000x3000 click;
- first and later clicks through the app (Label Studio `/predict` bodies, JPEGs served over
  HTTP) at 1024x768 and 4000x3000, every runtime loaded in one process and clicked in turn, so
  a busy machine slows them alike (sequential runs on a shared 2-core box were not comparable).
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


def settings_for(runtime: str, config: str, checkpoint: str, workdir: str) -> Any:
    from function.settings import Settings

    runtime, _, precision = runtime.partition(":")
    return Settings(
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


def child_main(runtime: str, config: str, checkpoint: str, workdir: str, quick: bool, mode: str) -> None:
    """In a fresh process: `load` times loading the graphs; `serve` times the start-up
    (import, `build_app` with its warm-up) and one first click, and reports the peak RSS."""
    started = time.perf_counter()
    if mode == "load":
        from function.core.runtime.loader import RuntimeOptions, load_runtime_model

        name, _, precision = runtime.partition(":")
        options = RuntimeOptions(name, precision or "f32", None, Path(workdir) / "cache")
        model = load_runtime_model(name, config, Path(checkpoint), options)
        print(json.dumps({"load_s": time.perf_counter() - started, "precision": model.precision}))
        return
    from function.service.compose import build_app

    from .clicks import Clicker, click_body, image_server, synthetic_jpeg
    from .common import memory_mib

    app = build_app(settings_for(runtime, config, checkpoint, workdir))
    result: dict[str, Any] = {"startup_s": time.perf_counter() - started}
    with image_server({"/a.jpg": synthetic_jpeg(4000, 3000, 1)}) as base:
        Clicker(app).click(click_body(base + "/a.jpg", 4000, 3000, 50.0, 50.0, 1))
    result["peak_rss_mib"] = memory_mib()[1]
    result["precision"] = str(getattr(app.engine.model, "precision", "f32"))
    app.close()
    print(json.dumps(result))


def interleaved_clicks(runtimes: list[str], files: ModelFiles, workdir: Path, quick: bool) -> dict[str, Any]:
    """Every runtime's app in this process, clicked in turn (round-robin), so that a busy
    neighbour slows all of them alike: first clicks on a new image per round (min kept), then
    later clicks on the last one (median kept)."""
    from function.service.compose import build_app

    from .clicks import Clicker, click_body, click_positions, image_server, synthetic_jpeg

    apps = {
        r: build_app(settings_for(r, files.config, str(files.checkpoint), str(workdir))) for r in runtimes
    }
    clickers = {r: Clicker(app) for r, app in apps.items()}
    rounds, later_n = (2, 4) if quick else (4, 12)
    spots = click_positions(later_n + 1)
    out: dict[str, Any] = {r: {} for r in runtimes}
    for w, h in ((1024, 768), (4000, 3000)):
        files_served = {f"/{w}x{h}-{k}.jpg": synthetic_jpeg(w, h, k) for k in range(rounds)}
        first: dict[str, list[float]] = {r: [] for r in runtimes}
        later: dict[str, list[float]] = {r: [] for r in runtimes}
        with image_server(files_served) as base:
            for k, path in enumerate(files_served):
                for r in runtimes:
                    first[r].append(clickers[r].click(click_body(base + path, w, h, *spots[0], k + 1))[0])
            last = base + list(files_served)[-1]
            for spot in spots[1:]:
                for r in runtimes:
                    later[r].append(clickers[r].click(click_body(last, w, h, *spot, rounds))[0])
        for r in runtimes:
            out[r][f"{w}x{h}"] = {"first_ms": min(first[r]), "later_ms": percentile(later[r], 50)}
    for app in apps.values():
        app.close()
    return out


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
    clicks = interleaved_clicks(runtimes, files, workdir, quick)
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
            for kind, label in (("first_ms", "first click (min)"), ("later_ms", "later click p50")):
                rows.append(
                    Row(
                        f"{size} {runtime}: {label} {image}",
                        clicks[runtime][image][kind],
                        clicks["torch"][image][kind],
                        "ms",
                        "vs torch, interleaved",
                    )
                )
        rows.append(
            Row(
                f"{size} {runtime}: peak RSS, start-up + one 4000x3000 click",
                got["peak_rss_mib"],
                None,
                "MiB",
            )
        )
    return rows


def cpu_line() -> str:
    from function.core.runtime.threads import intra_op_threads
    from function.tools.export_cli import cpu_description

    return f"CPU: {cpu_description()}; {intra_op_threads()} intra-op threads"
