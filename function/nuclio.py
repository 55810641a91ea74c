"""Glue between Python logging and Nuclio's context.logger."""

from __future__ import annotations

import logging
import threading
from typing import Any

from .redact import Redactor, install
from .settings import Settings


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
