"""Nuclio's function-config rules (nuclio-runtime.md §7) and this project's, as pure checks.

Each check returns a list of problems (empty: fine), so one test reports everything wrong with a
file at once, and the same checks run on the configs deploy.sh renders per target.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import yaml

from function.settings import KNOWN_ENV, SECRET_ENV

ROOT = Path(__file__).resolve().parent.parent
ALLOWED_RUNTIMES = ("python:3.9", "python:3.10", "python:3.11")
_TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "status")
MIN_BODY_BYTES = 64 * 2**20
# Credentials: only ever from a Secret. BASIC_AUTH_USER is not secret in itself, but it sits in
# the same Secret as its password and deploy.sh refuses it in target files too.
CREDENTIAL_ENV = frozenset(SECRET_ENV)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)"
_DURATION_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
# Shapes real credentials have: JWTs (Label Studio PATs), long hex/base64 tokens.
_SECRET_SHAPES = (re.compile(r"eyJ[\w-]{10,}\.[\w-]{10,}"), re.compile(r"^[A-Za-z0-9+/_=-]{32,}$"))


def function_config_paths() -> list[Path]:
    """function.yaml at the root and every yaml under deploy/ (the CVAT ones included)."""
    found = [ROOT / "function.yaml"] if (ROOT / "function.yaml").exists() else []
    for pattern in ("*.yaml", "*.yml"):
        found += sorted((ROOT / "deploy").rglob(pattern))
    return [p for p in found if not is_kubernetes_manifest(p)]


def kubernetes_manifest_paths(kind: str = "Secret") -> list[Path]:
    """Plain Kubernetes manifests under deploy/ holding a document of `kind`."""
    return sorted(
        p
        for p in (ROOT / "deploy").rglob("*.y*ml")
        if is_kubernetes_manifest(p) and kind in manifest_kinds(p)
    )


def manifest_kinds(path: Path) -> set[str]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return {str(d.get("kind", "Function")) for d in docs if isinstance(d, dict)}


def is_kubernetes_manifest(path: Path) -> bool:
    """Not a Nuclio function config: Secrets, the Redis Deployment + Service, ..."""
    return bool(manifest_kinds(path) - {"Function", "NuclioFunction"})


def go_duration_seconds(text: str) -> float:
    """Parse a Go `time.ParseDuration` string like "120s" or "1m30s"; ValueError otherwise."""
    if not isinstance(text, str) or not re.fullmatch(f"(?:{_DURATION_PART})+", text):
        raise ValueError(f"not a Go duration: {text!r}")
    return sum(float(n) * _DURATION_SECONDS[u] for n, u in re.findall(_DURATION_PART, text))


def looks_like_secret(value: str) -> bool:
    return any(shape.search(value) for shape in _SECRET_SHAPES)


def resolve_handler(spec_handler: str) -> list[str]:
    """`module.sub:func` must import from the repository root and name a callable."""
    module_name, sep, func = spec_handler.partition(":")
    if not sep or not module_name or not func:
        return [f"spec.handler {spec_handler!r} is not module:function"]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return [f"spec.handler module {module_name!r} does not import: {exc}"]
    problems = []
    if not callable(getattr(module, func, None)):
        problems.append(f"spec.handler: {module_name} has no callable {func!r}")
    if not callable(getattr(module, "init_context", None)):
        problems.append(f"spec.handler: {module_name} has no init_context (the model loads there)")
    return problems


def env_problems(env: Any) -> list[str]:
    if not isinstance(env, list):
        return ["spec.env must be a list of {name, value | valueFrom}"]
    problems, seen = [], set()
    for entry in env:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            problems.append(f"env entry without a name: {entry!r}")
            continue
        if name not in KNOWN_ENV:
            problems.append(f"env {name}: not read by function/settings.py (KNOWN_ENV)")
        if name in seen:
            problems.append(f"env {name}: listed twice (which one wins depends on the platform)")
        seen.add(name)
        has_value, has_ref = "value" in entry, "valueFrom" in entry
        if has_value == has_ref:
            problems.append(f"env {name}: needs exactly one of value / valueFrom")
        if has_value and not isinstance(entry["value"], str):
            problems.append(f"env {name}: value {entry['value']!r} must be a quoted string")
        if name in CREDENTIAL_ENV and has_value and entry["value"] != "":
            problems.append(f"env {name}: a credential must come from valueFrom.secretKeyRef, not a literal")
        if has_ref and not isinstance((entry["valueFrom"] or {}).get("secretKeyRef"), dict):
            problems.append(f"env {name}: valueFrom must be a secretKeyRef")
        if has_value and isinstance(entry["value"], str) and looks_like_secret(entry["value"]):
            problems.append(f"env {name}: value looks like a credential")
    return problems


def trigger_problems(triggers: Any) -> list[str]:
    if not isinstance(triggers, dict) or not triggers:
        return ["spec.triggers: none (Nuclio would add a 4 MiB default-http trigger)"]
    problems, http = [], []
    for key, trigger in triggers.items():
        if not isinstance(trigger, dict):
            problems.append(f"trigger {key}: not a mapping")
            continue
        if trigger.get("name") != key:
            problems.append(f"trigger {key}: name {trigger.get('name')!r} must equal its key")
        if trigger.get("kind") == "http":
            http.append((key, trigger))
    if len(http) != 1:
        problems.append(f"exactly one HTTP trigger expected, found {len(http)}")
    for key, trigger in http:
        workers = trigger.get("numWorkers", 1)
        if not isinstance(workers, int) or not 1 <= workers <= 100000:
            problems.append(f"trigger {key}: numWorkers {workers!r} must be 1..100000")
        body = (trigger.get("attributes") or {}).get("maxRequestBodySize")
        if not isinstance(body, int) or body < MIN_BODY_BYTES:
            problems.append(f"trigger {key}: maxRequestBodySize {body!r} below 64 MiB (base64 images)")
    return problems


def scaling_problems(spec: dict[str, Any]) -> list[str]:
    problems = []
    low, high = spec.get("minReplicas"), spec.get("maxReplicas")
    for name, value in (("minReplicas", low), ("maxReplicas", high), ("replicas", spec.get("replicas"))):
        if value is not None and (not isinstance(value, int) or value < 0):
            problems.append(f"{name} {value!r} must be a non-negative integer")
    if low == 0 and high is None:
        problems.append("maxReplicas is required when minReplicas is 0")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        problems.append(f"minReplicas {low} > maxReplicas {high}")
    if isinstance(high, int) and high <= 0:
        problems.append("maxReplicas must be > 0")
    readiness = spec.get("readinessTimeoutSeconds")
    if readiness is not None and (not isinstance(readiness, int) or readiness <= 0):
        problems.append(f"readinessTimeoutSeconds {readiness!r} must be a positive integer")
    return problems


def resource_problems(resources: Any) -> list[str]:
    if resources is None:
        return []
    problems = []
    for section in ("requests", "limits"):
        for name, qty in ((resources or {}).get(section) or {}).items():
            if not (isinstance(qty, int) or (isinstance(qty, str) and _QUANTITY.match(qty))):
                problems.append(f"resources.{section}.{name}: {qty!r} is not a Kubernetes quantity")
    return problems


def function_config_problems(doc: Any) -> list[str]:
    """Everything Nuclio validates at deploy or start, plus this project's rules."""
    if not isinstance(doc, dict):
        return ["not a mapping"]
    problems = [f"top-level key {k!r} is ignored by Nuclio" for k in doc if k not in _TOP_LEVEL]
    if doc.get("apiVersion", "nuclio.io/v1") != "nuclio.io/v1":
        problems.append(f"apiVersion {doc['apiVersion']!r} is not nuclio.io/v1")
    if doc.get("kind", "Function") not in ("Function", "NuclioFunction"):
        problems.append(f"kind {doc['kind']!r} is not Function")
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        problems.append(f"metadata.name {name!r} missing or not a DNS label")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return [*problems, "spec missing"]
    if spec.get("runtime") not in ALLOWED_RUNTIMES:
        problems.append(f"spec.runtime {spec.get('runtime')!r} not one of {ALLOWED_RUNTIMES}")
    if not isinstance(spec.get("handler"), str):
        problems.append("spec.handler missing")
    else:
        problems += resolve_handler(spec["handler"])
    if not spec.get("description"):
        problems.append("spec.description missing (CVAT requires it)")
    if not spec.get("image") and not spec.get("build"):
        problems.append("neither spec.image (prebuilt) nor spec.build")
    try:
        if go_duration_seconds(spec.get("eventTimeout")) <= 0:
            problems.append("spec.eventTimeout must be > 0")
    except ValueError as exc:
        problems.append(f"spec.eventTimeout: {exc} (without it a request may run forever)")
    problems += env_problems(spec.get("env", []))
    problems += trigger_problems(spec.get("triggers"))
    problems += scaling_problems(spec)
    problems += resource_problems(spec.get("resources"))
    return problems
