"""How many intra-op threads a CPU runtime should use: the container's CPU limit, not the host's.

onnxruntime, OpenVINO and torch all default to every visible core; in a container limited by
a CFS quota (Kubernetes `resources.limits.cpu`, Nuclio's `resources.limits.cpu`) that
oversubscribes the quota and the threads stall each other. The quota is read from cgroup v2
(`cpu.max`) or v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`), rounded up, and capped by the
CPUs this process may run on.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP) -> float | None:
    """CPUs allowed by the cgroup quota (e.g. 1.5), or None when unlimited or unreadable."""
    try:
        fields = (root / "cpu.max").read_text().split()
    except OSError:
        fields = []
    if fields:
        if fields[0] == "max":
            return None
        try:
            period = int(fields[1]) if len(fields) > 1 else 100_000
            return int(fields[0]) / period if period > 0 else None
        except ValueError:
            return None
    for base in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            q = int((base / "cpu.cfs_quota_us").read_text())
            p = int((base / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return q / p if q > 0 and p > 0 else None
    return None


def visible_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def intra_op_threads(override: int | None = None, root: Path = CGROUP) -> int:
    """`override` (CPU_THREADS) when given, else ceil(cgroup quota) capped by the visible CPUs."""
    if override:
        return override
    cpus = visible_cpus()
    limit = cgroup_cpu_limit(root)
    if limit is None:
        return cpus
    return max(1, min(cpus, math.ceil(limit)))
