"""One table from every expected error to the HTTP status it is answered with."""

from __future__ import annotations

from function.adapters.errors import BadRequest, InvalidInput, UpstreamFailed, UpstreamTimeout
from function.core.detector import DetectorNotConfigured
from function.core.errors import (
    ExpectedError,
    ImageTooLarge,
    ImageUnreadable,
    InvalidPrompt,
    OutOfMemory,
    UnsupportedView,
)
from function.core.tracking.errors import (
    FrameMismatch,
    TooManySessions,
    TrackingExpired,
    TrackingLimit,
    VideoTooLarge,
    VideoUnreadable,
)


class Unauthorized(ExpectedError):
    """Basic auth is on and the request does not carry the right credentials."""


class NotFound(ExpectedError):
    """No route for the path."""


class MethodNotAllowed(ExpectedError):
    """The route exists but not for this method."""


class TrackingUnavailable(ExpectedError):
    """A tracking call reached a function built without a model that can track."""


STATUS: dict[type[ExpectedError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    NotFound: 404,
    MethodNotAllowed: 405,
    TrackingExpired: 410,  # "start tracking again": the session is gone, not the route
    VideoTooLarge: 413,
    ImageTooLarge: 413,
    InvalidInput: 422,
    InvalidPrompt: 422,
    DetectorNotConfigured: 422,
    ImageUnreadable: 422,
    UnsupportedView: 422,
    TrackingLimit: 422,
    FrameMismatch: 422,
    VideoUnreadable: 422,
    UpstreamFailed: 502,
    OutOfMemory: 503,
    TooManySessions: 503,
    TrackingUnavailable: 503,
    UpstreamTimeout: 504,
}


def status_for(exc: ExpectedError) -> int:
    """The status of the nearest class in `exc`'s hierarchy that the table names; 500 if none."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500
