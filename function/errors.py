"""Errors that carry the HTTP status they should be answered with."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class HttpError(Exception):
    status = 500

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(HttpError):
    status = 400


class Unauthorized(HttpError):
    status = 401


class NotFound(HttpError):
    status = 404


class MethodNotAllowed(HttpError):
    status = 405


class PayloadTooLarge(HttpError):
    status = 413


class UnsupportedMedia(HttpError):
    status = 415


class Unprocessable(HttpError):
    status = 422


class BadGateway(HttpError):
    """An upstream (Label Studio, an image host) failed."""

    status = 502


class ServiceUnavailable(HttpError):
    status = 503


class GatewayTimeout(HttpError):
    status = 504


@contextlib.contextmanager
def text_prompt_errors(field: str) -> Iterator[None]:
    """Text prompt problems (core's `TextPromptError`, `DetectorNotConfigured`) -> 422 naming
    the request `field` they came from."""
    from .core.detector import DetectorNotConfigured, TextPromptError

    try:
        yield
    except TextPromptError as exc:
        raise Unprocessable(f"{field}: {exc.message}") from None
    except DetectorNotConfigured as exc:
        raise Unprocessable(f"{field}: {exc.message}") from None
