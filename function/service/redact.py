"""Keep secrets out of logs and response bodies."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

# Credentials in headers and URLs, whatever their value.
_PATTERNS = (
    re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)((?:access_token|refresh|token|api_key|password)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,}]+"),
)


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[REDACTED]")
        text = _PATTERNS[0].sub(lambda m: f"{m.group(1)} [REDACTED]", text)
        return _PATTERNS[1].sub(lambda m: f"{m.group(1)}[REDACTED]", text)


def _redact_record(record: logging.LogRecord, redactor: Redactor) -> None:
    """Format the record once and redact the result, so no argument escapes."""
    message = record.getMessage()
    if record.exc_info:
        message += "\n" + logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
        record.exc_text = None
    record.msg, record.args = redactor(message), None


_plain_record_factory = logging.getLogRecordFactory()


def _redact_at_creation(redactor: Redactor) -> None:
    """Redact every record as it is made, so no handler (a library's DEBUG line with a token
    in its URL, a handler someone adds later) ever sees the raw text."""

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = _plain_record_factory(*args, **kwargs)
        _redact_record(record, redactor)
        return record

    logging.setLogRecordFactory(factory)


def install(redactor: Redactor, level: str, handler: logging.Handler | None = None) -> None:
    """Route the package's logs through `handler` (stderr by default), redacted.

    Redaction happens once, when a record is created, so the handler needs no filter."""
    _redact_at_creation(redactor)
    root = logging.getLogger()
    root.setLevel(level)
    if handler is None:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for old in [h for h in root.handlers if getattr(h, "_sam2_nuclio", False)]:
        root.removeHandler(old)
    handler._sam2_nuclio = True  # type: ignore[attr-defined]
    root.addHandler(handler)
