"""Settings.from_env: every variable, the accepted MODEL_CONFIG spellings, errors that name the variable."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from function.core.checkpoints import CHECKPOINTS
from function.settings import KNOWN_ENV, LEGACY_IGNORED, SECRET_ENV, Settings, SettingsError, env_defaults


def env(tmp_path: Path, **values: str) -> dict[str, str]:
    """A clean environment whose checkpoint cache is an empty tmp folder."""
    return {"CHECKPOINT_DIR": str(tmp_path / "ckpts"), **values}


def error_for(tmp_path: Path, **values: str) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env(tmp_path, **values))
    return info.value


def test_defaults_are_tiny_sam21_from_the_download_cache(tmp_path: Path) -> None:
    s = Settings.from_env(env(tmp_path))
    assert s.model_config == "configs/sam2.1/sam2.1_hiera_t.yaml"
    assert s.model_checkpoint == tmp_path / "ckpts" / "sam2.1_hiera_tiny.pt"
    assert s.device == "auto"
    assert s.label_studio_url == ""
    assert s.log_level == "INFO"
    assert not s.basic_auth_enabled
    assert s.warmup is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("configs/sam2.1/sam2.1_hiera_t.yaml", "configs/sam2.1/sam2.1_hiera_t.yaml"),
        ("sam2.1_hiera_t.yaml", "configs/sam2.1/sam2.1_hiera_t.yaml"),
        ("sam2.1_hiera_b+.yaml", "configs/sam2.1/sam2.1_hiera_b+.yaml"),
        ("sam2.1_hiera_s", "configs/sam2.1/sam2.1_hiera_s.yaml"),
        ("sam2_hiera_l.yaml", "configs/sam2/sam2_hiera_l.yaml"),
        ("sam2_hiera_t.yaml", "configs/sam2/sam2_hiera_t.yaml"),
        (
            "/opt/segment-anything-2/sam2/configs/sam2.1/sam2.1_hiera_l.yaml",
            "configs/sam2.1/sam2.1_hiera_l.yaml",
        ),
    ],
)
def test_model_config_forms(tmp_path: Path, value: str, expected: str) -> None:
    ckpt = tmp_path / "model.pt"
    assert Settings.from_env(env(tmp_path, MODEL_CONFIG=value, MODEL_CHECKPOINT=str(ckpt))).model_config == (
        expected
    )


def test_every_normalized_config_exists_in_the_sam2_package() -> None:
    import sam2

    root = Path(sam2.__file__).parent
    for name in ("sam2.1_hiera_t.yaml", "sam2_hiera_l.yaml", "sam2.1_hiera_b+.yaml"):
        from function.settings import normalize_model_config

        assert (root / normalize_model_config(name)).is_file()


def test_unknown_model_config_names_the_variable(tmp_path: Path) -> None:
    err = error_for(tmp_path, MODEL_CONFIG="resnet50.yaml")
    assert err.variable == "MODEL_CONFIG"
    assert str(err).startswith("MODEL_CONFIG:")


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("sam2.1_hiera_large.pt", "configs/sam2.1/sam2.1_hiera_l.yaml"),
        ("sam2.1_hiera_base_plus.pt", "configs/sam2.1/sam2.1_hiera_b+.yaml"),
        ("sam2_hiera_small.pt", "configs/sam2/sam2_hiera_s.yaml"),
        ("my-sam2.1_hiera_tiny-finetuned.pt", "configs/sam2.1/sam2.1_hiera_t.yaml"),
    ],
)
def test_config_inferred_from_checkpoint_name(tmp_path: Path, name: str, config: str) -> None:
    ckpt = tmp_path / name
    s = Settings.from_env(env(tmp_path, MODEL_CHECKPOINT=str(ckpt)))
    assert s.model_config == config
    assert s.model_checkpoint == ckpt


def test_checkpoint_without_a_size_in_its_name_needs_model_config(tmp_path: Path) -> None:
    err = error_for(tmp_path, MODEL_CHECKPOINT=str(tmp_path / "weights.pt"))
    assert err.variable == "MODEL_CONFIG"
    s = Settings.from_env(
        env(tmp_path, MODEL_CHECKPOINT=str(tmp_path / "weights.pt"), MODEL_CONFIG="sam2.1_hiera_s.yaml")
    )
    assert s.model_config == "configs/sam2.1/sam2.1_hiera_s.yaml"


def test_relative_checkpoint_name_resolves_in_checkpoint_dir(tmp_path: Path) -> None:
    s = Settings.from_env(env(tmp_path, MODEL_CHECKPOINT="sam2.1_hiera_small.pt"))
    assert s.model_checkpoint == tmp_path / "ckpts" / "sam2.1_hiera_small.pt"


@pytest.mark.parametrize("size", sorted(CHECKPOINTS))
def test_model_size_picks_config_and_cached_checkpoint(tmp_path: Path, size: str) -> None:
    s = Settings.from_env(env(tmp_path, MODEL_SIZE=size.upper()))
    assert s.model_config == CHECKPOINTS[size].config
    assert s.model_checkpoint == tmp_path / "ckpts" / CHECKPOINTS[size].filename


def test_bad_model_size_names_the_variable(tmp_path: Path) -> None:
    assert error_for(tmp_path, MODEL_SIZE="huge").variable == "MODEL_SIZE"


def test_checkpoint_dir_defaults_to_xdg_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    s = Settings.from_env({})
    assert s.model_checkpoint == tmp_path / "xdg" / "sam2-nuclio" / "checkpoints" / "sam2.1_hiera_tiny.pt"


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "CUDA"])
def test_device_accepted(tmp_path: Path, device: str) -> None:
    assert Settings.from_env(env(tmp_path, DEVICE=device)).device == device.lower()


@pytest.mark.parametrize("device", ["gpu", "mps", "cuda:x", "tpu"])
def test_device_rejected_naming_the_variable(tmp_path: Path, device: str) -> None:
    err = error_for(tmp_path, DEVICE=device)
    assert err.variable == "DEVICE"
    assert "DEVICE" in str(err)


def test_label_studio_host_is_an_alias_of_url(tmp_path: Path) -> None:
    s = Settings.from_env(env(tmp_path, LABEL_STUDIO_HOST="http://ls.example:8080/"))
    assert s.label_studio_url == "http://ls.example:8080"
    both = Settings.from_env(
        env(tmp_path, LABEL_STUDIO_HOST="http://host:1", LABEL_STUDIO_URL="http://url:2")
    )
    assert both.label_studio_url == "http://url:2"


def test_label_studio_url_with_subpath_kept(tmp_path: Path) -> None:
    s = Settings.from_env(env(tmp_path, LABEL_STUDIO_URL="https://corp.example/label-studio/"))
    assert s.label_studio_url == "https://corp.example/label-studio"


@pytest.mark.parametrize("name", ["LABEL_STUDIO_URL", "LABEL_STUDIO_HOST"])
def test_bad_label_studio_url_names_the_variable_used(tmp_path: Path, name: str) -> None:
    assert error_for(tmp_path, **{name: "localhost:8080"}).variable == name


def test_tokens_and_secrets(tmp_path: Path) -> None:
    s = Settings.from_env(
        env(
            tmp_path,
            LABEL_STUDIO_API_KEY="pat-value",
            LABEL_STUDIO_ACCESS_TOKEN="legacy-value",
            BASIC_AUTH_USER="u",
            BASIC_AUTH_PASS="p4ss",
        )
    )
    assert s.label_studio_api_key == "pat-value"
    assert s.label_studio_access_token == "legacy-value"
    assert s.basic_auth_enabled
    assert set(s.secrets) == {"pat-value", "legacy-value", "p4ss"}
    assert "pat-value" not in repr(s) and "p4ss" not in repr(s) and "legacy-value" not in repr(s)
    assert set(SECRET_ENV) <= set(KNOWN_ENV)


@pytest.mark.parametrize(
    ("given", "missing"),
    [({"BASIC_AUTH_USER": "u"}, "BASIC_AUTH_PASS"), ({"BASIC_AUTH_PASS": "p"}, "BASIC_AUTH_USER")],
)
def test_half_basic_auth_names_the_missing_variable(
    tmp_path: Path, given: dict[str, str], missing: str
) -> None:
    assert error_for(tmp_path, **given).variable == missing


@pytest.mark.parametrize(("value", "expected"), [("debug", "DEBUG"), ("warn", "WARNING"), ("ERROR", "ERROR")])
def test_log_level(tmp_path: Path, value: str, expected: str) -> None:
    assert Settings.from_env(env(tmp_path, LOG_LEVEL=value)).log_level == expected


def test_bad_log_level_names_the_variable(tmp_path: Path) -> None:
    assert error_for(tmp_path, LOG_LEVEL="loud").variable == "LOG_LEVEL"


def test_cache_budgets_and_limits(tmp_path: Path) -> None:
    s = Settings.from_env(
        env(
            tmp_path,
            FEATURE_CACHE_MB="64",
            IMAGE_CACHE_MB="0",
            MAX_IMAGE_PIXELS="1000",
            MAX_DOWNLOAD_MB="3",
            MAX_BODY_MB="2",
            MAX_PROMPT_POINTS="7",
            CONNECT_TIMEOUT_S="1.5",
            DOWNLOAD_TIMEOUT_S="9",
        )
    )
    assert s.feature_cache_bytes == 64 * 2**20
    assert s.image_cache_bytes == 0
    assert s.max_image_pixels == 1000
    assert s.max_download_bytes == 3 * 2**20
    assert s.max_body_bytes == 2 * 2**20
    assert s.max_prompt_points == 7
    assert (s.connect_timeout_s, s.download_timeout_s) == (1.5, 9.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FEATURE_CACHE_MB", "lots"),
        ("FEATURE_CACHE_MB", "-1"),
        ("MAX_BODY_MB", "0"),
        ("MAX_PROMPT_POINTS", "1.5"),
        ("CONNECT_TIMEOUT_S", "0"),
        ("DOWNLOAD_TIMEOUT_S", "soon"),
        ("DOWNLOAD_TIMEOUT_S", "inf"),
        ("WARMUP", "maybe"),
        ("LABEL_STUDIO_VERIFY_SSL", "2"),
        ("ALLOW_LOCAL_FILES", "sure"),
        ("DEFAULT_EXTRA_PARAMS", "{not json"),
        ("DEFAULT_EXTRA_PARAMS", "[1, 2]"),
        ("PREWARM_QUEUE_SIZE", "0"),
    ],
)
def test_bad_values_name_their_variable(tmp_path: Path, name: str, value: str) -> None:
    err = error_for(tmp_path, **{name: value})
    assert err.variable == name
    assert name in str(err)


def test_flags_hosts_paths_and_defaults(tmp_path: Path) -> None:
    params = {"return_format": {"type": "BrushLabels"}}
    s = Settings.from_env(
        env(
            tmp_path,
            WARMUP="false",
            LABEL_STUDIO_VERIFY_SSL="no",
            ALLOW_LOCAL_FILES="1",
            ALLOWED_IMAGE_HOSTS=" Images.Example.com , cdn.example ",
            LOCAL_FILES_DOCUMENT_ROOT=str(tmp_path / "media"),
            PROJECT_STORE_DIR=str(tmp_path / "store"),
            DEFAULT_EXTRA_PARAMS=json.dumps(params),
            EMPTY_PREDICTION_ON_NO_CONTEXT="true",
            MODEL_VERSION="my-sam",
        )
    )
    assert s.warmup is False and s.label_studio_verify_ssl is False and s.allow_local_files is True
    assert s.allowed_image_hosts == ("images.example.com", "cdn.example")
    assert s.local_files_document_root == tmp_path / "media"
    assert s.project_store_dir == tmp_path / "store"
    assert dict(s.default_extra_params) == params
    assert s.empty_prediction_on_no_context is True
    assert s.resolved_version == "my-sam"


def test_resolved_version_defaults_to_config_and_package_version(tmp_path: Path) -> None:
    from function import __version__

    assert Settings.from_env(env(tmp_path)).resolved_version == f"sam2.1_hiera_t-{__version__}"


def test_legacy_deployment_variables_are_accepted(tmp_path: Path) -> None:
    legacy = {
        "SEGMENT_ANYTHING_2_REPO_PATH": "/segment-anything-2",
        "ROOT_DIR": "/opt/nuclio",
        "PYTHONPATH": "/opt/nuclio/segment-anything-2:/opt/nuclio",
    }
    assert set(LEGACY_IGNORED) == set(legacy)
    assert Settings.from_env(env(tmp_path, **legacy)) == Settings.from_env(env(tmp_path))


def test_every_variable_read_is_known(tmp_path: Path) -> None:
    """Reading an unknown variable would make deployment files drift from the code."""
    seen: set[str] = set()

    class Spy(dict):  # type: ignore[type-arg]
        def get(self, key, default=None):  # type: ignore[no-untyped-def]
            seen.add(key)
            return super().get(key, default)

    Settings.from_env(Spy(env(tmp_path)))
    assert seen <= set(KNOWN_ENV)


def test_invalid_default_extra_params_fail_at_start_naming_the_variable(tmp_path: Path) -> None:
    from function.service.app import Request

    from .fakes import FakeModel
    from .support import make_app

    with pytest.raises(SettingsError, match=r"DEFAULT_EXTRA_PARAMS: .*patch_size"):
        make_app(tmp_path, FakeModel(), default_extra_params={"subpatching": {"patch_size": True}})
    app = make_app(tmp_path, FakeModel(), default_extra_params={"subpatching": {"patch_size": 512}})
    assert app.handle(Request("GET", "/health")).status == 200


def environment_rows(doc: str, heading: str) -> dict[str, str]:
    """A doc's environment table: variable name -> its default cell (names and defaults pair up
    in order when a row lists several, e.g. | `A`, `B` | `5`, `30` |)."""
    text = (Path(__file__).resolve().parent.parent / doc).read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        defaults = re.findall(r"`([^`]*)`", cells[1])
        for i, name in enumerate(names):
            rows[name] = defaults[i] if len(defaults) == len(names) else ""
    return rows


def assert_defaults_match(rows: dict[str, str], where: str) -> None:
    unknown = set(rows) - set(KNOWN_ENV)
    assert not unknown, f"{where} names unknown variables: {sorted(unknown)}"
    for name, default in env_defaults().items():
        if name in rows:
            assert rows[name] == default, f"{where}: {name} defaults to {rows[name]!r}, Settings: {default!r}"


def test_the_environment_doc_lists_every_variable_with_its_real_default() -> None:
    rows = environment_rows("docs/environment.md", "## Environment")
    documented = set(KNOWN_ENV) - set(LEGACY_IGNORED)
    assert documented <= set(rows), f"missing from docs/environment.md: {sorted(documented - set(rows))}"
    assert_defaults_match(rows, "docs/environment.md")


def test_the_readme_environment_table_agrees_with_the_settings() -> None:
    rows = environment_rows("README.md", "## Environment variables")
    assert {"MODEL_SIZE", "DEVICE", "RUNTIME", "LABEL_STUDIO_URL"} <= set(rows)
    assert_defaults_match(rows, "README.md")


def test_every_known_variable_is_read_and_only_those() -> None:
    read: list[str] = []

    class Recording(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            read.append(key)
            return super().get(key, default)

    Settings.from_env(Recording())
    assert set(read) == set(KNOWN_ENV) - set(LEGACY_IGNORED)
