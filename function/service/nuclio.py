"""Nuclio glue: `init_context` builds the app once per worker, `handler` turns an event into a
`Request` and the `Reply` into a `context.Response`; logging goes to `context.logger`.

`handler.py` at the repository root (the file Nuclio loads) re-exports these two."""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from function.core.checkpoints import CheckpointMissing
from function.settings import Settings, SettingsError

from .messages import Reply, Request
from .redact import Redactor, install

if TYPE_CHECKING:
    from .app import App
    from .proxy import Proxy


class NuclioLogHandler(logging.Handler):
    """Forwards records to `context.logger` (which has debug/info/warn/error only)."""

    def __init__(self, logger: Any) -> None:
        super().__init__()
        self.logger = logger
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        # nuclio_sdk's Logger is itself a Python logger that propagates to the root logger
        # this handler sits on: without the guard every line would loop back here.
        if getattr(self._local, "busy", False):
            return
        self._local.busy = True
        try:
            text = f"{record.name}: {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self.logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.logger.warn(text)
            elif record.levelno >= logging.INFO:
                self.logger.info(text)
            else:
                self.logger.debug(text)
        except Exception:  # logging must never break a request
            self.handleError(record)
        finally:
            self._local.busy = False


def configure_logging(settings: Settings, handler: logging.Handler | None = None) -> None:
    install(Redactor(settings.secrets), settings.log_level, handler)
    logging.getLogger("function").setLevel(settings.log_level)
    # SAM2 logs an INFO line per set_image on the root logger: quiet unless DEBUG.
    if settings.log_level != "DEBUG":
        logging.getLogger().setLevel(logging.WARNING)


def init_context(context: Any) -> None:
    context.user_data.app = start(context)


def start(context: Any, settings: Settings | None = None) -> App | Proxy:
    """Settings from the environment (unless given), logging to `context.logger`, the app.

    With UPSTREAM_URL set, the remote-mode proxy: then nothing imports the model side (torch,
    numpy, OpenCV), which the slim image does not have."""
    try:
        settings = settings or Settings.from_env(os.environ)
        configure_logging(settings, NuclioLogHandler(context.logger))
        if settings.upstream_url:
            from .proxy import Proxy

            return Proxy(settings)
        from .compose import build_app

        return build_app(settings)
    except (SettingsError, CheckpointMissing) as exc:
        # The worker cannot start: say why in one line before Nuclio restarts it.
        context.logger.error(f"sam2-nuclio cannot start: {exc}")
        raise


def handler(context: Any, event: Any) -> Any:
    app: App | Proxy = context.user_data.app
    try:
        fields = getattr(event, "fields", None)
        query = urlencode(fields) if isinstance(fields, dict) and fields else ""
        request = Request(str(event.method), str(event.path), event.body, dict(event.headers or {}), query)
        reply: Reply = app.handle(request)
    except Exception:  # never let Nuclio answer with a traceback
        reply = app.error_reply(500, "internal error; see the function logs")
    return context.Response(
        body=reply.text,
        headers=reply.headers,
        content_type="application/json",
        status_code=reply.status,
    )
