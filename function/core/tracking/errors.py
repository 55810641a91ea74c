"""Tracking's own failures, in domain words. Each names what the client can do about it;
`function.service.errors.STATUS` gives their HTTP statuses."""

from __future__ import annotations

from ..errors import ExpectedError

EXPIRED_MESSAGE = "tracking state expired: start tracking again"


class TrackingExpired(ExpectedError):
    """The session or step a client refers to is unknown here, expired or evicted."""

    def __init__(self, message: str = EXPIRED_MESSAGE) -> None:
        super().__init__(message)


class TrackingLimit(ExpectedError):
    """A request asks for more than a tracking limit allows (objects, frames)."""


class TooManySessions(ExpectedError):
    """Every session slot of this replica is in active use."""


class VideoTooLarge(ExpectedError):
    """A video is over the byte, resolution or frame-count limit (checked from its header)."""


class VideoUnreadable(ExpectedError):
    """The bytes are not a video with a decodable video stream."""


class FrameMismatch(ExpectedError):
    """A frame does not fit the track it continues (another size than the first frame)."""
