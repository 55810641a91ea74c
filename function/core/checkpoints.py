"""SAM2.1 checkpoints: where Meta publishes them, what they hash to, how to fetch them."""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

META_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"


@dataclass(frozen=True)
class Checkpoint:
    size: str
    config: str  # Hydra config name inside the sam2 package
    filename: str
    sha256: str
    nbytes: int

    @property
    def url(self) -> str:
        return f"{META_BASE_URL}/{self.filename}"


# SHA256 and sizes are those of the files Meta publishes (mirrored with the same digests
# on the facebook/sam2.1-hiera-* model repositories).
CHECKPOINTS: dict[str, Checkpoint] = {
    c.size: c
    for c in (
        Checkpoint(
            "tiny",
            "configs/sam2.1/sam2.1_hiera_t.yaml",
            "sam2.1_hiera_tiny.pt",
            "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
            156_008_466,
        ),
        Checkpoint(
            "small",
            "configs/sam2.1/sam2.1_hiera_s.yaml",
            "sam2.1_hiera_small.pt",
            "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
            184_416_285,
        ),
        Checkpoint(
            "base_plus",
            "configs/sam2.1/sam2.1_hiera_b+.yaml",
            "sam2.1_hiera_base_plus.pt",
            "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
            323_606_802,
        ),
        Checkpoint(
            "large",
            "configs/sam2.1/sam2.1_hiera_l.yaml",
            "sam2.1_hiera_large.pt",
            "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
            898_083_611,
        ),
    )
}


def default_checkpoint_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sam2-nuclio" / "checkpoints"


class DownloadError(RuntimeError):
    """The checkpoint could not be fetched or did not verify."""


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _progress(done: int, total: int, out: IO[str]) -> None:
    width = 30
    frac = done / total if total else 0.0
    bar = "#" * int(frac * width)
    out.write(f"\r[{bar:<{width}}] {done / 2**20:7.1f}/{total / 2**20:.1f} MiB {frac:6.1%}")
    out.flush()


def download(
    ckpt: Checkpoint,
    dest_dir: Path,
    *,
    url: str | None = None,
    timeout_s: float = 30.0,
    out: IO[str] = sys.stderr,
) -> Path:
    """Fetch `ckpt` into `dest_dir`, verify its SHA256 and return its path.

    A verified file already there is kept. The download goes to a `.part` file that is
    renamed only after the digest matches, so an interrupted run never leaves a bad
    checkpoint under the final name.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / ckpt.filename
    if target.exists() and sha256_of(target) == ckpt.sha256:
        out.write(f"{target} already present and verified\n")
        return target
    part = target.with_suffix(target.suffix + ".part")
    source = url or ckpt.url
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(source, timeout=timeout_s) as resp, part.open("wb") as f:
            total = int(resp.headers.get("Content-Length") or ckpt.nbytes)
            done = 0
            while block := resp.read(1 << 20):
                f.write(block)
                digest.update(block)
                done += len(block)
                _progress(done, total, out)
        out.write("\n")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download {source}: {exc}. Are you offline? Download it elsewhere "
            f"and put it at {target} (SHA256 {ckpt.sha256})."
        ) from exc
    if digest.hexdigest() != ckpt.sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {source}: got {digest.hexdigest()}, expected {ckpt.sha256}"
        )
    part.replace(target)
    return target


class CheckpointMissing(RuntimeError):
    """The checkpoint to load is not on disk: one sentence saying how to get it."""


def require_checkpoint(path: Path | None, config: str) -> Path:
    """`path` if it is a file; otherwise CheckpointMissing naming the command that fetches it."""
    if path is None:
        raise CheckpointMissing(
            f"MODEL_CHECKPOINT is not set and {config} has no published "
            "SAM2.1 checkpoint; set MODEL_CHECKPOINT to a .pt file"
        )
    if path.is_file():
        return path
    size = next((c.size for c in CHECKPOINTS.values() if c.filename == path.name), None)
    hint = (
        f"run `python -m function download-checkpoint {size}`"
        if size
        else "set MODEL_CHECKPOINT to an existing SAM2 checkpoint file"
    )
    raise CheckpointMissing(f"checkpoint missing: {path} does not exist; {hint}")
