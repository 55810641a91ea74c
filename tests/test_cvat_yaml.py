"""The CVAT function specs, read the way Nuclio stores them and CVAT then parses them.

Nuclio keeps every annotation as a string; CVAT (`lambda_manager/views.py::LambdaFunction`)
then does `int(version)`, `json.loads(spec or "[]")`, `bool(startswith_box)` and reads
`spec.description` unconditionally (cvat-contract.md §1, §7, §10.1). `cvat_problems` lists
what would break CVAT's discovery or the Interact button; the tests below also feed it broken
specs, so a check that could never fail would show up here.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import function
import handler
from function.settings import KNOWN_ENV

ROOT = Path(__file__).resolve().parent.parent
CVAT_DIR = ROOT / "deploy" / "cvat"
FILES = {"cpu": CVAT_DIR / "function.yaml", "gpu": CVAT_DIR / "function-gpu.yaml"}
SAM1_ID = "pth-facebookresearch-sam-vit-h"
BOOLEAN_ANNOTATIONS = ("startswith_box", "startswith_box_optional")
MIN_BODY_BYTES = 64 * 2**20


def load(kind: str) -> dict[str, Any]:
    doc = yaml.safe_load(FILES[kind].read_text())
    assert isinstance(doc, dict)
    return doc


def go_string(value: Any) -> str:
    """How a YAML scalar ends up in Nuclio's `map[string]string` of annotations."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def as_stored_by_nuclio(doc: dict[str, Any]) -> dict[str, Any]:
    stored = copy.deepcopy(doc)
    annotations = stored["metadata"].get("annotations") or {}
    stored["metadata"]["annotations"] = {k: go_string(v) for k, v in annotations.items()}
    return stored


def cvat_function(data: dict[str, Any]) -> dict[str, Any]:
    """CVAT's parse of one Nuclio function record (the fields its REST view exposes)."""
    meta = data["metadata"]
    ann = meta.get("annotations", {})
    kind = ann.get("type")
    if kind not in ("detector", "interactor", "reid", "tracker"):
        raise ValueError(f"unknown function type {kind!r}")
    labels = json.loads(ann.get("spec") or "[]")
    names = [label["name"] for label in labels]
    if len(set(names)) != len(names):
        raise ValueError("duplicate label names")
    return {
        "id": meta["name"],
        "kind": kind,
        "labels_v2": labels,
        "description": data["spec"]["description"],  # a KeyError in CVAT if missing
        "name": ann.get("name", meta["name"]),
        "version": int(ann.get("version", "1")),
        "min_pos_points": int(ann.get("min_pos_points", 1)),
        "min_neg_points": int(ann.get("min_neg_points", -1)),
        "startswith_box": bool(ann.get("startswith_box", False)),
        "startswith_box_optional": bool(ann.get("startswith_box_optional", False)),
        "help_message": ann.get("help_message", ""),
        "animated_gif": ann.get("animated_gif", ""),
    }


