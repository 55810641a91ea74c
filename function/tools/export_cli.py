"""`python -m function export`: build the CPU runtime artifacts now, and compare runtimes here.

    python -m function export [--runtime onnxruntime|openvino|all] [--rebuild]
    python -m function export --compare [--runtime ...] [--bf16] [--threads N]

The model is the one the function would serve (MODEL_SIZE / MODEL_CHECKPOINT / MODEL_CONFIG);
artifacts go where the function looks for them (next to the checkpoint, or RUNTIME_CACHE_DIR),
so a container image that runs this at build time starts without exporting or compiling.
`--compare` times torch and each runtime on this machine (a 1024x1024 image: the encoder
once per image, the decoder once per click) and prints the CPU model and its ISA flags.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# The ISA features that decide which CPU runtime wins (see docs/performance.md).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_tile")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export SAM2 to ONNX for the CPU runtimes; --compare times them")
    p.add_argument(
        "--runtime",
        choices=("onnxruntime", "openvino", "all"),
        default="all",
        help="runtime(s) to prepare (all: every installed one)",
    )
    p.add_argument("--rebuild", action="store_true", help="export again even if valid artifacts exist")
    p.add_argument("--compare", action="store_true", help="time torch and the runtimes on this CPU")
    p.add_argument("--bf16", action="store_true", help="with --compare: also OpenVINO with the bf16 hint")
    p.add_argument("--threads", type=int, help="intra-op threads (default: CPU_THREADS or the CPU quota)")
    p.add_argument("--repeats", type=int, default=3, help="with --compare: encoder passes (min is kept)")
    p.set_defaults(run=run)


def cpu_description() -> str:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    isa = [f for f in ISA_FLAGS if f in flags] or ["none of " + "/".join(ISA_FLAGS)]
    return f"{model}; ISA: {' '.join(isa)}"


def run(args: argparse.Namespace) -> int:
    from ..core.checkpoints import CheckpointMissing, require_checkpoint
    from ..core.runtime.loader import RuntimeOptions, load_graphs, load_runtime_model
    from ..core.runtime.sessions import RUNTIMES, installed_runtimes
    from ..core.runtime.threads import intra_op_threads
    from ..settings import Settings, SettingsError

    try:
        settings = Settings.from_env(os.environ)
        checkpoint = require_checkpoint(settings.model_checkpoint, settings.model_config)
    except (SettingsError, CheckpointMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wanted = installed_runtimes() if args.runtime == "all" else [args.runtime]
    missing = [r for r in wanted if r not in installed_runtimes()]
    if missing or not wanted:
        print(f"error: not installed: {', '.join(missing or RUNTIMES)}", file=sys.stderr)
        return 2
    threads = intra_op_threads(args.threads or settings.cpu_threads)
    started = time.perf_counter()
    graphs = load_graphs(settings.model_config, checkpoint, settings.runtime_cache_dir, rebuild=args.rebuild)
    print(f"graphs: {graphs.folder} ({graphs.nbytes / 1e6:.0f} MB, {time.perf_counter() - started:.1f} s)")
    models: dict[str, Any] = {}
    for runtime in wanted:
        precisions = ["f32", "bf16"] if runtime == "openvino" and args.bf16 else ["f32"]
        for precision in precisions:
            started = time.perf_counter()
            options = RuntimeOptions(runtime, precision, threads, settings.runtime_cache_dir)
            model = load_runtime_model(runtime, settings.model_config, checkpoint, options)
            name = runtime if len(precisions) == 1 else f"{runtime} {precision}"
            models[name] = model
            print(f"{name}: ready in {time.perf_counter() - started:.1f} s (runs {model.precision})")
    if args.compare:
        compare(settings, checkpoint, models, threads, max(1, args.repeats))
    return 0


def compare(settings: Any, checkpoint: Path, models: dict[str, Any], threads: int, repeats: int) -> None:
    """Time torch and every loaded runtime on one 1024x1024 image and print a markdown table."""
    from ..core.prompts import Prompt
    from ..core.sam2_model import Sam2Model

    torch_model = Sam2Model.load(settings.model_config, checkpoint, "cpu")
    torch_model.use_threads(threads)
    everyone: dict[str, Any] = {"torch": torch_model, **models}
    image = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    prompts = [
        Prompt.build([(512.0, 400.0)], [], None),
        Prompt.build([(300.0, 300.0), (700.0, 650.0)], [], None),
    ]
    # In turn (round-robin), so that a busy neighbour slows every runtime alike.
    features = {name: model.encode(image) for name, model in everyone.items()}  # untimed warm-up
    encodes: dict[str, list[float]] = {name: [] for name in everyone}
    clicks: dict[str, list[float]] = {name: [] for name in everyone}
    for _ in range(repeats):
        for name, model in everyone.items():
            started = time.perf_counter()
            features[name] = model.encode(image)
            encodes[name].append(time.perf_counter() - started)
    for _ in range(3):
        for prompt in prompts:
            for name, model in everyone.items():
                started = time.perf_counter()
                model.decode(features[name], prompt)
                clicks[name].append(time.perf_counter() - started)
    encoder = {name: min(times) for name, times in encodes.items()}
    decoder = {name: statistics.median(times) for name, times in clicks.items()}
    print(
        f"\nCPU: {cpu_description()}; {threads} threads; {Path(settings.model_config).stem}; "
        f"in turn; encoder min of {repeats}, decoder (click incl. upsample) median of {len(prompts) * 3}\n"
    )
    names = list(everyone)
    print("| graph | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    print("| encoder | " + " | ".join(f"{encoder[n]:.2f} s" for n in names) + " |")
    print("| decoder | " + " | ".join(f"{decoder[n] * 1e3:.0f} ms" for n in names) + " |")
    print(
        "| speed-up (encoder / decoder) | "
        + " | ".join(
            f"{encoder['torch'] / encoder[n]:.2f}x / {decoder['torch'] / decoder[n]:.2f}x" for n in names
        )
        + " |"
    )
