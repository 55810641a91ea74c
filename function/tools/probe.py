"""`python -m function probe`: one real /setup + /predict cycle, printed, timed and drawn.

It speaks to the function exactly as Label Studio does (same routes, same bodies), over HTTP
to a running function or in-process through `App.handle`. The image travels as a `data:` URI
in the task, so no Label Studio and no shared cache folder are needed (the reference probe
had to plant files in the backend's cache and only worked with one worker).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from PIL import Image

from function.core.images import LoadedImage, probe_size

from .overlay import RegionError, region_shape, render_cutout, render_overlay
from .probe_prompt import PromptSpec
from .sample import LABEL_CONFIG, sample_png

MAX_PIXELS = 500_000_000  # the probe only reads the size; the function applies its own limit


class ProbeError(Exception):
    """Ends the probe with a message and an exit status (2: usage, 1: the function refused)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class Transport(Protocol):
    description: str

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]: ...


def safe_url(url: str) -> str:
    """The URL without user:password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class HttpTransport:
    def __init__(self, url: str, timeout_s: float) -> None:
        import requests

        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()  # user:password in the URL becomes Basic auth
        self.description = f"function at {safe_url(self.url)}"

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        import requests

        try:
            resp = self.session.request(method, self.url + path, json=body, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise ProbeError(f"cannot reach the {self.description}: {type(exc).__name__}", 1) from None
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, {"error": f"non-JSON reply: {resp.text[:200]!r}"}


class InProcessTransport:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.description = "in-process function"

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        from function.service.app import Request

        reply = self.app.handle(Request(method, path, body, {"Content-Type": "application/json"}))
        return reply.status, reply.body


@dataclass(frozen=True)
class ProbeImage:
    name: str
    data: bytes
    mime: str
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"


def read_image(source: str | None, timeout_s: float) -> ProbeImage:
    """A file path, an http(s) URL, or None for the bundled sample."""
    if source is None:
        data, name = sample_png(), "sample.png"
    elif source.startswith(("http://", "https://")):
        import requests

        try:
            resp = requests.get(source, timeout=timeout_s)
            resp.raise_for_status()
        except requests.RequestException as exc:
            raise ProbeError(f"cannot download {safe_url(source)}: {exc.__class__.__name__}", 1) from None
        data, name = resp.content, Path(urlsplit(source).path).name or "image"
    else:
        try:
            data, name = Path(source).read_bytes(), Path(source).name
        except OSError as exc:
            raise ProbeError(f"cannot read {source}: {exc.strerror}") from None
    try:
        width, height = probe_size(data, MAX_PIXELS)
        with Image.open(io.BytesIO(data)) as img:
            mime = Image.MIME.get(img.format or "", "application/octet-stream")
    except Exception:
        raise ProbeError(f"{name} is not an image this probe can read") from None
    return ProbeImage(name, data, mime, width, height)


@dataclass
class ProbeRun:
    setup_body: dict[str, Any]
    predict_body: dict[str, Any]
    prediction: dict[str, Any] = field(default_factory=dict)
    timings: list[tuple[str, float, str]] = field(default_factory=list)

    def timed(self, step: str, fn: Callable[[], Any], note: str = "") -> Any:
        started = time.perf_counter()
        out = fn()
        self.timings.append((step, time.perf_counter() - started, note))
        return out


def project_for(extra_params: dict[str, Any]) -> str:
    """One probe project per set of extra_params, so concurrent probes never overwrite each other."""
    digest = hashlib.sha1(json.dumps(extra_params, sort_keys=True).encode()).hexdigest()[:10]
    return f"probe-{digest}"


def _encoder_calls(transport: Transport) -> int | None:
    status, body = transport.call("GET", "/metrics")
    calls = body.get("encoder_calls") if status == 200 and isinstance(body, dict) else None
    return calls if isinstance(calls, int) else None


def _checked(step: str, status: int, body: Any) -> dict[str, Any]:
    if status != 200 or not isinstance(body, dict):
        message = body.get("error") if isinstance(body, dict) else body
        raise ProbeError(f"{step} answered HTTP {status}: {message}", 1)
    return body


def run_cycle(
    transport: Transport, image: ProbeImage, prompt: PromptSpec, extra_params: dict[str, Any]
) -> ProbeRun:
    project = project_for(extra_params)
    setup = {"project": project, "schema": LABEL_CONFIG, "extra_params": json.dumps(extra_params)}
    predict = {
        "project": project,
        "tasks": [{"id": 1, "data": {"image": image.data_uri()}}],
        "label_config": LABEL_CONFIG,
        "params": {"login": None, "password": None, "context": {"result": prompt.regions(*image.size)}},
    }
    run = ProbeRun(setup, predict)
    _checked("/setup", *run.timed("setup", lambda: transport.call("POST", "/setup", setup)))
    before = _encoder_calls(transport)
    reply = run.timed("predict", lambda: transport.call("POST", "/predict", predict))
    run.prediction = _checked("/predict", *reply)
    after = _encoder_calls(transport)
    step, seconds, _ = run.timings.pop()
    if before is None or after is None:
        run.timings.append((step, seconds, "encode + decode (no /metrics: cache use unknown)"))
    elif after == before:
        run.timings.append(("decode", seconds, "cache hit: the image features were already cached"))
    else:
        # Ask again: features are cached now, so this one is decode + transfer alone.
        again = run.timed("decode", lambda: transport.call("POST", "/predict", predict))
        _checked("/predict (repeat)", *again)
        repeat = run.timings.pop()[1]
        note = "encoder ran (first /predict minus the repeat)"
        run.timings.append(("encode", max(seconds - repeat, 0.0), note))
        run.timings.append(("decode", repeat, "repeat /predict, cache hit: decode + reply"))
    return run


_NUMBER_LIST = re.compile(r"\[(\s*-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*\s*)\]")


def pretty_json(value: Any) -> str:
    """Indented JSON with every list of plain numbers (RLE, a polygon point) kept on one line."""
    text = json.dumps(value, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(n.strip() for n in m.group(1).split(",")) + "]", text)


def elided(predict_body: dict[str, Any]) -> dict[str, Any]:
    """The /predict body with the base64 image replaced by its length (request.json stays small)."""
    body = json.loads(json.dumps(predict_body))
    for task in body["tasks"]:
        head, _, payload = task["data"]["image"].partition(",")
        task["data"]["image"] = f"{head},<{len(payload)} base64 characters elided>"
    return body


def write_outputs(out: Path, run: ProbeRun, image: ProbeImage, prompt: PromptSpec) -> list[str]:
    """prediction.json, request.json, overlay.png and region-N.png; returns one line per region."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "prediction.json").write_text(pretty_json(run.prediction) + "\n")
    requests_json = {"setup": run.setup_body, "predict": elided(run.predict_body)}
    (out / "request.json").write_text(json.dumps(requests_json, indent=2) + "\n")
    pixels = LoadedImage.from_bytes(image.data, MAX_PIXELS).pixels()
    regions = [r for p in run.prediction.get("results", []) for r in p.get("result", [])]
    shapes, lines = [], []
    for n, region in enumerate(regions, 1):
        try:
            shape = region_shape(region, image.width, image.height)
        except RegionError as exc:
            lines.append(f"region {n}: not drawn ({exc})")
            continue
        shapes.append(shape)
        cutout = render_cutout(pixels, shape)
        if cutout is not None:
            cutout.save(out / f"region-{n}.png")
        labels = region["value"].get(str(region.get("type")), [])
        lines.append(
            f"region {n}: {region.get('type')} {labels} score {float(region.get('score', 0)):.3f}, "
            f"{int(shape.mask.sum())} px, bbox {shape.bbox}"
            + (f" -> region-{n}.png" if cutout is not None else " (empty)")
        )
    render_overlay(pixels, shapes, prompt.drawn(*image.size)).save(out / "overlay.png")
    return lines
