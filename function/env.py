"""Reading environment variables: one error type that names the variable at fault, one table
of boolean words, typed readers, and the model-config names the variables accept."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path

# SAM2.0 and SAM2.1 config names shipped inside the sam2 package, by short name.
_SHORT_CONFIG = re.compile(r"^(sam2(?:\.1)?)_hiera_(t|s|b\+|l)\.yaml$")
_CHECKPOINT_SIZE = re.compile(r"(sam2(?:\.1)?)_hiera_(tiny|small|base_plus|large)")
_SIZE_LETTER = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}

_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


def parse_flag(text: str) -> bool | None:
    """The one table of boolean words (environment, Label Studio fields, probe files).

    >>> parse_flag(" Yes"), parse_flag("0"), parse_flag("maybe")
    (True, False, None)
    """
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    return None


class SettingsError(ValueError):
    """An environment variable has a value this function cannot use."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


def normalize_model_config(value: str) -> str:
    """Accept `configs/sam2.1/sam2.1_hiera_t.yaml`, `sam2.1_hiera_t.yaml`, `sam2_hiera_l.yaml`."""
    name = value.strip()
    if name.startswith("configs/"):
        return name
    base = name.rsplit("/", 1)[-1]
    if not base.endswith(".yaml"):
        base += ".yaml"
    m = _SHORT_CONFIG.match(base)
    if not m:
        raise SettingsError(
            "MODEL_CONFIG",
            f"unknown config {value!r}; use e.g. sam2.1_hiera_t.yaml or configs/sam2.1/sam2.1_hiera_l.yaml",
        )
    return f"configs/{m.group(1)}/{base}"


def config_for_checkpoint(checkpoint: Path) -> str:
    m = _CHECKPOINT_SIZE.search(checkpoint.name)
    if not m:
        raise SettingsError(
            "MODEL_CONFIG",
            f"cannot tell the model config from checkpoint name {checkpoint.name!r}; set MODEL_CONFIG",
        )
    family, size = m.groups()
    return f"configs/{family}/{family}_hiera_{_SIZE_LETTER[size]}.yaml"


class EnvReader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str = "") -> str:
        return (self.env.get(name) or default).strip()

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return Path(value).expanduser() if value else None

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.text(name, default).lower()
        if value and value not in allowed:
            raise SettingsError(name, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.text(name)
        if not value:
            return default
        parsed = parse_flag(value)
        if parsed is None:
            raise SettingsError(name, f"must be true or false, got {value.lower()!r}")
        return parsed

    def integer(self, name: str, default: int, minimum: int) -> int:
        value = self.text(name)
        if not value:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(name, f"must be an integer, got {value!r}") from None
        if number < minimum:
            raise SettingsError(name, f"must be >= {minimum}, got {number}")
        return number

    def fraction(self, name: str, default: float) -> float:
        return self._float(name, default, lambda x: 0.0 <= x <= 1.0, "a number between 0 and 1")

    def number(self, name: str, default: float) -> float:
        return self._float(name, default, lambda x: 0.0 < x < math.inf, "a positive number")

    def _float(self, name: str, default: float, ok: Callable[[float], bool], what: str) -> float:
        value = self.text(name)
        if not value:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(name, f"must be {what}, got {value!r}") from None
        if not ok(number):  # NaN fails every comparison, so it is refused too
            raise SettingsError(name, f"must be {what}, got {value!r}")
        return number
