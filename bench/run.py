"""Benchmarks, side by side with their baselines, in one run.

    python bench/run.py [--quick] [--device cpu|cuda] [--model tiny|small|base_plus|large] [--json]
    python bench/run.py --runtimes [--quick] [--model tiny|large] [--bf16]   (CPU runtimes only)

Prints a markdown table (to stderr with --json, which prints one JSON object per row on
stdout: {"name", "ours", "baseline", "unit", "ratio"}, ratio = baseline / ours, higher is
better). The model is MODEL_CHECKPOINT when set (real weights), else a checkpoint with random
weights built from the chosen size's config: SAM2 computes the same amount either way, so
times are those of real weights (the masks mean nothing).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

STARTED = time.perf_counter()
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES = ("tiny", "small", "base_plus", "large")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer clicks and sizes; about 2 min on 2 CPU cores")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--model", default="tiny", choices=SIZES)
    p.add_argument("--json", action="store_true", help="JSON lines on stdout, table on stderr")
    p.add_argument("--compile", action="store_true", help="torch.compile the image encoder (GPU)")
    p.add_argument("--profile", action="store_true", help="print a pyinstrument profile of later clicks")
    p.add_argument(
        "--runtimes",
        action="store_true",
        help="only the CPU runtime table: torch vs onnxruntime vs OpenVINO (bench/runtime_case.py)",
    )
    p.add_argument(
        "--bf16", action="store_true", help="with --runtimes: also OpenVINO with CPU_PRECISION=bf16"
    )
    p.add_argument("--runtime-child", nargs=6, help=argparse.SUPPRESS)
    p.add_argument("--startup-child", nargs=2, metavar=("CONFIG", "CHECKPOINT"), help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def machine(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    where = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device.startswith("cuda") and torch.cuda.is_available():
        where += f", GPU {torch.cuda.get_device_name(0)}"
    return where


def runtimes_main(args: argparse.Namespace) -> int:
    from bench import runtime_case
    from bench.common import markdown, model_files

    out = sys.stderr if args.json else sys.stdout
    with tempfile.TemporaryDirectory(prefix="sam2-bench-") as tmp:
        files = model_files(args.model, Path(tmp))
        rows = runtime_case.run(files, Path(tmp), args.quick, args.bf16)
    print(f"Model: {files.label}, device cpu. {runtime_case.cpu_line()}.", file=out)
    print(f"Machine: {machine('cpu')}. Run: {time.perf_counter() - STARTED:.0f} s.\n", file=out)
    print(markdown(rows), file=out)
    if args.json:
        for r in rows:
            print(json.dumps(r.as_json()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.startup_child:
        from bench.startup_case import child_main

        config, checkpoint = args.startup_child
        child_main(config, checkpoint, args.device, args.compile, args.workdir)
        return 0

    if args.runtime_child:
        from bench.runtime_case import child_main as runtime_child

        runtime, config, checkpoint, workdir, quick, mode = args.runtime_child
        runtime_child(runtime, config, checkpoint, workdir, quick == "1", mode)
        return 0
    if args.runtimes:
        return runtimes_main(args)

    from bench import startup_case

    import_s = startup_case.import_runtime()  # first, so nothing else has imported torch

    from bench import clicks, mask_cases
    from bench.common import Row, markdown, model_files, row_from_json

    out = sys.stderr if args.json else sys.stdout
    rows: list[Row] = []
    timings: list[str] = [f"import {import_s:.1f} s"]

    def section(name: str, started: float) -> None:
        timings.append(f"{name} {time.perf_counter() - started:.1f} s")

    with tempfile.TemporaryDirectory(prefix="sam2-bench-") as tmp:
        workdir = Path(tmp)
        t = time.perf_counter()
        files = model_files(args.model, workdir)
        section("checkpoint", t)
        t = time.perf_counter()
        started, app = startup_case.cold_start(
            files.config, str(files.checkpoint), args.device, args.compile, str(workdir), import_s
        )
        rows.append(startup_case.cache_row(started))
        rows += startup_case.startup_rows(args.model, started)
        model = app.engine.model
        section("cold start", t)
        settings = replace(app.settings, warmup=False)
        plans = (
            [clicks.ClickPlan(1024, 768, 1, 8, 2), clicks.ClickPlan(4000, 3000, 1, 4, 1)]
            if args.quick
            else [clicks.ClickPlan(1024, 768, 3, 20, 10), clicks.ClickPlan(4000, 3000, 3, 20, 10)]
        )
        for seed, plan in enumerate(plans):
            t = time.perf_counter()
            rows += clicks.run_clicks(model, settings, plan, seed * 100)
            section(f"clicks {plan.width}x{plan.height}", t)
        t = time.perf_counter()
        rows += mask_cases.rle_rows(args.quick)
        rows += mask_cases.upsample_rows(model, args.quick)
        rows += mask_cases.polygon_rows(args.quick)
        rows += mask_cases.cvat_rows()
        section("masks", t)
        t = time.perf_counter()
        from bench import tracking_case

        rows += tracking_case.rows(model, files.config, files.checkpoint, args.device, args.quick)
        section("tracking", t)

        if not args.quick and not os.environ.get("MODEL_CHECKPOINT"):
            t = time.perf_counter()
            for size in SIZES:
                if size != args.model:
                    result = startup_case.measure(
                        size, model_files(size, workdir), args.device, args.compile, workdir
                    )
                    rows += startup_case.startup_rows(size, result)
            section("other sizes", t)

        failed = False
        try:  # bench/prewarm_case.py is written for another issue; optional here
            prewarm_case = importlib.import_module("bench.prewarm_case")
        except ImportError:
            prewarm_case = None
        if prewarm_case is not None:
            t = time.perf_counter()
            try:
                found = prewarm_case.run(args.quick, args.device, args.model)
                rows += [row_from_json(r) for r in found]
            except Exception as exc:  # report it, keep the other tables
                failed = True
                print(f"prewarm case failed: {exc!r}", file=sys.stderr)
            section("prewarm", t)

        t = time.perf_counter()
        try:  # replicas sharing features (Redis) and the remote-mode proxy
            from bench import shared_tier_case

            found = shared_tier_case.rows_for(model, settings, args.quick, workdir)
            rows += [row_from_json(r) for r in found]
        except Exception as exc:
            failed = True
            print(f"shared tier case failed: {exc!r}", file=sys.stderr)
        section("shared tier", t)

        t = time.perf_counter()
        try:  # text prompts: detector + SAM2 per box (needs transformers)
            from bench import text_case

            rows += [row_from_json(r) for r in text_case.run(args.quick, args.device, args.model)]
        except Exception as exc:  # report it, keep the other tables
            failed = True
            print(f"text case failed: {exc!r}", file=sys.stderr)
        section("text prompts", t)

        profile = ""
        if args.profile:
            from bench.profile_click import profile_later_clicks

            profile = profile_later_clicks(model, settings, 1024, 768, 10 if args.quick else 30)

    weights = files.label
    mode = "quick" if args.quick else "full"
    print(f"Model: {weights}, device {args.device}{', compiled encoder' if args.compile else ''}.", file=out)
    print(f"Machine: {machine(args.device)}. Run: {mode}, {time.perf_counter() - STARTED:.0f} s.\n", file=out)
    print(markdown(rows), file=out)
    print(f"\nSections: {', '.join(timings)}.", file=out)
    if profile:
        print("\n```\n" + profile + "```", file=out)
    if args.json:
        for r in rows:
            print(json.dumps(r.as_json()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
