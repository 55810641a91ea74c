"""Exported graphs on disk: keyed, verified, rebuilt when stale or corrupt, built once.

Layout (next to the checkpoint, or under `cache_dir`):

    <root>/<checkpoint stem>-<sha256[:16]>/
        onnx-g<graph version>-opset<opset>-torch<version>/   encoder.onnx decoder.onnx manifest.json
        <runtime>-<runtime version>-<precision>/             runtime-owned (OpenVINO's model cache)

The ONNX graphs depend on the checkpoint, the graph cut and the exporter (torch); what a
runtime derives from them (OpenVINO's compiled blobs) sits in a folder keyed by that runtime,
its version and the precision. `manifest.json` records the key and each file's SHA256 and
size; anything that does not match, or that a runtime then fails to load, is rebuilt, never
trusted. A lock file serialises concurrent builders (several workers starting at once): the
first builds, the others wait and reuse its result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .graphs import GRAPH_VERSION, OPSET

log = logging.getLogger(__name__)

GRAPH_FILES = ("encoder.onnx", "decoder.onnx")
DEFAULT_CACHE = Path.home() / ".cache" / "sam2-nuclio" / "runtime"


class ArtifactError(RuntimeError):
    """The graphs could not be built or verified."""


@dataclass(frozen=True)
class Graphs:
    """Verified ONNX graphs of one checkpoint, plus what numpy needs around them."""

    encoder: Path
    decoder: Path
    config: dict[str, Any]
    folder: Path

    @property
    def nbytes(self) -> int:
        return self.encoder.stat().st_size + self.decoder.stat().st_size

    def runtime_dir(self, runtime: str, version: str, precision: str) -> Path:
        """A folder owned by one runtime build (its model cache), created on demand."""
        path = self.folder.parent / f"{runtime}-{version}-{precision}"
        path.mkdir(parents=True, exist_ok=True)
        return path


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_sha256(checkpoint: Path, memo_dir: Path) -> str:
    """SHA256 of the checkpoint, remembered per (path, size, mtime) so a restart skips it."""
    st = checkpoint.stat()
    stamp = f"{checkpoint.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    memo = memo_dir / "checkpoint-hashes.json"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(stamp), str):
        return str(known[stamp])
    digest = file_sha256(checkpoint)
    with contextlib.suppress(OSError):
        memo_dir.mkdir(parents=True, exist_ok=True)
        known = known if isinstance(known, dict) else {}
        known[stamp] = digest
        _write_atomic(memo, json.dumps(known, indent=1))
    return digest


def store_root(checkpoint: Path, cache_dir: Path | None) -> Path:
    """`cache_dir`, else a folder next to the checkpoint, else the user cache if that is read-only."""
    if cache_dir is not None:
        return cache_dir
    beside = checkpoint.resolve().parent / "sam2-runtime"
    try:
        beside.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=beside):
            pass
        return beside
    except OSError:
        return DEFAULT_CACHE


def graph_key(checkpoint_digest: str, model_config: str) -> dict[str, Any]:
    return {
        "checkpoint_sha256": checkpoint_digest,
        "model_config": model_config,
        "graph_version": GRAPH_VERSION,
        "opset": OPSET,
        "torch": package_version("torch"),
        "sam2": package_version("sam2"),
    }


def ensure_graphs(
    checkpoint: Path,
    model_config: str,
    export: Callable[[Path, Path], dict[str, Any]],
    cache_dir: Path | None = None,
    rebuild: bool = False,
) -> Graphs:
    """The checkpoint's verified graphs, exported by `export(encoder_path, decoder_path)` (which
    returns the decoder config) when missing, stale, corrupt, or `rebuild` is asked for."""
    root = store_root(checkpoint, cache_dir)
    digest = checkpoint_sha256(checkpoint, root)
    key = graph_key(digest, model_config)
    folder = (
        root
        / f"{checkpoint.stem}-{digest[:16]}"
        / (f"onnx-g{GRAPH_VERSION}-opset{OPSET}-torch{key['torch']}")
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / ".lock"):
        if not rebuild:
            found = _verified(folder, key)
            if found is not None:
                return found
        return _build(folder, key, export)


def _verified(folder: Path, key: dict[str, Any]) -> Graphs | None:
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("key") != key:
            log.warning("runtime graphs in %s are stale (built for another key): rebuilding", folder)
            return None
        for name in GRAPH_FILES:
            expected = manifest["files"][name]
            path = folder / name
            if path.stat().st_size != expected["bytes"] or file_sha256(path) != expected["sha256"]:
                log.warning("runtime graph %s is corrupt (size or SHA256 mismatch): rebuilding", path)
                return None
        return Graphs(folder / GRAPH_FILES[0], folder / GRAPH_FILES[1], dict(manifest["config"]), folder)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("runtime graphs in %s unreadable (%s): rebuilding", folder, exc)
        return None


def _build(folder: Path, key: dict[str, Any], export: Callable[[Path, Path], dict[str, Any]]) -> Graphs:
    log.info("exporting SAM2 encoder and decoder to ONNX in %s (once per checkpoint; ~10-60 s)", folder)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        enc, dec = (tmp / name for name in GRAPH_FILES)
        try:
            config = export(enc, dec)
        except Exception as exc:
            raise ArtifactError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
        files = {
            name: {"bytes": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)}
            for name in GRAPH_FILES
        }
        manifest = {"key": key, "files": files, "config": config, "built_at": time.time()}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    graphs = Graphs(folder / GRAPH_FILES[0], folder / GRAPH_FILES[1], config, folder)
    log.info(
        "exported SAM2 graphs in %.1f s (%.0f MB) to %s",
        time.perf_counter() - started,
        graphs.nbytes / 1e6,
        folder,
    )
    return graphs


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
