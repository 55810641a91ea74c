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
        """A folder owned by one runtime build (its model cache), created on demand beside the
        graphs, or in the user cache when the graphs are read-only (baked into an image)."""
        name = f"{runtime}-{version}-{precision}"
        for path in (self.folder.parent / name, DEFAULT_CACHE / self.folder.parent.name / name):
            if _writable(path):
                return path
        return self.folder.parent / name  # the runtime compiles without caching


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


def store_roots(checkpoint: Path, cache_dir: Path | None) -> tuple[list[Path], list[Path]]:
    """(where to look for graphs, where they may be written, in order of preference).

    Written: `cache_dir` when set, else a folder next to the checkpoint, else the user cache.
    Looked up: those, and next to the checkpoint anyway (an image that baked them there at
    build time may run with a read-only checkpoint folder and a RUNTIME_CACHE_DIR)."""
    beside = checkpoint.resolve().parent / "sam2-runtime"
    write = [cache_dir] if cache_dir is not None else [beside, DEFAULT_CACHE]
    return list(dict.fromkeys([*write, beside])), write


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
        return True
    except OSError:
        return False


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
    look, write = store_roots(checkpoint, cache_dir)
    root = next((r for r in write if _writable(r)), None)
    digest = checkpoint_sha256(checkpoint, root or DEFAULT_CACHE)
    key = graph_key(digest, model_config)
    leaf = (
        Path(f"{checkpoint.stem}-{digest[:16]}") / f"onnx-g{GRAPH_VERSION}-opset{OPSET}-torch{key['torch']}"
    )
    if not rebuild:
        for candidate in look:
            found = _verified(candidate / leaf, key, quiet=True)
            if found is not None:
                return found
    if root is None:
        raise ArtifactError(f"no writable folder for the runtime graphs (tried {', '.join(map(str, write))})")
    folder = root / leaf
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / ".lock"):
        # Another worker may have built them while this one waited for the lock.
        found = None if rebuild else _verified(folder, key)
        return found if found is not None else _build(folder, key, export)


def _verified(folder: Path, key: dict[str, Any], quiet: bool = False) -> Graphs | None:
    """The graphs in `folder` if their manifest matches `key` and every file its SHA256; else
    None, with a warning saying why (unless `quiet`: a first look before taking the lock)."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return None
    problem = ""
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("key") != key:
            problem = "stale (built for another checkpoint, graph version or exporter)"
        for name in GRAPH_FILES:
            expected = manifest["files"][name]
            path = folder / name
            if problem:
                break
            if path.stat().st_size != expected["bytes"] or file_sha256(path) != expected["sha256"]:
                problem = f"corrupt ({name}: size or SHA256 differs from the manifest)"
        if not problem:
            return Graphs(folder / GRAPH_FILES[0], folder / GRAPH_FILES[1], dict(manifest["config"]), folder)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problem = f"unreadable ({type(exc).__name__}: {exc})"
    if not quiet:
        log.warning("runtime graphs in %s are %s: rebuilding", folder, problem)
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
