"""Small field parsers shared by the protocol adapters, one home each. Every error names the
field at fault first: `context.result[0].value.x: must be a number, got a string`."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

from function.core.detector import DetectorNotConfigured, TextPromptError
from function.core.errors import ExpectedError
from function.env import parse_flag

from .errors import InvalidInput

_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}


def kind(value: Any) -> str:
    """How a JSON value reads in an error message.

    >>> kind(None), kind({}), kind(True), kind(1.5)
    ('null', 'an object', 'a boolean', 'a number')
    """
    if value is None:
        return "null"
    return "an object" if isinstance(value, dict) else _KINDS.get(type(value), type(value).__name__)


def finite_number(
    value: Any,
    where: str,
    *,
    lo: float = -math.inf,
    hi: float = math.inf,
    error: type[ExpectedError] = InvalidInput,
) -> float:
    """A JSON number (never a boolean) that is finite and within [lo, hi].

    >>> finite_number(3, "x")
    3.0
    >>> finite_number(float("nan"), "x")
    Traceback (most recent call last):
    function.adapters.errors.InvalidInput: x: must be a finite number
    """
    # bool is an int in Python, but `true` is no number.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{where}: must be a number, got {kind(value)}")
    if not math.isfinite(value):
        raise error(f"{where}: must be a finite number")
    if not lo <= value <= hi:
        raise error(f"{where}: must be between {lo:g} and {hi:g}, got {value!r}")
    return float(value)


def flag(value: Any, where: str, error: type[ExpectedError] = InvalidInput) -> bool:
    """JSON true/false, 1/0, or a flag word ("true", "off", ...) as settings accept them.

    >>> flag("False", "is_positive"), flag(1, "is_positive")
    (False, True)
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    parsed = parse_flag(value) if isinstance(value, str) else None
    if parsed is None:
        raise error(f"{where}: must be a boolean, got {value!r}")
    return parsed


@contextlib.contextmanager
def text_prompt_field(field: str) -> Iterator[None]:
    """Name the request `field` a text prompt problem came from (the core's messages name none).

    >>> with text_prompt_field("text_prompt"):
    ...     raise TextPromptError("is empty")
    Traceback (most recent call last):
    function.adapters.errors.InvalidInput: text_prompt: is empty
    """
    try:
        yield
    except (TextPromptError, DetectorNotConfigured) as exc:
        raise InvalidInput(f"{field}: {exc.message}") from None
