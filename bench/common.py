"""Shared pieces of the benchmark: result rows, timing statistics, checkpoints, memory."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Row:
    """One line of the table. `ratio` = baseline / ours (higher is better); None where a
    number has no baseline (memory, cold start) or could not be measured ("n/a")."""

    name: str
    ours: float | None
    baseline: float | None
    unit: str
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline is None or self.ours <= 0:
            return None
        return self.baseline / self.ours

    def as_json(self) -> dict[str, Any]:
        def num(v: float | None) -> float | None:
            return None if v is None else round(v, 3)

        return {
            "name": self.name,
            "ours": num(self.ours),
            "baseline": num(self.baseline),
            "unit": self.unit,
            "ratio": num(self.ratio),
        }


def row_from_json(obj: dict[str, Any]) -> Row:
    """Rows from other bench modules (same JSON shape) for the shared table."""
    return Row(str(obj["name"]), obj.get("ours"), obj.get("baseline"), str(obj.get("unit", "")))


def markdown(rows: list[Row]) -> str:
    def fmt(v: float | None) -> str:
        if v is None:
            return "n/a"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"

    lines = ["| case | ours | baseline | unit | ratio |", "|---|---:|---:|---|---:|"]
    for r in rows:
        ratio = "" if r.ratio is None else f"**{r.ratio:.1f}x**"
        name = f"{r.name} ({r.note})" if r.note else r.name
        lines.append(f"| {name} | {fmt(r.ours)} | {fmt(r.baseline)} | {r.unit} | {ratio} |")
    return "\n".join(lines)


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))


def time_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of `repeats` calls in ms (after one untimed call), and the last result."""
    result = fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - started) * 1e3)
    return percentile(samples, 50), result


def memory_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc (Linux)."""
    fields: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = float(value.split()[0]) / 1024
    except OSError:
        return float("nan"), float("nan")
    return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))


@dataclass(frozen=True)
class ModelFiles:
    config: str
    checkpoint: Path
    random_weights: bool

    @property
    def label(self) -> str:
        what = "random weights; compute equals real weights" if self.random_weights else "real weights"
        return f"{Path(self.config).stem} ({what})"


def model_files(size: str, workdir: Path) -> ModelFiles:
    """MODEL_CHECKPOINT when set (real weights), else a random-weight checkpoint for `size`
    built from its config and saved like Meta's files (as tests/conftest.py does)."""
    from function.core.checkpoints import CHECKPOINTS
    from function.settings import config_for_checkpoint, normalize_model_config

    env = os.environ.get("MODEL_CHECKPOINT")
    if env:
        path = Path(env)
        if not path.is_file():
            raise SystemExit(f"MODEL_CHECKPOINT={env} is not a file")
        config = os.environ.get("MODEL_CONFIG")
        return ModelFiles(
            normalize_model_config(config) if config else config_for_checkpoint(path), path, False
        )
    import torch
    from sam2.build_sam import build_sam2

    known = CHECKPOINTS[size]
    path = workdir / known.filename
    if not path.is_file():
        torch.manual_seed(0)
        built = build_sam2(known.config, None, device="cpu")
        torch.save({"model": built.state_dict()}, path)
        del built
    return ModelFiles(known.config, path, True)
