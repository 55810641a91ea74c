"""Nuclio entry point: `init_context` builds the app once per worker; `handler` delegates."""

from __future__ import annotations

import os
from typing import Any

from function.app import App, Request
from function.core.detector import DetectorMissing
from function.nuclio import NuclioLogHandler, configure_logging
from function.settings import Settings, SettingsError
from function.startup import CheckpointMissing


def init_context(context: Any) -> None:
    try:
        settings = Settings.from_env(os.environ)
        configure_logging(settings, NuclioLogHandler(context.logger))
        context.user_data.app = App.create(settings)
    except (SettingsError, CheckpointMissing, DetectorMissing) as exc:
        # The worker cannot start: say why in one line before Nuclio restarts it.
        context.logger.error(f"sam2-nuclio cannot start: {exc}")
        raise


def handler(context: Any, event: Any) -> Any:
    app: App = context.user_data.app
    try:
        request = Request(str(event.method), str(event.path), event.body, dict(event.headers or {}))
        reply = app.handle(request)
    except Exception:  # never let Nuclio answer with a traceback
        reply = app.error_reply(500, "internal error; see the function logs")
    return context.Response(
        body=reply.text,
        headers=reply.headers,
        content_type="application/json",
        status_code=reply.status,
    )
