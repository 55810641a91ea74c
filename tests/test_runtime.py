"""The CPU runtime's plumbing, without SAM2: thread count from the cgroup quota, artifacts that
are verified and rebuilt when stale or corrupt, the RUNTIME choice and its torch fallback."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from function.core.runtime import artifacts, loader
from function.core.runtime.artifacts import ArtifactError, ensure_graphs
from function.core.runtime.threads import cgroup_cpu_limit, intra_op_threads
from function.settings import Settings, SettingsError

from .fakes import FakeModel


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_cgroup_v2_quota_rounds_up_and_is_capped_by_visible_cpus(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr("function.core.runtime.threads.visible_cpus", lambda: 8)
    assert cgroup_cpu_limit(write(tmp_path / "a", {"cpu.max": "150000 100000\n"})) == 1.5
    assert intra_op_threads(None, tmp_path / "a") == 2
    assert intra_op_threads(None, write(tmp_path / "b", {"cpu.max": "max 100000\n"})) == 8
    assert intra_op_threads(None, write(tmp_path / "c", {"cpu.max": "5000 100000\n"})) == 1
    assert intra_op_threads(None, write(tmp_path / "d", {"cpu.max": "2000000 100000\n"})) == 8
    assert intra_op_threads(3, tmp_path / "a") == 3  # CPU_THREADS wins


def test_cgroup_v1_quota_and_no_cgroup_at_all(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr("function.core.runtime.threads.visible_cpus", lambda: 4)
    v1 = write(tmp_path / "v1", {"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"})
    assert intra_op_threads(None, v1) == 3
    unlimited = write(tmp_path / "v1u", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})
    assert intra_op_threads(None, unlimited) == 4
    assert intra_op_threads(None, tmp_path / "missing") == 4


def test_runtime_settings() -> None:
    s = Settings.from_env({})
    assert (s.runtime, s.cpu_precision, s.cpu_threads, s.runtime_cache_dir) == ("auto", "f32", None, None)
    s = Settings.from_env(
        {"RUNTIME": "OpenVINO", "CPU_PRECISION": "bf16", "CPU_THREADS": "3", "RUNTIME_CACHE_DIR": "/x"}
    )
    assert (s.runtime, s.cpu_precision, s.cpu_threads, s.runtime_cache_dir) == (
        "openvino",
        "bf16",
        3,
        Path("/x"),
    )
    with pytest.raises(SettingsError, match="RUNTIME"):
        Settings.from_env({"RUNTIME": "tensorrt"})
    with pytest.raises(SettingsError, match=r"CPU_PRECISION.*openvino"):
        Settings.from_env({"CPU_PRECISION": "bf16"})
    with pytest.raises(SettingsError, match="CPU_THREADS"):
        Settings.from_env({"CPU_THREADS": "-1"})


class Exporter:
    """A stand-in for the ONNX export: writes small files and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, encoder: Path, decoder: Path) -> dict[str, Any]:
        self.calls += 1
        encoder.write_bytes(b"encoder" * 100)
        decoder.write_bytes(b"decoder" * 100)
        return {"image_size": 1024}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "ckpt" / "sam2.1_hiera_tiny.pt"
    path.parent.mkdir()
    path.write_bytes(b"weights")
    return path


