"""Checkpoint download (verified, atomic, clear offline errors) and the CLI's missing-checkpoint path."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from function.core.checkpoints import (
    CHECKPOINTS,
    Checkpoint,
    CheckpointMissing,
    DownloadError,
    download,
    require_checkpoint,
    sha256_of,
)
from function.settings import Settings

from .support import running

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = os.urandom(3 * 2**20 + 17)  # more than one read block


@pytest.fixture
def file_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path != "/ckpt.pt":
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

    with running(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        yield url


def checkpoint(sha256: str) -> Checkpoint:
    return Checkpoint("test", "configs/sam2.1/sam2.1_hiera_t.yaml", "test_ckpt.pt", sha256, len(PAYLOAD))


GOOD = checkpoint(hashlib.sha256(PAYLOAD).hexdigest())


def test_download_verifies_and_reports_progress(tmp_path: Path, file_server: str) -> None:
    out = io.StringIO()
    path = download(GOOD, tmp_path / "ckpts", url=f"{file_server}/ckpt.pt", out=out)
    assert path == tmp_path / "ckpts" / "test_ckpt.pt"
    assert path.read_bytes() == PAYLOAD and sha256_of(path) == GOOD.sha256
    assert "100.0%" in out.getvalue()
    assert list(path.parent.iterdir()) == [path]  # no .part left behind
    # A verified file already there is kept, not fetched again.
    out = io.StringIO()
    assert download(GOOD, tmp_path / "ckpts", url="http://127.0.0.1:1/unused", out=out) == path
    assert "already present" in out.getvalue()


def test_checksum_mismatch_leaves_no_file(tmp_path: Path, file_server: str) -> None:
    with pytest.raises(DownloadError) as info:
        download(checkpoint("0" * 64), tmp_path, url=f"{file_server}/ckpt.pt", out=io.StringIO())
    assert "checksum mismatch" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_http_error_leaves_no_file(tmp_path: Path, file_server: str) -> None:
    with pytest.raises(DownloadError):
        download(GOOD, tmp_path, url=f"{file_server}/missing.pt", out=io.StringIO())
    assert list(tmp_path.iterdir()) == []


def test_unreachable_url_says_offline_and_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        download(GOOD, tmp_path, url="http://127.0.0.1:1/ckpt.pt", timeout_s=5, out=io.StringIO())
    message = str(info.value)
    assert "offline" in message
    assert str(tmp_path / "test_ckpt.pt") in message and GOOD.sha256 in message
    assert list(tmp_path.iterdir()) == []


def test_published_checkpoints_point_at_meta() -> None:
    for ckpt in CHECKPOINTS.values():
        assert ckpt.url.startswith("https://dl.fbaipublicfiles.com/segment_anything_2/092824/")
        assert len(ckpt.sha256) == 64 and ckpt.nbytes > 10**8


def test_require_checkpoint_names_the_download_command(tmp_path: Path) -> None:
    settings = Settings.from_env({"CHECKPOINT_DIR": str(tmp_path), "MODEL_SIZE": "small"})
    with pytest.raises(CheckpointMissing) as info:
        require_checkpoint(settings.model_checkpoint, settings.model_config)
    assert "checkpoint missing" in str(info.value)
    assert "python -m function download-checkpoint small" in str(info.value)


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MODEL_CHECKPOINT", "MODEL_SIZE", "MODEL_CONFIG", "CHECKPOINT_DIR")
    }
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    return env


def test_cli_serve_without_checkpoint_exits_with_the_download_command(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "function", "serve", "--port", "0"],
        cwd=REPO,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "checkpoint missing" in proc.stderr
    assert "python -m function download-checkpoint tiny" in proc.stderr
    assert str(tmp_path / "cache" / "sam2-nuclio" / "checkpoints" / "sam2.1_hiera_tiny.pt") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_bad_setting_exits_naming_the_variable(tmp_path: Path) -> None:
    env = {**clean_env(tmp_path), "DEVICE": "gpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "function", "serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "DEVICE" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_download_offline_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "function",
            "download-checkpoint",
            "tiny",
            "--dir",
            str(tmp_path / "ckpts"),
            "--url",
            "http://127.0.0.1:1/sam2.1_hiera_tiny.pt",
        ],
        cwd=REPO,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "offline" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "ckpts" / "sam2.1_hiera_tiny.pt").exists()
