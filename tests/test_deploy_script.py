"""deploy/deploy.sh against fake nuctl, kubectl and docker: what it would run, and the config
each target really gets (captured from the fake nuctl and checked with Nuclio's rules)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from function.settings import Settings

from .deploy_rules import ROOT, function_config_problems

SCRIPT = ROOT / "deploy" / "deploy.sh"
TOKEN = "tok-0123456789abcdef-it's-secret"  # a quote, to prove the YAML quoting holds

FAKE_TOOL = """#!{python}
import json, os, shutil, sys
tool, args = os.path.basename(sys.argv[0]), sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps([tool, *args]) + "\\n")
if tool == "nuctl" and args[:2] == ["get", "project"]:
    print(os.environ.get("FAKE_PROJECTS", "No projects found"))
if tool == "nuctl" and args[:1] == ["deploy"]:
    config = args[args.index("--file") + 1]
    shutil.copy(config, os.path.join(os.environ["FAKE_CAPTURE"], args[1] + ".yaml"))
if tool == "kubectl":
    sys.exit(int(os.environ.get("FAKE_SECRET_RC", "0")))
"""


@dataclass
class Run:
    code: int
    output: str  # stdout and stderr
    calls: list[list[str]]
    configs: dict[str, dict[str, Any]]  # function name -> the config nuctl was given

    def deploys(self) -> list[list[str]]:
        return [c for c in self.calls if c[:2] == ["nuctl", "deploy"]]


def deploy(tmp_path: Path, *args: str, **env: str) -> Run:
    bin_dir, capture, log = tmp_path / "bin", tmp_path / "capture", tmp_path / "calls.jsonl"
    bin_dir.mkdir(exist_ok=True)
    capture.mkdir(exist_ok=True)
    for tool in ("nuctl", "kubectl", "docker"):
        (bin_dir / tool).write_text(FAKE_TOOL.format(python=sys.executable))
        (bin_dir / tool).chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k not in ("SAM2_REGISTRY", "LABEL_STUDIO_API_KEY")}
    base |= {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log), "FAKE_CAPTURE": str(capture)}
    result = subprocess.run(
        ["bash", str(SCRIPT), *args], env=base | env, capture_output=True, text=True, timeout=60
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in capture.glob("*.yaml")}
    return Run(result.returncode, result.stdout + result.stderr, calls, configs)


def env_of(doc: dict[str, Any]) -> dict[str, Any]:
    names = [e["name"] for e in doc["spec"]["env"]]
    assert len(names) == len(set(names)), "an env name rendered twice"
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in doc["spec"]["env"]}


def target(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.env"
    path.write_text(text)
    return str(path)


def test_kube_deploys_each_target_as_its_own_function(tmp_path: Path) -> None:
    run = deploy(tmp_path, "--platform", "kube", "--registry", "reg.example.org/ml", "team-a", "team-b")
    assert run.code == 0, run.output
    assert ["nuctl", "create", "project", "sam2", "--platform", "kube", "--namespace", "nuclio"] in run.calls
    (a, b) = run.deploys()
    assert a[2] == "sam2-team-a" and b[2] == "sam2-team-b"
    for call in (a, b):
        assert call[call.index("--run-image") + 1] == "reg.example.org/ml/sam2-nuclio:0.1.0"
        assert call[call.index("--project-name") + 1] == "sam2"
        assert not Path(call[call.index("--file") + 1]).exists(), "the rendered copy must be deleted"
    assert a[a.index("--max-replicas") + 1] == "4" and b[b.index("--max-replicas") + 1] == "2"
    for name, url, size, secret in (
        ("sam2-team-a", "https://label-studio-a.example.org", "large", "sam2-team-a"),
        ("sam2-team-b", "https://label-studio-b.example.org", "tiny", "sam2-team-b"),
    ):
        doc = run.configs[name]
        assert function_config_problems(doc) == []
        env = env_of(doc)
        assert env["LABEL_STUDIO_URL"] == url and env["MODEL_SIZE"] == size
        refs = [v["secretKeyRef"] for v in env.values() if isinstance(v, dict)]
        assert refs and all(r["name"] == secret for r in refs)
        assert ["kubectl", "--namespace", "nuclio", "get", "secret", secret] in run.calls
    assert env_of(run.configs["sam2-team-b"])["FEATURE_CACHE_MB"] == "1024"


def test_existing_project_is_not_created_again(tmp_path: Path) -> None:
    run = deploy(
        tmp_path, "--registry", "r.example.org", "team-a", FAKE_PROJECTS="NAMESPACE NAME\nnuclio sam2"
    )
    assert run.code == 0, run.output
    assert not [c for c in run.calls if c[:3] == ["nuctl", "create", "project"]]
    assert len(run.deploys()) == 1


def test_missing_secret_stops_before_deploying(tmp_path: Path) -> None:
    run = deploy(tmp_path, "--registry", "r.example.org", "team-a", FAKE_SECRET_RC="1")
    assert run.code != 0 and "Secret sam2-team-a not found in namespace nuclio" in run.output
    assert run.deploys() == []


def test_local_platform_puts_the_key_only_into_the_private_config(tmp_path: Path) -> None:
    secrets = tmp_path / "local.secrets"
    secrets.write_text(f'LABEL_STUDIO_API_KEY="{TOKEN}"\n')
    spec = target(
        tmp_path,
        "mine",
        "FUNCTION_NAME=sam2-mine\nLABEL_STUDIO_URL=http://172.17.0.1:8080\nHTTP_PORT=9191\n"
        "LOCAL_SECRETS_FILE=local.secrets\n",
    )
    run = deploy(tmp_path, "--platform", "local", spec)
    assert run.code == 0, run.output
    doc = run.configs["sam2-mine"]
    env = env_of(doc)
    assert env["LABEL_STUDIO_API_KEY"] == TOKEN
    assert env["BASIC_AUTH_USER"] == env["BASIC_AUTH_PASS"] == ""  # unset, not an unresolved ref
    assert not [v for v in env.values() if isinstance(v, dict)], "local cannot read secretKeyRef"
    assert doc["spec"]["triggers"]["http"]["attributes"]["port"] == 9191
    problems = function_config_problems(doc)
    assert problems == [
        "env LABEL_STUDIO_API_KEY: a credential must come from valueFrom.secretKeyRef, not a literal"
    ]
    assert TOKEN not in run.output and TOKEN not in json.dumps(run.calls)
    (call,) = run.deploys()
    assert call[call.index("--run-image") + 1] == "sam2-nuclio:0.1.0"  # local image, no registry
    assert not Path(call[call.index("--file") + 1]).exists()


def test_local_key_can_come_from_the_environment(tmp_path: Path) -> None:
    run = deploy(tmp_path, "--platform", "local", "--cpu", "local", LABEL_STUDIO_API_KEY=TOKEN)
    assert run.code == 0, run.output
    env = env_of(run.configs["sam2-local"])
    assert env["LABEL_STUDIO_API_KEY"] == TOKEN and env["DEVICE"] == "cpu"
    assert TOKEN not in run.output


def test_local_without_key_warns(tmp_path: Path) -> None:
    run = deploy(tmp_path, "--platform", "local", "local")
    assert run.code == 0 and "no Label Studio key for sam2-local" in run.output
    assert env_of(run.configs["sam2-local"])["LABEL_STUDIO_API_KEY"] == ""


@pytest.mark.parametrize("key", ["LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN", "BASIC_AUTH_PASS"])
def test_target_with_a_credential_is_refused(tmp_path: Path, key: str) -> None:
    spec = target(tmp_path, "bad", f"FUNCTION_NAME=sam2-bad\n{key}={TOKEN}\n")
    run = deploy(tmp_path, "--registry", "r.example.org", spec)
    assert run.code != 0 and key in run.output and TOKEN not in run.output
    assert run.calls == []  # refused before anything ran


def test_unknown_setting_and_bad_names_are_refused(tmp_path: Path) -> None:
    typo = target(tmp_path, "typo", "FUNCTION_NAME=sam2-x\nLABEL_STUDIO_HOSTNAME=http://x\n")
    run = deploy(tmp_path, "--registry", "r.example.org", typo)
    assert run.code != 0 and "LABEL_STUDIO_HOSTNAME is not a setting" in run.output
    upper = target(tmp_path, "upper", "FUNCTION_NAME=Sam2_X\n")
    run = deploy(tmp_path, "--registry", "r.example.org", upper)
    assert run.code != 0 and "FUNCTION_NAME must be a DNS label" in run.output


def test_kube_needs_a_registry(tmp_path: Path) -> None:
    run = deploy(tmp_path, "team-a")
    assert run.code != 0 and "--registry" in run.output and run.calls == []


def test_cpu_variant_has_no_gpu(tmp_path: Path) -> None:
    run = deploy(tmp_path, "--cpu", "--registry", "r.example.org", "team-b")
    assert run.code == 0, run.output
    doc = run.configs["sam2-team-b"]
    assert "nvidia.com/gpu" not in doc["spec"]["resources"]["limits"]
    assert env_of(doc)["DEVICE"] == "cpu" and env_of(doc)["MODEL_SIZE"] == "tiny"


def test_values_with_quotes_and_json_survive_rendering(tmp_path: Path) -> None:
    params = '{"output": "polygon", "note": "it\'s"}'
    spec = target(
        tmp_path,
        "json",
        f"FUNCTION_NAME=sam2-json\nLABEL_STUDIO_URL=https://ls.example.org\nDEFAULT_EXTRA_PARAMS={params}\n"
        "EMPTY_PREDICTION_ON_NO_CONTEXT=true\n",
    )
    run = deploy(tmp_path, "--registry", "r.example.org", spec)
    assert run.code == 0, run.output
    env = env_of(run.configs["sam2-json"])
    assert env["DEFAULT_EXTRA_PARAMS"] == params
    assert env["EMPTY_PREDICTION_ON_NO_CONTEXT"] == "true"  # not in function.yaml: appended once
    settings = Settings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    assert settings.default_extra_params == {"output": "polygon", "note": "it's"}


def test_build_bakes_every_target_model_size(tmp_path: Path) -> None:
    run = deploy(tmp_path, "--build", "--registry", "r.example.org", "team-a", "team-b")
    assert run.code == 0, run.output
    build, push = [c for c in run.calls if c[0] == "docker"]
    assert build[:2] == ["docker", "build"] and "EXTRA_MODEL_SIZES=tiny large" in build
    assert push == ["docker", "push", "r.example.org/sam2-nuclio:0.1.0"]
    assert run.calls.index(push) < run.calls.index(run.deploys()[0])


def test_dry_run_runs_nothing_and_shows_the_rendered_config(tmp_path: Path) -> None:
    run = deploy(tmp_path, "--dry-run", "--build", "--registry", "r.example.org", "team-a")
    assert run.code == 0, run.output
    assert run.calls == []
    assert "+ docker build" in run.output and "+ nuctl deploy sam2-team-a" in run.output
    assert "secretKeyRef: {name: sam2-team-a, key: api-key}" in run.output
