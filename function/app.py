"""Routes a request (method, path, body) to an endpoint and maps errors to HTTP statuses.

Transport-neutral: `handler.py` (Nuclio) and `server.py` (local) both build a `Request`
and send back the `Reply`'s JSON text with `application/json`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .core.detector import Detector
from .core.text_segment import TextSegmenter
from .engine import Engine, FeatureCache, SegmentationModel
from .errors import BadRequest, HttpError, MethodNotAllowed, NotFound, Unauthorized
from .images import ImageCache
from .prewarm import Activity, Prewarmer, build_prewarmer
from .redact import Redactor
from .settings import Settings, SettingsError

log = logging.getLogger(__name__)

ROUTES: dict[str, tuple[str, ...]] = {
    "": ("GET", "POST"),
    "health": ("GET",),
    "live": ("GET",),
    "versions": ("GET",),
    "metrics": ("GET",),
    "setup": ("POST",),
    "predict": ("POST",),
    "webhook": ("POST",),
    "train": ("POST",),
    "ping": ("GET",),  # SageMaker's health check
    "invocations": ("POST",),  # SageMaker's inference route
}
UNAUTHENTICATED = ("live", "ping")
# Any of these keys on `POST /` means a CVAT interactor body (even one missing its image).
_CVAT_KEYS = frozenset(("image", "pos_points", "neg_points", "obj_bbox"))
# A deployment with DETECTOR_PHRASES answers `POST /` bodies without these as CVAT's detector.
_INTERACTOR_KEYS = frozenset(("pos_points", "neg_points", "obj_bbox"))
INTERACTIVE = (
    "predict",
    "",
    "invocations",
)  # POSTs that may be clicks (Label Studio, CVAT): prewarm yields to them


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: Any = None  # dict/list (already JSON), bytes/str (raw) or None
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lower:
                return value
        return None


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # a JSON object; a list only for CVAT's detector

    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return json.dumps(self.body, allow_nan=False, separators=(",", ":"))


def route_name(path: str) -> str:
    """Last path segment, so `/prefix/predict/` routes like `/predict` behind an ingress."""
    return path.rstrip("/").rsplit("/", 1)[-1].lower() if path.strip("/") else ""


def parse_body(body: Any) -> Any:
    """Nuclio gives a dict for `application/json` and bytes otherwise: accept both."""
    if body is None or isinstance(body, (dict, list)):
        return body
    if isinstance(body, (bytes, bytearray, memoryview)):
        raw = bytes(body)
        if not raw.strip():
            return None
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("request body is not UTF-8 JSON") from None
    if isinstance(body, str):
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    raise BadRequest("unsupported request body")


class App:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        images: ImageCache,
        model_info: dict[str, Any],
        detector: Detector | None = None,
    ) -> None:
        from .cvat import CvatInteractor
        from .cvat_detector import CvatDetector
        from .labelstudio.auth import LabelStudioAuth
        from .labelstudio.backend import LabelStudioBackend
        from .labelstudio.media import MediaFetcher
        from .labelstudio.params import parse_options
        from .labelstudio.projects import ProjectStore
        from .sagemaker import SageMakerInvocations

        try:  # deployment defaults are checked at start, not on every /predict
            parse_options(dict(settings.default_extra_params))
        except HttpError as exc:
            raise SettingsError("DEFAULT_EXTRA_PARAMS", exc.message) from None

        self.settings = settings
        self.engine = engine
        self.images = images
        self.redact = Redactor(settings.secrets)
        token = settings.label_studio_api_key or settings.label_studio_access_token
        auth = (
            LabelStudioAuth(
                settings.label_studio_url,
                token,
                timeout_s=settings.connect_timeout_s * 2,
                verify=settings.label_studio_verify_ssl,
            )
            if settings.label_studio_url and token
            else None
        )
        media = self.media = MediaFetcher(settings, images, auth)
        store = ProjectStore(settings.project_store_dir)
        self.text = TextSegmenter(engine, detector, images) if detector is not None else None
        self.labelstudio = LabelStudioBackend(settings, engine, images, media, store, model_info, self.text)
        self.cvat = CvatInteractor(settings, engine, images)
        self.cvat_detector = CvatDetector(settings, self.text, images)
        self.sagemaker = SageMakerInvocations(settings, engine, images, self.text, media.load)
        self.activity = Activity()  # clicks in progress; prewarm waits for them
        self.prewarmer: Prewarmer | None = None
        if settings.prewarm:
            self.prewarmer = build_prewarmer(
                engine,
                self.activity,
                locate=self.labelstudio.task_open_image,
                load=media.load,
                view=self.labelstudio.first_click_source,
                queue_size=settings.prewarm_queue_size,
                max_tasks=settings.prewarm_max_tasks,
                redact=self.redact,
            )
            self.labelstudio.on_task_open = self.prewarmer.on_task_open
        self.handlers: dict[str, Callable[[Request], Reply]] = {
            "": self._root,
            "health": lambda r: Reply(200, self.labelstudio.health()),
            "live": lambda r: Reply(200, {"status": "live"}),
            "versions": lambda r: Reply(200, self.labelstudio.versions()),
            "metrics": lambda r: Reply(200, self.metrics()),
            "setup": lambda r: Reply(200, self.labelstudio.setup(parse_body(r.body))),
            "predict": lambda r: Reply(200, self.labelstudio.predict(parse_body(r.body))),
            "webhook": lambda r: Reply(*self.labelstudio.webhook(parse_body(r.body))),
            "train": lambda r: Reply(200, self.labelstudio.train(parse_body(r.body))),
            "ping": lambda r: Reply(200, {"status": "ok"}),
            "invocations": lambda r: Reply(200, self.sagemaker.invoke(parse_body(r.body))),
        }

    @classmethod
    def create(
        cls, settings: Settings, model: SegmentationModel | None = None, detector: Detector | None = None
    ) -> App:
        """Load SAM2 and the detector, if configured (unless given), and wire everything once per process."""
        if model is None:
            from .engine import Sam2Model
            from .startup import require_checkpoint

            checkpoint = require_checkpoint(settings)
            sam2 = Sam2Model.load(settings.model_config, checkpoint, settings.device)
            if settings.warmup:
                sam2.warm_up()
            model = sam2
        if detector is None and settings.detector_model is not None:
            from .core.detector import TransformersDetector

            detector = TransformersDetector.load(settings.detector_model, model.device)
        engine = Engine(model, FeatureCache(settings.feature_cache_bytes))
        info = {
            "model_config": settings.model_config,
            "device": model.device,
            "detector": detector.name if detector is not None else None,
        }
        return cls(settings, engine, ImageCache(settings.image_cache_bytes), info, detector)

    def metrics(self) -> dict[str, Any]:
        cache = self.engine.cache
        return {
            "feature_cache": {
                "entries": len(cache),
                "bytes": cache.nbytes,
                "max_bytes": cache.max_bytes,
                "hits": cache.hits,
                "misses": cache.misses,
            },
            "encoder_calls": self.engine.stats.encoder_calls,
            "decoder_calls": self.engine.stats.decoder_calls,
            "detector_calls": self.text.detector_calls if self.text is not None else 0,
            "image_cache_bytes": self.images.nbytes,
            "prewarm": self.prewarmer.metrics() if self.prewarmer else {"enabled": False},
        }

    def _root(self, request: Request) -> Reply:
        if request.method == "GET":
            return Reply(200, self.labelstudio.health())
        body = parse_body(request.body)
        if isinstance(body, dict) and self.cvat_detector.enabled and not _INTERACTOR_KEYS.intersection(body):
            return Reply(200, self.cvat_detector.detect(body))
        if isinstance(body, dict) and _CVAT_KEYS.intersection(body):
            return Reply(200, self.cvat.interact(body))
        if isinstance(body, dict) and "tasks" in body:
            return Reply(200, self.labelstudio.predict(body))
        raise BadRequest("POST / expects a CVAT interactor body (image, pos_points) or Label Studio tasks")

    def _check_auth(self, request: Request) -> None:
        s = self.settings
        header = request.header("Authorization") or ""
        scheme, _, encoded = header.partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            user = password = ""
        ok = (
            scheme.lower() == "basic"
            and hmac.compare_digest(user.encode(), s.basic_auth_user.encode())
            and hmac.compare_digest(password.encode(), s.basic_auth_pass.encode())
        )
        if not ok:
            raise Unauthorized("authentication required")

    def handle(self, request: Request) -> Reply:
        started = time.perf_counter()
        name = route_name(request.path)
        method = request.method.upper()
        try:
            if name not in ROUTES:
                raise NotFound(f"no route for {request.path}")
            if method not in ROUTES[name]:
                raise MethodNotAllowed(f"{method} is not allowed on /{name}")
            if self.settings.basic_auth_enabled and name not in UNAUTHENTICATED:
                self._check_auth(request)
            with self.activity.track(method == "POST" and name in INTERACTIVE):
                reply = self.handlers[name](request)
        except HttpError as exc:
            reply = self.error_reply(exc.status, exc.message)
        except Exception:
            log.exception("unhandled error on %s /%s", method, name)
            reply = self.error_reply(500, "internal error; see the function logs")
        log.info("%s /%s -> %d in %.1f ms", method, name, reply.status, (time.perf_counter() - started) * 1e3)
        return reply

    def error_reply(self, status: int, message: str) -> Reply:
        headers = {"WWW-Authenticate": 'Basic realm="sam2-nuclio"'} if status == 401 else {}
        if status >= 500:
            log.error("answering %d: %s", status, message)
        else:
            log.info("answering %d: %s", status, message)
        return Reply(status, {"error": self.redact(message)}, headers)
