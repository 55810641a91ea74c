"""A small model of a multi-stage Dockerfile, built with dockerfile_parse: stages with their
ARG-substituted base image, alias, instructions, and the ENV they inherit from earlier stages."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockerfile_parse import DockerfileParser


@dataclass
class Stage:
    image: str  # ARG-substituted image, or the alias of an earlier stage
    alias: str
    instructions: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)

    def values(self, instruction: str) -> list[str]:
        return [i["value"] for i in self.instructions if i["instruction"] == instruction]


@dataclass
class Dockerfile:
    stages: list[Stage]
    global_args: dict[str, str]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, alias: str) -> Stage:
        return next(s for s in self.stages if s.alias == alias)

    def arg_default(self, name: str) -> str:
        return self.global_args[name]


def _assignments(value: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(value) if "=" in token)


def parse_dockerfile(directory: Path) -> Dockerfile:
    parser = DockerfileParser(path=str(directory))
    images = iter(parser.parent_images)  # FROM images with ARG defaults substituted
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for instr in parser.structure:
        kind, value = instr["instruction"], instr["value"]
        if kind == "FROM":
            alias = value.split()[-1] if re.search(r"\sAS\s", value, re.I) else ""
            image = next(images)
            parent = next((s for s in stages if s.alias == image), None)
            stage = Stage(image, alias, env=dict(parent.env) if parent else {})
            stages.append(stage)
        elif not stages:
            if kind == "ARG":
                global_args |= _assignments(value)
        else:
            stage.instructions.append(instr)
            if kind == "ENV":
                stage.env |= _assignments(value)
            elif kind == "ARG":
                stage.args |= _assignments(value)
    return Dockerfile(stages, global_args)


def copies_from(stage: Stage, alias: str) -> list[tuple[str, str]]:
    pairs = []
    for value in stage.values("COPY"):
        parts = value.split()
        if f"--from={alias}" in parts:
            paths = [p for p in parts if not p.startswith("--")]
            pairs.append((paths[0], paths[-1]))
    return pairs


def copy_dests(stage: Stage, source: str) -> list[str]:
    return [v.split()[-1] for v in stage.values("COPY") if not v.startswith("--") and v.split()[0] == source]
