"""Transport-neutral request/reply and the checks every front end shares (stdlib only).

Kept free of the model and its dependencies so that the remote-mode proxy (service/proxy.py)
can use them in an image without torch, numpy or OpenCV.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: Any = None  # dict/list (already JSON), bytes/str (raw) or None
    headers: Mapping[str, str] = field(default_factory=dict)
    query: str = ""  # urlencoded, without "?" (the local server and Nuclio keep it apart)

    def header(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lower:
                return value
        return None


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # a JSON object; a list only for CVAT's detector
    headers: dict[str, str] = field(default_factory=dict)
    raw: str | None = None  # JSON text passed through as is (the proxy), instead of `body`

    @property
    def text(self) -> str:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.body, allow_nan=False, separators=(",", ":"))


def route_name(path: str) -> str:
    """Last path segment, so `/prefix/predict/` routes like `/predict` behind an ingress."""
    return path.rstrip("/").rsplit("/", 1)[-1].lower() if path.strip("/") else ""


def basic_auth_ok(header: str | None, user: str, password: str) -> bool:
    """Whether an `Authorization` header carries exactly these Basic credentials."""
    scheme, _, encoded = (header or "").partition(" ")
    try:
        got_user, _, got_password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        got_user = got_password = ""
    return (
        scheme.lower() == "basic"
        and hmac.compare_digest(got_user.encode(), user.encode())
        and hmac.compare_digest(got_password.encode(), password.encode())
    )
