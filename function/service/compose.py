"""The composition root: settings -> model -> engine -> caches -> adapters -> prewarm -> App.

Everything is built here, once per process, in dependency order; nothing is patched after
construction.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from function.adapters.cvat import CvatInteractor
from function.adapters.cvat_detector import CvatDetector
from function.adapters.cvat_tracker import CvatTracker
from function.adapters.errors import BadRequest
from function.adapters.labelstudio.auth import LabelStudioAuth
from function.adapters.labelstudio.backend import LabelStudioBackend
from function.adapters.labelstudio.media import MediaFetcher
from function.adapters.labelstudio.params import parse_options
from function.adapters.labelstudio.projects import Projects, ProjectStore
from function.adapters.labelstudio.tasks import FirstClick
from function.adapters.labelstudio.video import VideoTracking
from function.adapters.sagemaker import SageMakerInvocations
from function.core.checkpoints import require_checkpoint
from function.core.detector import Detector, DetectorMissing, TextPrompt, TextPromptError, Thresholds
from function.core.engine import Engine, FeatureCache
from function.core.feature_store import FeatureCodec, FeatureTier, ModelIdentity, checkpoint_hash
from function.core.images import ImageCache
from function.core.model import SegmentationModel
from function.core.pipeline import Segmenter
from function.core.prewarm import Activity, Prewarmer
from function.core.redis_tier import redis_feature_tier
from function.core.runtime import describe
from function.core.text_segment import TextSegmenter
from function.core.tracking.model import TrackerModel
from function.core.tracking.session import SessionLimits, SessionStore
from function.core.tracking.shared import MemoryCodec, SharedSnapshots, redis_snapshots
from function.core.tracking.tracker import Tracker
from function.settings import Settings, SettingsError

from .app import App
from .redact import Redactor

log = logging.getLogger(__name__)


def load_model(settings: Settings) -> SegmentationModel:
    """SAM2 from the configured checkpoint (CheckpointMissing if it is not on disk), served by
    the configured runtime (RUNTIME: torch, or the exported graphs in onnxruntime/OpenVINO)."""
    from function.core.runtime import RuntimeOptions
    from function.core.runtime import load_model as load_runtime

    checkpoint = require_checkpoint(settings.model_checkpoint, settings.model_config)
    options = RuntimeOptions(
        settings.runtime, settings.cpu_precision, settings.cpu_threads, settings.runtime_cache_dir
    )
    model = load_runtime(settings.model_config, checkpoint, settings.device, options)
    if settings.warmup:
        model.warm_up()
    return model


def load_detector(settings: Settings, device: str) -> Detector | None:
    """The text-prompt detector from DETECTOR_MODEL, on SAM2's device; None when not configured."""
    if settings.detector_model is None:
        return None
    from function.core.hf_detector import TransformersDetector

    try:
        return TransformersDetector.load(settings.detector_model, device)
    except DetectorMissing as exc:
        raise SettingsError("DETECTOR_MODEL", str(exc)) from None


def detector_vocabulary(settings: Settings) -> TextPrompt | None:
    """The CVAT detector's fixed phrases (DETECTOR_PHRASES), checked at start."""
    if not settings.detector_phrases:
        return None
    try:
        return TextPrompt.parse(settings.detector_phrases)
    except TextPromptError as exc:
        raise SettingsError("DETECTOR_PHRASES", exc.message) from None


def label_studio_auth(settings: Settings) -> LabelStudioAuth | None:
    token = settings.label_studio_api_key or settings.label_studio_access_token
    if not (settings.label_studio_url and token):
        return None
    return LabelStudioAuth(
        settings.label_studio_url,
        token,
        timeout_s=settings.connect_timeout_s * 2,
        verify=settings.label_studio_verify_ssl,
    )


def model_identity(settings: Settings) -> ModelIdentity:
    """What shared entries are keyed by: the config name and a hash of the checkpoint's bytes."""
    checkpoint = settings.model_checkpoint
    digest = checkpoint_hash(checkpoint) if checkpoint is not None and checkpoint.is_file() else "none"
    return ModelIdentity(Path(settings.model_config).stem, digest)


def shared_feature_tier(
    settings: Settings,
    model: SegmentationModel,
    activity: Activity | None = None,
    identity: ModelIdentity | None = None,
) -> FeatureTier | None:
    """The Redis tier behind the LRU when FEATURE_STORE_URL (or CVAT's Redis env) is set."""
    if not settings.feature_store_enabled:
        return None
    if not isinstance(model, FeatureCodec):
        raise SettingsError("FEATURE_STORE_URL", "this model cannot share its features")
    identity = identity or model_identity(settings)
    log.info("shared feature tier on for %s (timeout %g s)", identity.id, settings.feature_store_timeout_s)
    return redis_feature_tier(
        settings.feature_store_url,
        identity,
        model,
        password=settings.feature_store_password,
        timeout_s=settings.feature_store_timeout_s,
        ttl_s=settings.feature_store_ttl_s,
        retry_s=settings.feature_store_retry_s,
        idle=activity.wait_idle if activity is not None else None,
    )


