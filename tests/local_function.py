"""The local server on 127.0.0.1:<free port> around a ready-made App (e.g. one with FakeModel)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nuclio_sdk
import pytest

from function.service.app import App
from function.service.server import LocalServer, build_context
from function.tools.demo import demo_routes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # handler.py lives at the root
import handler

from .support import running


@contextmanager
def serve_app(app: App) -> Iterator[LocalServer]:
    """Serve `app` through handler.py exactly as `python -m function serve` does, demo page included."""
    context = nuclio_sdk.Context(nuclio_sdk.Logger(logging.WARNING, "test"), worker_id=0)
    context.user_data.app = app
    server = LocalServer(("127.0.0.1", 0), handler.handler, context, static_routes=demo_routes())
    with running(server):
        yield server


@contextmanager
def serve_function(env: dict[str, str]) -> Iterator[LocalServer]:
    """The real function as Nuclio starts it: handler.py's `init_context` reading `env` (on top of
    this process's environment, less the variables that would override it), served locally."""
    with pytest.MonkeyPatch.context() as mp:
        for key in ("LABEL_STUDIO_HOST", "LABEL_STUDIO_ACCESS_TOKEN", "MODEL_CONFIG", "MODEL_SIZE"):
            mp.delenv(key, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        context = build_context()
        handler.init_context(context)
        server = LocalServer(("127.0.0.1", 0), handler.handler, context)
    with running(server):
        yield server
