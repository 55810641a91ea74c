"""What a protocol adapter rejects. Statuses live in `function.service.errors.STATUS`."""

from __future__ import annotations

from function.core.errors import ExpectedError


class BadRequest(ExpectedError):
    """The request is malformed, or asks for something refused (a field, an option, a host)."""


class InvalidInput(ExpectedError):
    """The request is well formed but cannot be served (no image in the task, no output tag)."""


class UpstreamFailed(ExpectedError):
    """A server this function depends on (Label Studio, an image host) failed or is unreachable."""


class UpstreamTimeout(ExpectedError):
    """A server this function depends on did not answer in time."""
