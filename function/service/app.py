"""Routes a request (method, path, body) to an endpoint and answers errors by the status table.

Transport-neutral: the Nuclio glue and the local server both build a `Request` and send
back the `Reply`'s JSON text with `application/json`. Everything the routes need is built
once by `compose.build_app`; this class only routes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from function.adapters.cvat import CvatInteractor
from function.adapters.cvat_detector import CvatDetector
from function.adapters.cvat_tracker import CvatTracker
from function.adapters.errors import BadRequest
from function.adapters.labelstudio.backend import LabelStudioBackend
from function.adapters.sagemaker import SageMakerInvocations
from function.core.engine import Engine
from function.core.errors import ExpectedError
from function.core.feature_store import FeatureTier
from function.core.images import ImageCache
from function.core.prewarm import Activity, Prewarmer
from function.core.runtime import describe
from function.core.text_segment import TextSegmenter
from function.core.tracking.tracker import Tracker
from function.settings import Settings

from .errors import MethodNotAllowed, NotFound, TrackingUnavailable, Unauthorized, status_for
from .messages import Reply, Request, basic_auth_ok, route_name
from .redact import Redactor

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
# ... and any of these a CVAT tracker body (`{image, shapes, states}`).
_TRACKER_KEYS = frozenset(("shapes", "states"))
# POSTs that may be clicks (Label Studio, CVAT, SageMaker): prewarm yields to them
INTERACTIVE = ("predict", "", "invocations")


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
        *,
        engine: Engine,
        images: ImageCache,
        labelstudio: LabelStudioBackend,
        cvat: CvatInteractor,
        cvat_detector: CvatDetector,
        sagemaker: SageMakerInvocations,
        text: TextSegmenter | None,
        tracker: Tracker | None = None,
        cvat_tracker: CvatTracker | None = None,
        activity: Activity,
        prewarmer: Prewarmer | None,
        redact: Redactor,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.images = images
        self.labelstudio = labelstudio
        self.cvat = cvat
        self.tracker = tracker
        self.cvat_tracker = cvat_tracker
        self.cvat_detector = cvat_detector
        self.sagemaker = sagemaker
        self.text = text
        self.activity = activity  # clicks in progress; prewarm waits for them
        self.prewarmer = prewarmer
        self.redact = redact
        self.handlers: dict[str, Callable[[Request], Reply]] = {
            "": self._root,
            "health": lambda r: Reply(200, labelstudio.health()),
            "live": lambda r: Reply(200, {"status": "live"}),
            "versions": lambda r: Reply(200, labelstudio.versions()),
            "metrics": lambda r: Reply(200, self.metrics()),
            "setup": lambda r: Reply(200, labelstudio.setup(parse_body(r.body))),
            "predict": lambda r: Reply(200, labelstudio.predict(parse_body(r.body))),
            "webhook": lambda r: Reply(*labelstudio.webhook(parse_body(r.body))),
            "train": lambda r: Reply(200, labelstudio.train(parse_body(r.body))),
            "ping": lambda r: Reply(200, {"status": "ok"}),
            "invocations": lambda r: Reply(200, sagemaker.invoke(parse_body(r.body))),
        }

    def metrics(self) -> dict[str, Any]:
        return {
            **describe(self.engine.model),
            **self.engine.metrics(),
            "detector_calls": self.text.detector_calls if self.text is not None else 0,
            "image_cache_bytes": self.images.nbytes,
            "prewarm": self.prewarmer.metrics() if self.prewarmer else {"enabled": False},
            "tracking": self.tracker.metrics() if self.tracker else {"enabled": False},
        }

    @property
    def tier(self) -> FeatureTier | None:
        """The shared feature tier behind the engine's LRU (FEATURE_STORE_URL), if any."""
        tier = self.engine.cache.tier
        return tier if isinstance(tier, FeatureTier) else None

    def close(self) -> None:
        """Stop background work (prewarm thread, pending tier writes): tests and benchmarks."""
        if self.prewarmer is not None:
            self.prewarmer.close()
        if self.tier is not None:
            self.tier.close()

    def _root(self, request: Request) -> Reply:
        if request.method == "GET":
            return Reply(200, self.labelstudio.health())
        body = parse_body(request.body)
        if isinstance(body, dict) and self.cvat_detector.enabled and not _INTERACTOR_KEYS.intersection(body):
            return Reply(200, self.cvat_detector.detect(body))
        if isinstance(body, dict) and _TRACKER_KEYS.intersection(body):
            if self.cvat_tracker is None:
                raise TrackingUnavailable("tracking needs the SAM2 model; this function has none loaded")
            return Reply(200, self.cvat_tracker.track(body))
        if isinstance(body, dict) and _CVAT_KEYS.intersection(body):
            return Reply(200, self.cvat.interact(body))
        if isinstance(body, dict) and "tasks" in body:
            return Reply(200, self.labelstudio.predict(body))
        raise BadRequest(
            "POST / expects a CVAT interactor body (image, pos_points), a CVAT tracker body "
            "(image, shapes, states) or Label Studio tasks"
        )

    def _check_auth(self, request: Request) -> None:
        s = self.settings
        if not basic_auth_ok(request.header("Authorization"), s.basic_auth_user, s.basic_auth_pass):
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
        except ExpectedError as exc:
            reply = self.error_reply(status_for(exc), exc.message)
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
