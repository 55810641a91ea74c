"""CVAT interactor adapter (filled in by the CVAT issue)."""

from __future__ import annotations

from typing import Any

from .errors import HttpError


class CvatInteractor:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def interact(self, body: dict[str, Any]) -> dict[str, Any]:
        raise HttpError("CVAT interactor not implemented yet", status=501)
