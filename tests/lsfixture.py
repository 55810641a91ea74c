"""A real Label Studio 1.23.2 for end-to-end tests.

Label Studio lives in its own virtualenv (`.lsvenv`, created by `./dev.sh test`), runs on
127.0.0.1 with a fresh data directory, and gets its admin user from the command line. The
test client logs in on the web form to create a Personal Access Token, exactly as a user
does, and the function under test gets that PAT as LABEL_STUDIO_API_KEY.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
LS_VENV = Path(os.environ.get("LS_VENV", REPO / ".lsvenv"))
LS_BIN = LS_VENV / "bin" / "label-studio"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "Passw0rd!123"
TEMPLATE = LS_VENV / "sam2-nuclio-test-data"
FIRST_START_TIMEOUT_S = 900.0  # runs every migration: ~45 s on a fast idle machine
START_TIMEOUT_S = 180.0


class LabelStudioError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LabelStudioServer:
    """`pat`: a Personal Access Token made through the web login (what users paste into
    LABEL_STUDIO_API_KEY). `legacy_token`: the admin's legacy key, disabled by default in
    1.23 (enable with `POST /api/jwt/settings` to test legacy mode)."""

    url: str
    pat: str
    legacy_token: str
    log_path: Path
    _session: requests.Session = field(default_factory=requests.Session, repr=False)

    def access_token(self) -> str:
        """A fresh short-lived access token for the PAT, as `POST /api/token/refresh/` gives."""
        resp = self._session.post(f"{self.url}/api/token/refresh/", json={"refresh": self.pat}, timeout=30)
        resp.raise_for_status()
        return str(resp.json()["access"])

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.access_token()}", **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 120)
        return self._session.request(method, f"{self.url}{path}", headers=headers, **kwargs)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-4000:]
            raise LabelStudioError(f"Label Studio exited with {proc.returncode}:\n{tail}")
        try:
            resp = requests.get(f"{url}/health", timeout=2)
            if resp.ok and resp.json().get("status") == "UP":
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(1.0)
    tail = log_path.read_text(errors="replace")[-4000:]
    raise LabelStudioError(f"Label Studio did not become healthy in {timeout_s:.0f} s:\n{tail}")


def create_pat(url: str, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> str:
    """Web login (CSRF cookie, form post), then `POST /api/token/` -> a Personal Access Token."""
    web = requests.Session()
    login = f"{url}/user/login/"
    web.get(login, timeout=30).raise_for_status()
    csrf = web.cookies.get("csrftoken")
    if not csrf:
        raise LabelStudioError("no csrftoken cookie from the login page")
    resp = web.post(
        login,
        data={"email": email, "password": password, "csrfmiddlewaretoken": csrf},
        headers={"Referer": login},
        allow_redirects=False,
        timeout=30,
    )
    if resp.status_code != 302 or "sessionid" not in web.cookies:
        raise LabelStudioError(f"web login failed: HTTP {resp.status_code}")
    resp = web.post(
        f"{url}/api/token/",
        headers={"X-CSRFToken": web.cookies.get("csrftoken") or csrf, "Referer": login},
        timeout=30,
    )
    if resp.status_code != 201:
        raise LabelStudioError(f"creating a PAT failed: HTTP {resp.status_code} {resp.text[:200]}")
    return str(resp.json()["token"])


def _launch(data_dir: Path, legacy: str, timeout_s: float) -> tuple[str, subprocess.Popen[bytes], Path]:
    """Start Label Studio on a free loopback port with `data_dir`; wait until healthy."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        ML_BLOCK_LOCAL_IP="false",
        # Label Studio gives /predict 100 s; SAM2 on a loaded 2-core test machine (several
        # encodes for a video track) may need longer. Production keeps Label Studio's default.
        ML_TIMEOUT_PREDICT="600",
        SSRF_PROTECTION_ENABLED="false",
        COLLECT_ANALYTICS="false",
        HOME=str(data_dir.parent),  # keeps its config and caches out of the real home
    )
    log_path = data_dir.parent / "label-studio.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                str(LS_BIN),
                "start",
                "--no-browser",
                "--internal-host",
                "127.0.0.1",
                "-p",
                str(port),
                "--username",
                ADMIN_EMAIL,
                "--password",
                ADMIN_PASSWORD,
                "--user-token",
                legacy,
            ],
            cwd=data_dir.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as a whole
        )
    try:
        _wait_healthy(url, proc, log_path, timeout_s)
    except BaseException:
        _stop(proc)
        raise
    return url, proc, log_path


def _template() -> Path:
    """A migrated data directory with the admin user, made once per `.lsvenv`.

    The first start runs ~300 migrations (about a minute on an idle 2-core machine); a copy
    of the result starts in seconds, so every session gets a fresh database cheaply.
    """
    if (TEMPLATE / "ready").exists():
        return TEMPLATE
    for stale in TEMPLATE.parent.glob(f"{TEMPLATE.name}.*"):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    building = TEMPLATE.with_name(f"{TEMPLATE.name}.{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    legacy = secrets.token_hex(20)
    _url, proc, _log = _launch(building / "data", legacy, FIRST_START_TIMEOUT_S)
    _stop(proc)
    (building / "legacy_token").write_text(legacy)
    (building / "ready").touch()
    shutil.rmtree(TEMPLATE, ignore_errors=True)
    building.rename(TEMPLATE)
    return TEMPLATE


@contextmanager
def start_label_studio(workdir: Path) -> Iterator[LabelStudioServer]:
    """Start Label Studio from `.lsvenv` on a free loopback port; stop it on exit."""
    if not LS_BIN.exists():
        raise LabelStudioError(f"{LS_BIN} is missing; run ./dev.sh test (it installs .lsvenv)")
    template = _template()
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template / "data", workdir / "data")
    legacy = (template / "legacy_token").read_text().strip()
    url, proc, log_path = _launch(workdir / "data", legacy, START_TIMEOUT_S)
    try:
        yield LabelStudioServer(url, create_pat(url), legacy, log_path)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