def test_artifacts_are_built_once_next_to_the_checkpoint_and_reused(checkpoint: Path) -> None:
    export = Exporter()
    first = ensure_graphs(checkpoint, "cfg.yaml", export)
    assert export.calls == 1 and first.config == {"image_size": 1024}
    assert first.folder.is_relative_to(checkpoint.parent / "sam2-runtime")
    assert artifacts.file_sha256(checkpoint)[:16] in str(first.folder)
    again = ensure_graphs(checkpoint, "cfg.yaml", export)
    assert export.calls == 1 and again == first
    assert first.runtime_dir("openvino", "1.0", "f32").name == "openvino-1.0-f32"


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete", "bad manifest"])
def test_a_corrupt_artifact_is_rebuilt_not_used(checkpoint: Path, damage: str) -> None:
    export = Exporter()
    graphs = ensure_graphs(checkpoint, "cfg.yaml", export)
    if damage == "flip a byte":
        data = bytearray(graphs.encoder.read_bytes())
        data[10] ^= 0xFF
        graphs.encoder.write_bytes(bytes(data))
    elif damage == "truncate":
        graphs.decoder.write_bytes(graphs.decoder.read_bytes()[:50])
    elif damage == "delete":
        graphs.encoder.unlink()
    else:
        (graphs.folder / "manifest.json").write_text("{not json")
    rebuilt = ensure_graphs(checkpoint, "cfg.yaml", export)
    assert export.calls == 2
    assert rebuilt.encoder.read_bytes() == b"encoder" * 100
    assert rebuilt.decoder.read_bytes() == b"decoder" * 100


def test_a_stale_artifact_is_rebuilt(checkpoint: Path, monkeypatch: Any) -> None:
    export = Exporter()
    graphs = ensure_graphs(checkpoint, "cfg.yaml", export)
    manifest = json.loads((graphs.folder / "manifest.json").read_text())
    manifest["key"]["sam2"] = "0.0-older"  # built by another sam2 version: same folder, other key
    (graphs.folder / "manifest.json").write_text(json.dumps(manifest))
    ensure_graphs(checkpoint, "cfg.yaml", export)
    assert export.calls == 2
    checkpoint.write_bytes(b"other weights")  # a new checkpoint: another key, another folder
    other = ensure_graphs(checkpoint, "cfg.yaml", export)
    assert export.calls == 3 and other.folder != graphs.folder


def test_a_failed_export_leaves_nothing_behind(checkpoint: Path) -> None:
    def broken(encoder: Path, decoder: Path) -> dict[str, Any]:
        encoder.write_bytes(b"half")
        raise RuntimeError("tracer failed")

    with pytest.raises(ArtifactError, match="tracer failed"):
        ensure_graphs(checkpoint, "cfg.yaml", broken)
    export = Exporter()
    ensure_graphs(checkpoint, "cfg.yaml", export)
    assert export.calls == 1
    leftovers = [p for p in (checkpoint.parent / "sam2-runtime").rglob("*") if ".building-" in str(p)]
    assert leftovers == []


def test_concurrent_starts_export_once(checkpoint: Path) -> None:
    export = Exporter()
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_graphs(checkpoint, "cfg.yaml", export)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert export.calls == 1 and len(results) == 4 and len({r.folder for r in results}) == 1


