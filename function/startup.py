"""Checks that turn a missing checkpoint into one clear sentence instead of a traceback."""

from __future__ import annotations

from pathlib import Path

from .checkpoints import CHECKPOINTS
from .settings import Settings


class CheckpointMissing(RuntimeError):
    pass


def require_checkpoint(settings: Settings) -> Path:
    path = settings.model_checkpoint
    if path is None:
        raise CheckpointMissing(
            f"MODEL_CHECKPOINT is not set and {settings.model_config} has no published "
            "SAM2.1 checkpoint; set MODEL_CHECKPOINT to a .pt file"
        )
    if path.is_file():
        return path
    size = next((c.size for c in CHECKPOINTS.values() if c.filename == path.name), None)
    hint = (
        f"run `python -m function download-checkpoint {size}`"
        if size
        else "set MODEL_CHECKPOINT to an existing SAM2 checkpoint file"
    )
    raise CheckpointMissing(f"checkpoint missing: {path} does not exist; {hint}")
