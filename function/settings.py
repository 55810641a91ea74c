"""Environment -> typed, validated settings. Every error names the variable at fault."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from function.core.checkpoints import CHECKPOINTS, default_checkpoint_dir
from function.env import (
    EnvReader,
    SettingsError,
    config_for_checkpoint,
    normalize_model_config,
)

MiB = 2**20
DEFAULT_MODEL_SIZE = "tiny"  # what `./dev.sh serve` fetches and a bare deployment loads

# Variables older deployments set; accepted and ignored (sam2 is an installed package here).
LEGACY_IGNORED = ("SEGMENT_ANYTHING_2_REPO_PATH", "ROOT_DIR", "PYTHONPATH")

# Every variable this module reads. Deployment files are tested against this list.
KNOWN_ENV = (
    "MODEL_SIZE",
    "MODEL_CONFIG",
    "MODEL_CHECKPOINT",
    "CHECKPOINT_DIR",
    "DEVICE",
    "RUNTIME",
    "CPU_PRECISION",
    "CPU_THREADS",
    "RUNTIME_CACHE_DIR",
    "MODEL_VERSION",
    "WARMUP",
    "LABEL_STUDIO_URL",
    "LABEL_STUDIO_HOST",
    "LABEL_STUDIO_API_KEY",
    "LABEL_STUDIO_ACCESS_TOKEN",
    "LABEL_STUDIO_VERIFY_SSL",
    "LOG_LEVEL",
    "BASIC_AUTH_USER",
    "BASIC_AUTH_PASS",
    "FEATURE_CACHE_MB",
    "IMAGE_CACHE_MB",
    "MAX_IMAGE_PIXELS",
    "MAX_DOWNLOAD_MB",
    "MAX_BODY_MB",
    "MAX_PROMPT_POINTS",
    "CONNECT_TIMEOUT_S",
    "DOWNLOAD_TIMEOUT_S",
    "ALLOWED_IMAGE_HOSTS",
    "ALLOW_LOCAL_FILES",
    "LOCAL_FILES_DOCUMENT_ROOT",
    "PROJECT_STORE_DIR",
    "DEFAULT_EXTRA_PARAMS",
    "EMPTY_PREDICTION_ON_NO_CONTEXT",
    "PREWARM",
    "PREWARM_MAX_TASKS",
    "PREWARM_QUEUE_SIZE",
    "DETECTOR_MODEL",
    "DETECTOR_BOX_THRESHOLD",
    "DETECTOR_TEXT_THRESHOLD",
    "DETECTOR_PHRASES",
    "PREDICT_BUDGET_S",
    "FEATURE_STORE_URL",
    "FEATURE_STORE_TTL_S",
    "FEATURE_STORE_TIMEOUT_MS",
    "FEATURE_STORE_RETRY_S",
    "CVAT_FUNCTIONS_REDIS_HOST",
    "CVAT_FUNCTIONS_REDIS_PORT",
    "CVAT_FUNCTIONS_REDIS_PASSWORD",
    "UPSTREAM_URL",
    "UPSTREAM_CONNECT_TIMEOUT_S",
    "UPSTREAM_TIMEOUT_S",
    "UPSTREAM_USER",
    "UPSTREAM_PASS",
    "TRACKING_MAX_OBJECTS",
    "TRACKING_MAX_SESSIONS",
    "TRACKING_SESSION_TTL_S",
    "TRACKING_MEMORY_MB",
    "TRACKING_VERSIONS_KEPT",
    "MAX_FRAMES_TO_TRACK",
    "MAX_FRAMES_PER_REQUEST",
    "MAX_VIDEO_MB",
    "MAX_VIDEO_PIXELS",
    *LEGACY_IGNORED,
)

# Values never to appear in logs or response bodies.
SECRET_ENV = (
    "LABEL_STUDIO_API_KEY",
    "LABEL_STUDIO_ACCESS_TOKEN",
    "BASIC_AUTH_PASS",
    "CVAT_FUNCTIONS_REDIS_PASSWORD",
    "UPSTREAM_PASS",
)


@dataclass(frozen=True)
class Settings:
    model_config: str = CHECKPOINTS[DEFAULT_MODEL_SIZE].config
    model_checkpoint: Path | None = None
    device: str = "auto"
    # auto: torch on CUDA, onnxruntime on CPU (see function/core/runtime/loader.py).
    runtime: str = "auto"
    cpu_precision: str = "f32"
    cpu_threads: int | None = None  # None: from the container's CPU quota
    runtime_cache_dir: Path | None = None  # None: next to the checkpoint
    model_version: str = ""
    warmup: bool = True
    label_studio_url: str = ""
    label_studio_api_key: str = field(default="", repr=False)
    label_studio_access_token: str = field(default="", repr=False)
    label_studio_verify_ssl: bool = True
    log_level: str = "INFO"
    basic_auth_user: str = ""
    basic_auth_pass: str = field(default="", repr=False)
    feature_cache_bytes: int = 1024 * MiB
    image_cache_bytes: int = 512 * MiB
    max_image_pixels: int = 200_000_000
    max_download_bytes: int = 100 * MiB
    max_body_bytes: int = 64 * MiB
    max_prompt_points: int = 500
    connect_timeout_s: float = 5.0
    download_timeout_s: float = 30.0
    allowed_image_hosts: tuple[str, ...] = ()
    allow_local_files: bool = False
    local_files_document_root: Path | None = None
    project_store_dir: Path = Path(tempfile.gettempdir()) / "sam2-nuclio" / "projects"
    default_extra_params: Mapping[str, Any] = field(default_factory=dict)
    empty_prediction_on_no_context: bool = False
    prewarm: bool = True
    prewarm_max_tasks: int = 1
    prewarm_queue_size: int = 8
    detector_model: Path | None = None  # text prompts are off without it
    detector_box_threshold: float = 0.3  # LangSAM's defaults
    detector_text_threshold: float = 0.25
    detector_phrases: str = ""  # the CVAT detector's fixed vocabulary, "car. person."
    predict_budget_s: float = 60.0  # a batch /predict that would take longer answers one task
    # Shared feature tier (off unless a URL is set): see function/core/feature_store.py.
    feature_store_url: str = field(default="", repr=False)  # may carry a password
    feature_store_password: str = field(default="", repr=False)
    feature_store_ttl_s: int = 7 * 86400
    feature_store_timeout_s: float = 0.05
    feature_store_retry_s: float = 30.0
    redis_port: int = 6379  # with CVAT_FUNCTIONS_REDIS_HOST
    # Remote mode: forward every request to another instance of this function.
    upstream_url: str = ""
    upstream_connect_timeout_s: float = 3.0
    upstream_timeout_s: float = 60.0
    upstream_user: str = ""
    upstream_pass: str = field(default="", repr=False)
    # Tracking (CVAT tracker sessions, Label Studio video); README "Tracking".
    tracking_max_objects: int = 16
    tracking_max_sessions: int = 256
    tracking_session_ttl_s: float = 8 * 3600.0  # CVAT's own tracker-state max age
    tracking_memory_bytes: int = 2048 * MiB
    tracking_versions_kept: int = 16
    # Label Studio waits ML_TIMEOUT_PREDICT (100 s) for /predict; on CPU with SAM2.1 tiny a
    # tracked frame costs a few seconds (bench/ "tracking"), so the default window fits in it.
    max_frames_to_track: int = 10
    max_frames_per_request: int = 300
    max_video_bytes: int = 500 * MiB
    max_video_pixels: int = 3840 * 2160  # per frame, from the stream header

    @property
    def basic_auth_enabled(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_pass)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(
            s
            for s in (
                self.label_studio_api_key,
                self.label_studio_access_token,
                self.basic_auth_pass,
                self.feature_store_password,
                urlsplit(self.feature_store_url).password or "",
                self.upstream_pass,
            )
            if s
        )

    @property
    def feature_store_enabled(self) -> bool:
        return bool(self.feature_store_url)

    @property
    def resolved_version(self) -> str:
        if self.model_version:
            return self.model_version
        from function import __version__

        return f"{Path(self.model_config).stem}-{__version__}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        r = EnvReader(env)
        size = r.choice("MODEL_SIZE", tuple(CHECKPOINTS), default="")
        checkpoint_dir = r.path("CHECKPOINT_DIR") or default_checkpoint_dir()
        checkpoint = r.path("MODEL_CHECKPOINT")
        if checkpoint is None and size:
            checkpoint = checkpoint_dir / CHECKPOINTS[size].filename
        elif checkpoint is not None and not checkpoint.is_absolute() and not checkpoint.exists():
            checkpoint = checkpoint_dir / checkpoint
        config = r.text("MODEL_CONFIG")
        if config:
            config = normalize_model_config(config)
        elif checkpoint is not None:
            config = config_for_checkpoint(checkpoint)
        else:
            config = CHECKPOINTS[size or DEFAULT_MODEL_SIZE].config
        if checkpoint is None:
            # Nothing named: the published checkpoint for the config, from the download cache.
            known = [c for c in CHECKPOINTS.values() if c.config == config]
            checkpoint = checkpoint_dir / known[0].filename if known else None
        device = r.text("DEVICE", cls.device).lower()
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            raise SettingsError("DEVICE", f"must be auto, cpu, cuda or cuda:N, got {device!r}")
        runtime = r.choice("RUNTIME", ("auto", "torch", "onnxruntime", "openvino"), default=cls.runtime)
        precision = r.choice("CPU_PRECISION", ("f32", "bf16"), default=cls.cpu_precision)
        if precision == "bf16" and runtime != "openvino":
            raise SettingsError("CPU_PRECISION", "bf16 is served by OpenVINO only: set RUNTIME=openvino")
        threads = r.integer("CPU_THREADS", 0, minimum=0) or None
        url = r.text("LABEL_STUDIO_URL") or r.text("LABEL_STUDIO_HOST")
        if url and not re.match(r"^https?://[^/\s]+", url):
            name = "LABEL_STUDIO_URL" if r.text("LABEL_STUDIO_URL") else "LABEL_STUDIO_HOST"
            raise SettingsError(name, "must be an http(s) URL like http://localhost:8080")
        level = r.text("LOG_LEVEL", cls.log_level).upper()
        if level not in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"):
            raise SettingsError("LOG_LEVEL", f"unknown level {level!r}")
        user, password = r.text("BASIC_AUTH_USER"), r.text("BASIC_AUTH_PASS")
        if bool(user) != bool(password):
            missing = "BASIC_AUTH_PASS" if user else "BASIC_AUTH_USER"
            raise SettingsError(missing, "basic auth needs both BASIC_AUTH_USER and BASIC_AUTH_PASS")
        hosts = tuple(h.strip().lower() for h in r.text("ALLOWED_IMAGE_HOSTS").split(",") if h.strip())
        defaults_text = r.text("DEFAULT_EXTRA_PARAMS")
        try:
            defaults = json.loads(defaults_text) if defaults_text else {}
        except json.JSONDecodeError as exc:
            raise SettingsError("DEFAULT_EXTRA_PARAMS", f"not valid JSON: {exc}") from None
        if not isinstance(defaults, dict):
            raise SettingsError("DEFAULT_EXTRA_PARAMS", "must be a JSON object")
        d = cls()  # the defaults, written once: in the fields above
        store_url, store_password = _feature_store(r, d)
        upstream = r.text("UPSTREAM_URL").rstrip("/")
        if upstream and not re.match(r"^https?://[^/\s@]+", upstream):
            raise SettingsError("UPSTREAM_URL", "must be an http(s) URL like http://gpu-box:9090")
        if "@" in urlsplit(upstream).netloc:
            raise SettingsError("UPSTREAM_URL", "put credentials in UPSTREAM_USER and UPSTREAM_PASS")
        upstream_user, upstream_pass = r.text("UPSTREAM_USER"), r.text("UPSTREAM_PASS")
        if bool(upstream_user) != bool(upstream_pass):
            raise SettingsError("UPSTREAM_PASS", "needs UPSTREAM_USER and UPSTREAM_PASS together")
        timeout_ms = r.number("FEATURE_STORE_TIMEOUT_MS", d.feature_store_timeout_s * 1e3)
        per_request = r.integer("MAX_FRAMES_PER_REQUEST", d.max_frames_per_request, minimum=1)
        frames = r.integer("MAX_FRAMES_TO_TRACK", min(d.max_frames_to_track, per_request), minimum=1)
        if frames > per_request:
            raise SettingsError("MAX_FRAMES_TO_TRACK", f"must be <= MAX_FRAMES_PER_REQUEST ({per_request})")
        return cls(
            feature_store_url=store_url,
            feature_store_password=store_password,
            feature_store_ttl_s=r.integer("FEATURE_STORE_TTL_S", d.feature_store_ttl_s, minimum=0),
            feature_store_timeout_s=timeout_ms / 1e3,
            feature_store_retry_s=r.number("FEATURE_STORE_RETRY_S", d.feature_store_retry_s),
            upstream_url=upstream,
            upstream_connect_timeout_s=r.number("UPSTREAM_CONNECT_TIMEOUT_S", d.upstream_connect_timeout_s),
            upstream_timeout_s=r.number("UPSTREAM_TIMEOUT_S", d.upstream_timeout_s),
            upstream_user=upstream_user,
            upstream_pass=upstream_pass,
            model_config=config,
            model_checkpoint=checkpoint,
            device=device,
            runtime=runtime,
            cpu_precision=precision,
            cpu_threads=threads,
            runtime_cache_dir=r.path("RUNTIME_CACHE_DIR"),
            model_version=r.text("MODEL_VERSION"),
            warmup=r.flag("WARMUP", d.warmup),
            label_studio_url=url.rstrip("/"),
            label_studio_api_key=r.text("LABEL_STUDIO_API_KEY"),
            label_studio_access_token=r.text("LABEL_STUDIO_ACCESS_TOKEN"),
            label_studio_verify_ssl=r.flag("LABEL_STUDIO_VERIFY_SSL", d.label_studio_verify_ssl),
            log_level="WARNING" if level == "WARN" else level,
            basic_auth_user=user,
            basic_auth_pass=password,
            feature_cache_bytes=r.integer("FEATURE_CACHE_MB", d.feature_cache_bytes // MiB, minimum=0) * MiB,
            image_cache_bytes=r.integer("IMAGE_CACHE_MB", d.image_cache_bytes // MiB, minimum=0) * MiB,
            max_image_pixels=r.integer("MAX_IMAGE_PIXELS", d.max_image_pixels, minimum=1),
            max_download_bytes=r.integer("MAX_DOWNLOAD_MB", d.max_download_bytes // MiB, minimum=1) * MiB,
            max_body_bytes=r.integer("MAX_BODY_MB", d.max_body_bytes // MiB, minimum=1) * MiB,
            max_prompt_points=r.integer("MAX_PROMPT_POINTS", d.max_prompt_points, minimum=1),
            connect_timeout_s=r.number("CONNECT_TIMEOUT_S", d.connect_timeout_s),
            download_timeout_s=r.number("DOWNLOAD_TIMEOUT_S", d.download_timeout_s),
            allowed_image_hosts=hosts,
            allow_local_files=r.flag("ALLOW_LOCAL_FILES", d.allow_local_files),
            local_files_document_root=r.path("LOCAL_FILES_DOCUMENT_ROOT"),
            project_store_dir=r.path("PROJECT_STORE_DIR") or d.project_store_dir,
            default_extra_params=defaults,
            empty_prediction_on_no_context=r.flag(
                "EMPTY_PREDICTION_ON_NO_CONTEXT", d.empty_prediction_on_no_context
            ),
            prewarm=r.flag("PREWARM", d.prewarm),
            prewarm_max_tasks=r.integer("PREWARM_MAX_TASKS", d.prewarm_max_tasks, minimum=0),
            prewarm_queue_size=r.integer("PREWARM_QUEUE_SIZE", d.prewarm_queue_size, minimum=1),
            detector_model=r.path("DETECTOR_MODEL"),
            detector_box_threshold=r.fraction("DETECTOR_BOX_THRESHOLD", d.detector_box_threshold),
            detector_text_threshold=r.fraction("DETECTOR_TEXT_THRESHOLD", d.detector_text_threshold),
            detector_phrases=r.text("DETECTOR_PHRASES"),
            predict_budget_s=r.number("PREDICT_BUDGET_S", d.predict_budget_s),
            tracking_max_objects=r.integer("TRACKING_MAX_OBJECTS", d.tracking_max_objects, minimum=1),
            tracking_max_sessions=r.integer("TRACKING_MAX_SESSIONS", d.tracking_max_sessions, minimum=1),
            tracking_session_ttl_s=r.number("TRACKING_SESSION_TTL_S", d.tracking_session_ttl_s),
            tracking_memory_bytes=r.integer("TRACKING_MEMORY_MB", d.tracking_memory_bytes // MiB, minimum=16)
            * MiB,
            tracking_versions_kept=r.integer("TRACKING_VERSIONS_KEPT", d.tracking_versions_kept, minimum=1),
            max_frames_to_track=frames,
            max_frames_per_request=per_request,
            max_video_bytes=r.integer("MAX_VIDEO_MB", d.max_video_bytes // MiB, minimum=1) * MiB,
            max_video_pixels=r.integer("MAX_VIDEO_PIXELS", d.max_video_pixels, minimum=1),
        )


def env_defaults() -> dict[str, str]:
    """Each variable's default as it would be written in the environment, from `Settings`'s
    fields (the README's table is tested against this). Variables without a fixed default
    (paths derived at start, credentials) are absent."""
    d = Settings()

    def flag(value: bool) -> str:
        return "true" if value else "false"

    return {
        "MODEL_SIZE": DEFAULT_MODEL_SIZE,
        "DEVICE": d.device,
        "RUNTIME": d.runtime,
        "CPU_PRECISION": d.cpu_precision,
        "WARMUP": flag(d.warmup),
        "LABEL_STUDIO_VERIFY_SSL": flag(d.label_studio_verify_ssl),
        "LOG_LEVEL": d.log_level,
        "FEATURE_CACHE_MB": str(d.feature_cache_bytes // MiB),
        "IMAGE_CACHE_MB": str(d.image_cache_bytes // MiB),
        "MAX_IMAGE_PIXELS": str(d.max_image_pixels),
        "MAX_DOWNLOAD_MB": str(d.max_download_bytes // MiB),
        "MAX_BODY_MB": str(d.max_body_bytes // MiB),
        "MAX_PROMPT_POINTS": str(d.max_prompt_points),
        "CONNECT_TIMEOUT_S": f"{d.connect_timeout_s:g}",
        "DOWNLOAD_TIMEOUT_S": f"{d.download_timeout_s:g}",
        "ALLOW_LOCAL_FILES": flag(d.allow_local_files),
        "DEFAULT_EXTRA_PARAMS": json.dumps(dict(d.default_extra_params)),
        "EMPTY_PREDICTION_ON_NO_CONTEXT": flag(d.empty_prediction_on_no_context),
        "PREWARM": flag(d.prewarm),
        "PREWARM_MAX_TASKS": str(d.prewarm_max_tasks),
        "PREWARM_QUEUE_SIZE": str(d.prewarm_queue_size),
        "DETECTOR_BOX_THRESHOLD": f"{d.detector_box_threshold:g}",
        "DETECTOR_TEXT_THRESHOLD": f"{d.detector_text_threshold:g}",
        "PREDICT_BUDGET_S": f"{d.predict_budget_s:g}",
        "FEATURE_STORE_TTL_S": str(d.feature_store_ttl_s),
        "FEATURE_STORE_TIMEOUT_MS": f"{d.feature_store_timeout_s * 1e3:g}",
        "FEATURE_STORE_RETRY_S": f"{d.feature_store_retry_s:g}",
        "CVAT_FUNCTIONS_REDIS_PORT": str(d.redis_port),
        "UPSTREAM_CONNECT_TIMEOUT_S": f"{d.upstream_connect_timeout_s:g}",
        "UPSTREAM_TIMEOUT_S": f"{d.upstream_timeout_s:g}",
        "TRACKING_MAX_OBJECTS": str(d.tracking_max_objects),
        "TRACKING_MAX_SESSIONS": str(d.tracking_max_sessions),
        "TRACKING_SESSION_TTL_S": f"{d.tracking_session_ttl_s:g}",
        "TRACKING_MEMORY_MB": str(d.tracking_memory_bytes // MiB),
        "TRACKING_VERSIONS_KEPT": str(d.tracking_versions_kept),
        "MAX_FRAMES_TO_TRACK": str(d.max_frames_to_track),
        "MAX_FRAMES_PER_REQUEST": str(d.max_frames_per_request),
        "MAX_VIDEO_MB": str(d.max_video_bytes // MiB),
        "MAX_VIDEO_PIXELS": str(d.max_video_pixels),
    }


def _feature_store(r: EnvReader, d: Settings) -> tuple[str, str]:
    """(URL, password) of the shared feature tier: FEATURE_STORE_URL, else CVAT's Redis names."""
    url = r.text("FEATURE_STORE_URL")
    host = r.text("CVAT_FUNCTIONS_REDIS_HOST")
    port = r.integer("CVAT_FUNCTIONS_REDIS_PORT", d.redis_port, minimum=1)
    password = r.text("CVAT_FUNCTIONS_REDIS_PASSWORD")
    if url:
        if not re.match(r"^(rediss?://[^/\s]+|unix://\S+)", url):
            raise SettingsError("FEATURE_STORE_URL", "must be a Redis URL like redis://redis:6379/0")
        return url, ""
    if not host:
        return "", ""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]", host):
        raise SettingsError("CVAT_FUNCTIONS_REDIS_HOST", "must be a host name or address")
    return f"redis://{host}:{port}/0", password