def test_graphs_baked_beside_a_read_only_checkpoint_are_used(
    checkpoint: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    """An image bakes the graphs next to its checkpoint; the pod may run with that folder
    read-only and a RUNTIME_CACHE_DIR elsewhere: neither exports again."""
    export = Exporter()
    baked = ensure_graphs(checkpoint, "cfg.yaml", export)
    assert ensure_graphs(checkpoint, "cfg.yaml", export, cache_dir=tmp_path / "cache").folder == baked.folder
    real = artifacts._writable
    monkeypatch.setattr(artifacts, "_writable", lambda p: "sam2-runtime" not in str(p) and real(p))
    monkeypatch.setattr(artifacts, "DEFAULT_CACHE", tmp_path / "user-cache")
    assert ensure_graphs(checkpoint, "cfg.yaml", export).folder == baked.folder
    assert export.calls == 1


def test_unwritable_checkpoint_folder_builds_in_the_user_cache(
    checkpoint: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(artifacts, "DEFAULT_CACHE", tmp_path / "user-cache")
    real = artifacts._writable
    monkeypatch.setattr(artifacts, "_writable", lambda p: "sam2-runtime" not in str(p) and real(p))
    export = Exporter()
    graphs = ensure_graphs(checkpoint, "cfg.yaml", export)
    assert export.calls == 1 and graphs.folder.is_relative_to(tmp_path / "user-cache")
    assert graphs.runtime_dir("openvino", "1", "f32").is_relative_to(tmp_path / "user-cache")


def test_auto_is_torch_on_cuda_and_onnxruntime_on_cpu() -> None:
    assert loader.resolve_runtime("auto", "cuda:0") == "torch"
    assert loader.resolve_runtime("auto", "cpu") == "onnxruntime"
    assert loader.resolve_runtime("openvino", "cpu") == "openvino"


def test_auto_falls_back_to_torch_with_one_warning(monkeypatch: Any, caplog: Any, tmp_path: Path) -> None:
    fake = FakeModel()
    threads: list[int] = []

    def broken(*args: Any) -> Any:
        raise ArtifactError("ONNX export failed: no space left")

    monkeypatch.setattr(loader, "load_runtime_model", broken)
    fake.use_threads = lambda n: threads.append(n)  # type: ignore[attr-defined]
    monkeypatch.setattr("function.core.sam2_model.Sam2Model.load", lambda *a: fake)
    with caplog.at_level(logging.WARNING):
        model = loader.load_model("cfg", tmp_path / "x.pt", "cpu", loader.RuntimeOptions("auto", threads=1))
    assert model is fake and threads == [1]  # torch on CPU gets the same thread count
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "serving with torch" in warnings[0].getMessage()
    with pytest.raises(ArtifactError):  # named explicitly: no silent fallback
        loader.load_model("cfg", tmp_path / "x.pt", "cpu", loader.RuntimeOptions("onnxruntime"))


def test_health_and_metrics_say_which_runtime_and_precision_serve(tmp_path: Path) -> None:
    from .support import call, make_app

    fake = FakeModel()
    fake.runtime, fake.precision = "openvino", "bf16"  # type: ignore[attr-defined]
    app = make_app(tmp_path, fake)
    health, metrics = call(app, "GET", "/health").body, call(app, "GET", "/metrics").body
    assert (health["runtime"], health["precision"]) == ("openvino", "bf16")
    assert (metrics["runtime"], metrics["precision"]) == ("openvino", "bf16")
    plain = call(make_app(tmp_path, FakeModel()), "GET", "/health").body
    assert (plain["runtime"], plain["precision"]) == ("torch", "f32")


def test_a_graph_the_runtime_cannot_load_is_rebuilt_once(monkeypatch: Any, tmp_path: Path) -> None:
    """Verified on disk but refused by the runtime (e.g. written by a broken exporter): rebuilt."""
    from function.core.runtime import sessions
    from function.core.runtime.artifacts import Graphs

    rebuilds: list[bool] = []

    def graphs(config: str, checkpoint: Path, cache_dir: Any, rebuild: bool = False) -> Graphs:
        rebuilds.append(rebuild)
        return Graphs(
            tmp_path / "e.onnx", tmp_path / "d.onnx", {"image_size": 1024, "mask_threshold": 0.0}, tmp_path
        )

    class Runner:
        precision = "f32"

    attempts = iter([RuntimeError("InvalidProtobuf"), Runner(), Runner()])

    def load(*args: Any) -> Any:
        item = next(attempts)
        if isinstance(item, Exception):
            raise item
        return item

    monkeypatch.setattr(loader, "load_graphs", graphs)
    monkeypatch.setattr(loader, "load_runner", load)
    model = loader.load_runtime_model(
        "onnxruntime", "cfg", tmp_path / "x.pt", loader.RuntimeOptions(threads=1)
    )
    assert rebuilds == [False, True] and model.runtime == "onnxruntime"
    with pytest.raises(ValueError, match="bf16"):
        loader.load_runtime_model(
            "onnxruntime", "cfg", tmp_path / "x.pt", loader.RuntimeOptions(precision="bf16")
        )
    assert sessions.RUNTIMES == ("onnxruntime", "openvino")
