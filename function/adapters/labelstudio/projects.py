"""Per-project state from /setup, shared by every worker process of a pod through files.

Nuclio runs each worker as its own process and Label Studio's /setup reaches only one of
them, so a dict in memory is not enough: each project is one small JSON file, written
atomically and re-read when its modification time changes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .interface import LabelConfig, parse_label_config
from .params import Options, parse_options

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectState:
    label_config: str
    extra_params: dict[str, Any]


def project_id(value: Any) -> str | None:
    """`"<id>.<created_at timestamp>"` -> `"<id>"`; ints accepted; None when absent."""
    if value is None or value == "":
        return None
    text = str(value).split(".", 1)[0]
    return text if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text) else None


class ProjectStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[str, tuple[float, ProjectState]] = {}
        self._lock = threading.Lock()

    def _path(self, pid: str) -> Path:
        return self.directory / f"{pid}.json"

    def save(self, pid: str, state: ProjectState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"label_config": state.label_config, "extra_params": state.extra_params})
        path = self._path(pid)
        if path.exists() and path.read_text() == payload:
            return  # /setup is called very often with the same body: no write, same mtime
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{pid}.")
        with os.fdopen(fd, "w") as f:
            f.write(payload)
        os.replace(tmp, path)
        with self._lock:
            self._cache.pop(pid, None)

    def get(self, pid: str | None) -> ProjectState | None:
        if pid is None:
            return None
        path = self._path(pid)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        with self._lock:
            hit = self._cache.get(pid)
            if hit and hit[0] == mtime:
                return hit[1]
        try:
            raw = json.loads(path.read_text())
            state = ProjectState(str(raw.get("label_config") or ""), dict(raw.get("extra_params") or {}))
        except (OSError, ValueError, TypeError):
            log.warning("project %s: unreadable stored state, ignoring it", pid)
            return None
        with self._lock:
            self._cache[pid] = (mtime, state)
        return state


class Projects:
    """What a project asked for at /setup (label config, options), else the deployment's defaults."""

    def __init__(self, store: ProjectStore, default_extra_params: Mapping[str, Any]) -> None:
        self.store = store
        self.default_extra_params = dict(default_extra_params)

    def options(self, pid: str | None) -> Options:
        stored = self.store.get(pid)
        return parse_options(stored.extra_params if stored else dict(self.default_extra_params))

    def label_config(self, pid: str | None, xml: Any = None) -> LabelConfig | None:
        """The config a request carries, else the one stored at /setup."""
        config = parse_label_config(xml) if isinstance(xml, str) else None
        stored = self.store.get(pid)
        if config is None and stored is not None:
            config = parse_label_config(stored.label_config)
        return config
