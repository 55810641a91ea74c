"""A real redis-server (Debian's package) on a free loopback port, for the shared-tier tests.

Skipped with a reason when redis-server is missing on a developer machine; under CI it must run
(`.ci/run` installs it), so there it fails instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class RedisServer:
    """`start()`/`stop()` it as often as a test needs; the port stays the same."""

    def __init__(self, workdir: Path, maxmemory: str = "256mb") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.maxmemory = maxmemory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen(
            [
                binary,
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--maxmemory", self.maxmemory, "--maxmemory-policy", "allkeys-lru",
                "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "warning",
                "--enable-debug-command", "local",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)


@contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        reason = "redis-server missing: apt-get install redis-server (.ci/run does)"
        if in_ci():
            pytest.fail(f"CI must run the shared-tier tests: {reason}")
        pytest.skip(reason)
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
