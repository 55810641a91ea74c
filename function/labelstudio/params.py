"""`extra_params` from /setup -> validated per-project options."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest
from .interface import OUTPUT_TYPES


@dataclass(frozen=True)
class Options:
    return_type: str = "BrushLabels"

    @property
    def carries_label(self) -> bool:
        return self.return_type.endswith("Labels")


def decode_extra_params(value: Any) -> dict[str, Any]:
    """Object, JSON string, empty string or null -> dict; anything else is a 400."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BadRequest(
                f"extra_params must be valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
    if not isinstance(value, dict):
        raise BadRequest("extra_params must be a JSON object")
    return value


def parse_options(raw: dict[str, Any]) -> Options:
    unknown = sorted(set(raw) - {"return_format"})
    if unknown:
        raise BadRequest(f"extra_params: unsupported key(s): {', '.join(unknown)}")
    fmt = raw.get("return_format") or {}
    if not isinstance(fmt, dict):
        raise BadRequest("extra_params.return_format must be an object")
    kind = fmt.get("type", "BrushLabels")
    by_lower = {t.lower(): t for t in OUTPUT_TYPES}
    if not isinstance(kind, str) or kind.lower() not in by_lower:
        raise BadRequest(
            f"extra_params.return_format.type must be one of {', '.join(OUTPUT_TYPES)}, got {kind!r}"
        )
    return Options(return_type=by_lower[kind.lower()])
