"""Bench case: replicas sharing features through Redis, and the remote-mode proxy's cost.

Rows (one run, side by side):
- first click on replica B after replica A encoded the image: the tier hit (ours) vs B
  encoding it itself (baseline: no tier). Two apps in one process sharing one loaded model,
  each with its own LRU, like two pods; CVAT bodies through `App.handle`.
- tier GET + checks + fp16 -> fp32 for one image (ours) vs the image encoder (baseline).
- mask agreement, tier (fp16) vs local (fp32) features, same clicks: percent of pixels.
- a later click (features cached) through the proxy (ours) vs straight to the server
  (baseline): the proxy's overhead per click, both over loopback HTTP.

Needs Debian's `redis-server` on PATH (started here on a free loopback port, no persistence,
maxmemory 1gb allkeys-lru as deploy/k8s/redis.yaml); without it the tier rows are skipped.

    python bench/shared_tier_case.py [--quick] [--device cpu|cuda] [--model tiny]
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clicks import synthetic_jpeg
from bench.common import model_files
from function.core.sam2_model import Sam2Model
from function.service.app import App, Request
from function.service.compose import build_app
from function.settings import Settings

WIDTH, HEIGHT = 1024, 768


def _row(name: str, ours: float | None, baseline: float | None, unit: str) -> dict[str, Any]:
    ratio = None if ours is None or baseline is None or ours <= 0 else round(baseline / ours, 3)
    return {"name": name, "ours": ours, "baseline": baseline, "unit": unit, "ratio": ratio}


def _redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--maxmemory", "1gb", "--maxmemory-policy", "allkeys-lru", "--dir", str(workdir)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    return None


def _body(jpeg: bytes, x: float, y: float) -> dict[str, Any]:
    return {
        "image": base64.b64encode(jpeg).decode(),
        "pos_points": [[x, y]],
        "neg_points": [],
        "obj_bbox": None,
    }


def _click(app: App, jpeg: bytes, x: float, y: float) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    reply = app.handle(Request("POST", "/", _body(jpeg, x, y)))
    ms = (time.perf_counter() - started) * 1e3
    assert reply.status == 200, reply.text
    return ms, reply.body


def _mask(reply: dict[str, Any]) -> np.ndarray:
    frame = np.zeros((HEIGHT, WIDTH), bool)
    x0, y0, x1, y1 = reply["bounds"]
    if reply["mask"] != [[0]]:
        frame[y0 : y1 + 1, x0 : x1 + 1] = np.asarray(reply["mask"]) > 0
    return frame


def tier_rows(sam2: Sam2Model, base: Settings, url: str, trials: int) -> list[dict[str, Any]]:
    tiered = replace(base, feature_store_url=url, feature_store_timeout_s=1.0)
    a, b = build_app(tiered, model=sam2), build_app(tiered, model=sam2)
    alone = build_app(base, model=sam2)  # replica B without the tier
    assert a.tier is not None and b.tier is not None
    hit, encode, gets, agree = [], [], [], []
    for i in range(trials):
        jpeg = synthetic_jpeg(WIDTH, HEIGHT, 1000 + i)
        _, on_a = _click(a, jpeg, 400, 300)
        a.tier.flush(30)
        ms, on_b = _click(b, jpeg, 400, 300)
        hit.append(ms)
        encode.append(_click(alone, jpeg, 400, 300)[0])
        agree.append(float((_mask(on_a) == _mask(on_b)).mean()) * 100)
        key = next(iter(a.engine.cache._entries))  # the one image A holds
        started = time.perf_counter()
        assert b.tier.get(key) is not None
        gets.append((time.perf_counter() - started) * 1e3)
        for app in (a, b, alone):
            app.engine.cache.trim(0)
    encode_ms = statistics.median(encode)
    return [
        _row(
            "first click on replica B, image encoded on A (Redis tier hit)",
            statistics.median(hit),
            encode_ms,
            "ms",
        ),
        _row(
            "tier GET + decode, one image (8 MiB fp16)", statistics.median(gets), sam2_encode_ms(alone), "ms"
        ),
        _row("mask agreement, tier (fp16) vs local features", min(agree), None, "% pixels"),
    ]


def sam2_encode_ms(app: App) -> float:
    stats = app.engine.stats
    return stats.encode_seconds / max(stats.encoder_calls, 1) * 1e3


def proxy_rows(sam2: Sam2Model, base: Settings, clicks: int) -> list[dict[str, Any]]:
    import logging

    import nuclio_sdk

    from function.service import nuclio
    from function.service.proxy import Proxy
    from function.service.server import LocalServer

    def serve(app: Any) -> LocalServer:
        context = nuclio_sdk.Context(nuclio_sdk.Logger(logging.WARNING, "bench"), worker_id=0)
        context.user_data.app = app
        server = LocalServer(("127.0.0.1", 0), nuclio.handler, context)
        server.start_background()
        return server

    upstream = serve(build_app(base, model=sam2))
    proxy = serve(Proxy(replace(base, upstream_url=upstream.url)))
    jpeg = synthetic_jpeg(WIDTH, HEIGHT, 7)
    data = json.dumps(_body(jpeg, 400, 300)).encode()

    def post(url: str) -> float:
        request = urllib.request.Request(url + "/", data=data, headers={"Content-Type": "application/json"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=120) as resp:
            resp.read()
        return (time.perf_counter() - started) * 1e3

    try:
        post(upstream.url)  # encode once: both then measure later clicks
        direct, proxied = [], []
        for _ in range(clicks):  # interleaved, so load on the machine hits both alike
            direct.append(post(upstream.url))
            proxied.append(post(proxy.url))
    finally:
        for server in (proxy, upstream):
            server.shutdown()
            server.server_close()
    return [
        _row(
            "later click through the remote-mode proxy vs direct (1024x768 CVAT body)",
            statistics.median(proxied),
            statistics.median(direct),
            "ms",
        )
    ]


def rows_for(sam2: Sam2Model, settings: Settings, quick: bool, workdir: Path) -> list[dict[str, Any]]:
    """All rows with a loaded model (bench/run.py passes its own)."""
    trials, clicks = (1, 5) if quick else (5, 30)
    base = replace(settings, warmup=False, prewarm=False, feature_store_url="", upstream_url="")
    rows: list[dict[str, Any]] = []
    redis = _redis(workdir)
    if redis is None:
        print("redis-server not found: tier rows skipped", file=sys.stderr)
    else:
        proc, url = redis
        try:
            rows += tier_rows(sam2, base, url, trials)
        finally:
            proc.terminate()
            proc.wait(10)
    return rows + proxy_rows(sam2, base, clicks)


def run(quick: bool, device: str, model: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="sam2-tier-bench-") as tmp:
        work = Path(tmp)
        files = model_files(model or "tiny", work)
        sam2 = Sam2Model.load(files.config, files.checkpoint, device)
        sam2.warm_up()
        base = Settings(
            model_config=files.config,
            model_checkpoint=files.checkpoint,
            device=device,
            project_store_dir=work / "projects",
        )
        return rows_for(sam2, base, quick, work)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="tiny")
    args = p.parse_args()
    from bench.common import markdown, row_from_json

    print(markdown([row_from_json(r) for r in run(args.quick, args.device, args.model)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