def tracker_for(model: SegmentationModel) -> TrackerModel | None:
    """SAM2's video memory on the image model's own weights (no second copy); None for a
    model that cannot track (test fakes)."""
    from function.core.runtime.model import RuntimeSam2Model
    from function.core.sam2_model import Sam2Model

    if isinstance(model, RuntimeSam2Model) and model.source is not None:
        # Served by a CPU runtime: tracking's memory modules run in torch on the same weights
        # (loaded once more, ~0.5-3 s and the checkpoint's size in RAM), on its features.
        model = model.torch_twin()
    if not isinstance(model, Sam2Model):
        return None
    from function.core.tracking.sam2_tracker import Sam2Tracker

    return Sam2Tracker(model)


def shared_snapshots(
    settings: Settings, model: TrackerModel, identity: ModelIdentity | None = None
) -> SharedSnapshots | None:
    """Tracking snapshots in the same Redis as the feature tier, so any replica continues a
    track; kept for the tier's TTL, at most the session TTL."""
    if not settings.feature_store_enabled:
        return None
    if not isinstance(model, MemoryCodec):
        log.warning("this tracking model cannot share its memory: tracks continue only where they started")
        return None
    ttl = math.ceil(settings.tracking_session_ttl_s)
    if settings.feature_store_ttl_s:
        ttl = min(ttl, settings.feature_store_ttl_s)
    return redis_snapshots(
        settings.feature_store_url,
        identity or model_identity(settings),
        model,
        password=settings.feature_store_password,
        timeout_s=settings.feature_store_timeout_s,
        ttl_s=ttl,
        retry_s=settings.feature_store_retry_s,
    )


def build_tracker(
    settings: Settings, engine: Engine, model: TrackerModel, identity: ModelIdentity | None = None
) -> Tracker:
    """The tracking engine on the image engine (the same feature cache); sessions per settings."""
    limits = SessionLimits(
        max_bytes=settings.tracking_memory_bytes,
        ttl_s=settings.tracking_session_ttl_s,
        max_sessions=settings.tracking_max_sessions,
        versions_kept=settings.tracking_versions_kept,
    )
    return Tracker(
        engine,
        model,
        SessionStore(limits),
        max_objects=settings.tracking_max_objects,
        shared=shared_snapshots(settings, model, identity),
    )


def build_app(
    settings: Settings,
    model: SegmentationModel | None = None,
    tracker_model: TrackerModel | None = None,
    detector: Detector | None = None,
) -> App:
    """Load SAM2 and the detector, if configured (unless given), and wire everything once per process."""
    try:  # deployment defaults are checked at start, not on every /predict
        parse_options(dict(settings.default_extra_params))
    except BadRequest as exc:
        raise SettingsError("DEFAULT_EXTRA_PARAMS", exc.message) from None
    vocabulary = detector_vocabulary(settings)
    if model is None:
        model = load_model(settings)
    if detector is None:
        detector = load_detector(settings, model.device)
    activity = Activity()  # clicks in progress: prewarm and tier writes wait for them
    identity = model_identity(settings) if settings.feature_store_enabled else None
    tier = shared_feature_tier(settings, model, activity, identity)
    engine = Engine(model, FeatureCache(settings.feature_cache_bytes, tier))
    images = ImageCache(settings.image_cache_bytes)
    segmenter = Segmenter(engine, images)
    text = TextSegmenter(segmenter, detector) if detector is not None else None
    thresholds = Thresholds(settings.detector_box_threshold, settings.detector_text_threshold)
    tracker_model = tracker_model or tracker_for(model)
    tracker = build_tracker(settings, engine, tracker_model, identity) if tracker_model else None
    redact = Redactor(settings.secrets)
    media = MediaFetcher(settings, images, label_studio_auth(settings))
    projects = Projects(ProjectStore(settings.project_store_dir), settings.default_extra_params)
    prewarmer = None
    if settings.prewarm:
        first_click = FirstClick(projects, segmenter)
        prewarmer = Prewarmer(
            engine,
            activity,
            locate=first_click.image,
            load=media.load,
            first_click_input=first_click.encoder_input,
            queue_size=settings.prewarm_queue_size,
            max_tasks=settings.prewarm_max_tasks,
            redact=redact,
        )
    model_info = {
        "model_config": settings.model_config,
        "device": model.device,
        **describe(model),
        "detector": detector.name if detector is not None else None,
    }
    labelstudio = LabelStudioBackend(
        settings,
        segmenter,
        media,
        projects,
        model_info,
        on_task_open=prewarmer.on_task_open if prewarmer else None,
        text=text,
        video=VideoTracking(settings, tracker, media, settings.resolved_version) if tracker else None,
    )
    return App(
        settings,
        engine=engine,
        images=images,
        labelstudio=labelstudio,
        cvat=CvatInteractor(settings, segmenter, images),
        cvat_detector=CvatDetector(vocabulary, text, thresholds, images, settings.max_image_pixels),
        sagemaker=SageMakerInvocations(settings, segmenter, text, media.load),
        text=text,
        tracker=tracker,
        cvat_tracker=CvatTracker(settings, tracker, segmenter, images) if tracker else None,
        activity=activity,
        prewarmer=prewarmer,
        redact=redact,
    )
