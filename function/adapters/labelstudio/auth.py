"""Credentials for Label Studio: a Personal Access Token exchanged for short-lived access
tokens, or a legacy token sent as is.

A PAT is a JWT refresh token. `POST {host}/api/token/refresh/ {"refresh": PAT}` returns an
access token valid ~5 minutes. It is cached until 30 s before it expires and refreshed under a
lock, so concurrent requests cause one refresh per token lifetime, and once more after a 401.
A failed refresh fails that request only; the next one tries again.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import requests

from ..errors import UpstreamFailed, UpstreamTimeout

REFRESH_LEEWAY_S = 30.0
FALLBACK_TTL_S = 240.0


def jwt_claims(token: str) -> dict[str, Any] | None:
    """Unverified JWT payload, or None if `token` is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, json.JSONDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def is_personal_access_token(token: str) -> bool:
    claims = jwt_claims(token)
    return bool(claims and claims.get("token_type") == "refresh")


class LabelStudioAuth:
    """Authorization headers for one Label Studio host."""

    def __init__(
        self,
        host: str,
        token: str,
        *,
        session: requests.Session | None = None,
        timeout_s: float = 10.0,
        verify: bool = True,
        clock: Any = time.time,
    ) -> None:
        self.host = host.rstrip("/")
        self._token = token
        self.is_pat = is_personal_access_token(token)
        self._session = session or requests.Session()
        self._timeout_s = timeout_s
        self._verify = verify
        self._clock = clock
        self._lock = threading.Lock()
        self._access: str | None = None
        self._access_expires = 0.0
        self.refresh_count = 0

    def headers(self) -> dict[str, str]:
        if not self.is_pat:
            return {"Authorization": f"Token {self._token}"}
        return {"Authorization": f"Bearer {self._access_token()}"}

    def invalidate(self, used_headers: dict[str, str]) -> bool:
        """After a 401: drop the access token that was used. True if a retry can help."""
        if not self.is_pat:
            return False
        with self._lock:
            if self._access and used_headers.get("Authorization") == f"Bearer {self._access}":
                self._access = None
        return True

    def _access_token(self) -> str:
        with self._lock:
            if self._access is None or self._clock() >= self._access_expires - REFRESH_LEEWAY_S:
                self._access, self._access_expires = self._refresh()
            return self._access

    def _refresh(self) -> tuple[str, float]:
        url = f"{self.host}/api/token/refresh/"
        try:
            resp = self._session.post(
                url, json={"refresh": self._token}, timeout=self._timeout_s, verify=self._verify
            )
        except requests.Timeout:
            raise UpstreamTimeout("Label Studio token refresh timed out") from None
        except requests.RequestException as exc:
            raise UpstreamFailed(
                f"Label Studio token refresh failed: cannot reach {self.host} ({type(exc).__name__})"
            ) from None
        if resp.status_code != 200:
            raise UpstreamFailed(
                f"Label Studio token refresh failed: HTTP {resp.status_code} "
                "(is LABEL_STUDIO_API_KEY a valid Personal Access Token?)"
            )
        try:
            access = resp.json()["access"]
        except (ValueError, KeyError, TypeError):
            access = None
        if not isinstance(access, str) or not access:
            raise UpstreamFailed("Label Studio token refresh returned no access token")
        self.refresh_count += 1
        exp = (jwt_claims(access) or {}).get("exp")
        now = self._clock()
        expires = float(exp) if isinstance(exp, (int, float)) else now + FALLBACK_TTL_S
        return access, expires