def go_duration_seconds(value: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a Go duration: {value!r}")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def cvat_problems(doc: dict[str, Any]) -> list[str]:
    """What would stop CVAT from listing the function as a usable SAM2 interactor."""
    problems: list[str] = []
    stored = as_stored_by_nuclio(doc)
    ann = stored["metadata"]["annotations"]
    for key in BOOLEAN_ANNOTATIONS:
        if key in ann and ann[key] in ("false", "False", "0", ""):
            problems.append(f"{key}={ann[key]!r} reads as true in CVAT; leave it out instead")
    problems += [f"{k}={v!r} looks like a false boolean" for k, v in ann.items() if v in ("false", "False")]
    if stored["metadata"].get("name") == SAM1_ID:
        problems.append("the SAM1 id is intercepted by CVAT's browser-side SAM plugin")
    try:
        view = cvat_function(stored)
    except (KeyError, ValueError, TypeError) as exc:
        return [*problems, f"CVAT cannot parse it: {exc!r}"]
    if view["kind"] != "interactor":
        problems.append(f"type is {view['kind']!r}, not interactor")
    if view["version"] < 2:
        problems.append("version < 2 disables the Interact button")
    if not view["description"]:
        problems.append("spec.description is empty")
    if view["startswith_box"]:
        problems.append("startswith_box forces a box first (and drops pos_points[0:2] into it)")
    return problems


# -- the shipped files -------------------------------------------------------------------


@pytest.mark.parametrize("kind", FILES)
def test_cvat_parses_the_function_as_a_sam2_interactor(kind: str) -> None:
    doc = load(kind)
    assert cvat_problems(doc) == []
    view = cvat_function(as_stored_by_nuclio(doc))
    assert view["kind"] == "interactor" and view["version"] >= 2
    assert view["id"] != SAM1_ID and view["name"] != SAM1_ID
    assert view["labels_v2"] == []  # an interactor returns geometry only
    assert view["min_pos_points"] == 0 and view["min_neg_points"] == 0
    assert view["startswith_box_optional"] is True and view["startswith_box"] is False
    assert view["description"] and view["help_message"]
    assert "animated_gif" in doc["metadata"]["annotations"]


@pytest.mark.parametrize("kind", FILES)
def test_annotations_are_written_as_strings(kind: str) -> None:
    """Not relying on Nuclio's coercion: what the file says is what CVAT reads."""
    annotations = load(kind)["metadata"]["annotations"]
    assert all(isinstance(v, str) for v in annotations.values()), annotations
    assert "startswith_box" not in annotations  # the only way to write it off


@pytest.mark.parametrize("kind", FILES)
def test_runtime_limits_fit_cvat_calls(kind: str) -> None:
    spec = load(kind)["spec"]
    assert spec["runtime"] == "python:3.11"
    assert go_duration_seconds(spec["eventTimeout"]) >= 30
    assert int(spec["readinessTimeoutSeconds"]) >= 120
    (trigger_key, trigger), *others = spec["triggers"].items()
    assert others == [] and trigger["kind"] == "http" and trigger["name"] == trigger_key
    assert trigger["numWorkers"] == 1
    assert "maxWorkers" not in trigger  # deprecated in Nuclio
    assert int(trigger["attributes"]["maxRequestBodySize"]) >= MIN_BODY_BYTES


def test_gpu_file_asks_for_a_gpu_and_the_cpu_file_does_not() -> None:
    gpu, cpu = load("gpu")["spec"], load("cpu")["spec"]
    assert int(gpu["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert "nvidia.com/gpu" not in (cpu.get("resources") or {}).get("limits", {})
    env = {kind: {e["name"]: e["value"] for e in load(kind)["spec"]["env"]} for kind in FILES}
    assert env["cpu"]["DEVICE"] == "cpu" and env["gpu"]["DEVICE"].startswith("cuda")


def test_both_files_are_the_same_function() -> None:
    """Alternatives for one CVAT id: deploying the other replaces it, CVAT sees one interactor."""
    assert load("cpu")["metadata"]["name"] == load("gpu")["metadata"]["name"]
    assert load("cpu")["metadata"]["annotations"] == load("gpu")["metadata"]["annotations"]


@pytest.mark.parametrize("kind", FILES)
def test_handler_env_and_image_match_this_repository(kind: str) -> None:
    spec = load(kind)["spec"]
    module, _, name = spec["handler"].partition(":")
    assert getattr(importlib.import_module(module), name) is handler.handler
    env = spec["env"]
    assert all(e["name"] in KNOWN_ENV for e in env), [e["name"] for e in env]
    assert all(isinstance(e["value"], str) for e in env)
    image, _, tag = spec["image"].rpartition(":")
    assert image.endswith("sam2-nuclio") and tag == function.__version__


# -- the checks themselves catch what breaks CVAT ----------------------------------------


def _broken(change: str) -> dict[str, Any]:
    doc = load("gpu")
    ann, spec = doc["metadata"]["annotations"], doc["spec"]
    if change == "startswith_box: false":
        ann["startswith_box"] = False
    elif change == "startswith_box_optional: 'False'":
        ann["startswith_box_optional"] = "False"
    elif change == "version: 1":
        ann["version"] = 1
    elif change == "version: two":
        ann["version"] = "two"
    elif change == "spec: not json":
        ann["spec"] = "[{name: object}]"
    elif change == "duplicate labels":
        ann["spec"] = '[{"name": "a"}, {"name": "a"}]'
    elif change == "no description":
        del spec["description"]
    elif change == "detector":
        ann["type"] = "detector"
    elif change == "SAM1 id":
        doc["metadata"]["name"] = SAM1_ID
    elif change == "min_pos_points: many":
        ann["min_pos_points"] = "many"
    return doc


@pytest.mark.parametrize(
    "change",
    [
        "startswith_box: false",
        "startswith_box_optional: 'False'",
        "version: 1",
        "version: two",
        "spec: not json",
        "duplicate labels",
        "no description",
        "detector",
        "SAM1 id",
        "min_pos_points: many",
    ],
)
def test_the_checks_reject_specs_that_break_cvat(change: str) -> None:
    assert cvat_problems(_broken(change)), change


def test_empty_yaml_spec_annotation_reads_as_no_labels() -> None:
    doc = load("gpu")
    doc["metadata"]["annotations"]["spec"] = None  # `spec:` with nothing after it
    assert cvat_function(as_stored_by_nuclio(doc))["labels_v2"] == []


def test_go_durations() -> None:
    assert go_duration_seconds("60s") == 60
    assert go_duration_seconds("1m30s") == 90
    with pytest.raises(ValueError):
        go_duration_seconds("60")


# -- remote mode: the same CVAT interactor, forwarded to a GPU box ---------------------------

REMOTE = CVAT_DIR / "function-remote.yaml"


def test_remote_file_is_the_same_interactor_for_cvat() -> None:
    doc = yaml.safe_load(REMOTE.read_text())
    assert cvat_problems(doc) == []
    assert doc["metadata"]["name"] == load("cpu")["metadata"]["name"]
    assert doc["metadata"]["annotations"] == load("cpu")["metadata"]["annotations"]


def test_remote_file_runs_the_proxy_image_with_an_upstream() -> None:
    spec = yaml.safe_load(REMOTE.read_text())["spec"]
    module, _, name = spec["handler"].partition(":")
    assert getattr(importlib.import_module(module), name) is handler.handler
    env = {e["name"]: e for e in spec["env"]}
    assert set(env) <= set(KNOWN_ENV)
    assert env["UPSTREAM_URL"]["value"].startswith("http")
    assert "DEVICE" not in env and "MODEL_SIZE" not in env  # no model here
    assert "secretKeyRef" in env["UPSTREAM_PASS"]["valueFrom"]
    image, _, tag = spec["image"].rpartition(":")
    assert image.endswith("sam2-nuclio-remote") and tag == function.__version__
    # The proxy answers 504 (UPSTREAM_TIMEOUT_S) before Nuclio's eventTimeout cuts the call.
    assert float(env["UPSTREAM_TIMEOUT_S"]["value"]) < go_duration_seconds(spec["eventTimeout"])
    assert int(spec["triggers"]["http"]["attributes"]["maxRequestBodySize"]) >= MIN_BODY_BYTES
