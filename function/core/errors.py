"""What can go wrong in the domain, in domain words. No HTTP here: the service's table
(`function.service.errors.STATUS`) decides how each is answered."""

from __future__ import annotations


class ExpectedError(Exception):
    """A failure the caller can act on. `message` is safe to show a client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidPrompt(ExpectedError):
    """The points or box cannot be used on this image (outside it, empty, not finite, too many)."""


class ImageUnreadable(ExpectedError):
    """The bytes are not an image, or are truncated."""


class ImageTooLarge(ExpectedError):
    """The image is over a pixel or byte limit."""


class UnsupportedView(ExpectedError):
    """The requested resize or patch cannot be planned for this image and prompt."""


class ResizeNotPossible(UnsupportedView):
    """The resize target is larger than the image (only downscaling is supported)."""


class PatchTooSmall(UnsupportedView):
    """The prompt does not fit the patch and oversize patches are not allowed."""


class OutOfMemory(ExpectedError):
    """The accelerator ran out of memory even after the caches were trimmed."""
