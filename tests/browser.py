"""Headless Debian Chromium driven over the Chrome DevTools Protocol (a websocket, no driver)."""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
)


def chromium_or_skip() -> str:
    """The chromium binary; a skip where it is not installed, a failure in CI (which installs it)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed, but CI must run the browser test (.ci/run installs it)")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")


class Page:
    """One tab: `send` a CDP command and get its result; events are kept in `events`."""

    def __init__(self, ws_url: str, timeout_s: float = 60.0) -> None:
        import websocket

        # Chromium refuses websocket clients that send an Origin header it does not allow.
        self.ws = websocket.create_connection(ws_url, timeout=timeout_s, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60.0) -> Any:
        """Poll until truthy; errors count as false (the page may still be navigating)."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                value = self.js(expression)
            except RuntimeError as exc:
                value, last = None, str(exc)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"still false after {timeout_s} s: {expression} {last}")

    def mouse(self, kind: str, x: float, y: float, button: str = "left") -> None:
        buttons = {"left": 1, "right": 2}[button] if kind != "mouseReleased" else 0
        self.send(
            "Input.dispatchMouseEvent", type=kind, x=x, y=y, button=button, buttons=buttons, clickCount=1
        )

    def click(self, x: float, y: float, button: str = "left") -> None:
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        self.mouse("mousePressed", x, y, button)
        self.mouse("mouseReleased", x, y, button)

    def screenshot(self) -> np.ndarray:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


@contextmanager
def chromium(binary: str, width: int = 1280, height: int = 800) -> Iterator[Page]:
    """A fresh headless Chromium with a temporary profile; the profile is removed only after every
    Chromium process has exited (its helpers keep writing into it for a moment after the browser
    process is gone, and a removal racing them fails with "Directory not empty")."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: the browser and all its helpers
        )
        try:
            port = _devtools_port(proc)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
                targets = json.load(resp)
            page = Page(next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"))
            page.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            try:
                yield page
            finally:
                page.ws.close()
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[str], timeout_s: float = 10.0) -> None:
    """End Chromium and wait until no process of its group is left.

    SIGTERM lets the browser shut down cleanly; if anything of it (the browser, or a helper that
    outlived it) still runs after `timeout_s`, the whole group gets SIGKILL."""
    group = proc.pid  # start_new_session: the group id is the browser's pid
    proc.terminate()
    if _group_exited(proc, group, timeout_s):
        return
    with suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    if not _group_exited(proc, group, timeout_s):
        raise RuntimeError(f"chromium processes {_live_members(group)} survived SIGKILL")


def _group_exited(proc: subprocess.Popen[str], group: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        proc.poll()  # reap the browser process itself
        if proc.returncode is not None and not _live_members(group):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def _live_members(group: int) -> list[int]:
    """Pids of the processes in process group `group` that are still running (not zombies)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited while we looked
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state not in ("Z", "X"):
            pids.append(int(stat.parent.name))
    return pids


def _devtools_port(proc: subprocess.Popen[str], timeout_s: float = 60.0) -> int:
    """Chromium prints `DevTools listening on ws://127.0.0.1:PORT/...` once it is ready.

    A thread keeps draining stderr afterwards, so a chatty browser never blocks on a full pipe."""
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        if match:
            return int(match.group(1))
    raise RuntimeError("chromium did not start:\n" + "".join(seen[-20:]))
