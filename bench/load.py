"""Load test: the local server in-process, N clients, a mix of valid and invalid requests.

    python -m bench.load                      # FakeModel (mask encodes the image), 1000 requests
    MODEL_CHECKPOINT=sam2.1_hiera_tiny.pt python -m bench.load --real --requests 200

Checks every answer: a valid click must get exactly its own image's mask (fake model) or a
mask of its image's size (real model); an invalid request must get its expected 4xx. Prints
a markdown table (throughput, latency, statuses, RSS) and exits 1 on any wrong answer, any
5xx for a valid request, or RSS growth over --max-rss-growth-mb. Talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from function.service.app import App  # noqa: E402
from function.service.compose import build_app as compose_app  # noqa: E402
from function.settings import Settings  # noqa: E402
from tests.reliability_support import ImageIdModel, id_disc  # noqa: E402
from tests.support import data_uri, encode_image, keypoint, predict_body, region_mask, sample_array  # noqa: E402
from tests.test_concurrency import running_server  # noqa: E402


@dataclass(frozen=True)
class Job:
    kind: str  # "click", "no-context" or the name of an invalid case
    path: str
    body: bytes
    expect: int  # HTTP status
    image: int = -1  # index into the image set, for clicks
    click: tuple[float, float] = (0.0, 0.0)  # percent


def make_images(count: int) -> list[tuple[np.ndarray, str]]:
    """Distinct backgrounds and sizes, so every image has its own mean colour and shape."""
    out = []
    for k in range(count):
        pixels = sample_array(320 + 16 * (k % 9), 240 + 12 * (k % 7))
        pixels[pixels == 30] = 31 + 9 * k % 180
        out.append((pixels, data_uri(encode_image(pixels))))
    return out


INVALID: dict[str, tuple[str, bytes, int]] = {
    "not-json": ("/predict", b"{tasks: [", 400),
    "no-tasks": ("/predict", b'{"tasks": []}', 400),
    "bad-base64": ("/predict", b"", 400),  # body filled in per job
    "not-an-image": ("/predict", b"", 422),
    "outside": ("/predict", b"", 422),
    "nan": ("/predict", b"", 422),
    "unknown-route": ("/nowhere", b"{}", 404),
}


def make_jobs(n: int, images: list[tuple[np.ndarray, str]], invalid_share: float, seed: int) -> list[Job]:
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        k = rng.randrange(len(images))
        x, y = rng.uniform(3, 97), rng.uniform(3, 97)
        uri = images[k][1]
        if rng.random() >= invalid_share:
            if rng.random() < 0.1:  # task open: no context, no image work
                body = json.dumps(predict_body(uri, None, task_id=i)).encode()
                jobs.append(Job("no-context", "/predict", body, 200))
                continue
            body = json.dumps(predict_body(uri, [keypoint(x, y)], task_id=i)).encode()
            jobs.append(Job("click", "/predict", body, 200, k, (x, y)))
            continue
        kind = rng.choice(list(INVALID))
        path, body, status = INVALID[kind]
        if kind == "bad-base64":
            body = json.dumps(predict_body("data:image/png;base64,@@@", [keypoint(x, y)])).encode()
        elif kind == "not-an-image":
            text = base64.b64encode(b"GIF89a-no-really").decode()
            body = json.dumps(predict_body(f"data:image/gif;base64,{text}", [keypoint(x, y)])).encode()
        elif kind == "outside":
            body = json.dumps(predict_body(uri, [keypoint(x + 120, y)])).encode()
        elif kind == "nan":
            body = (
                json.dumps(predict_body(uri, [keypoint(x, y)]))
                .encode()
                .replace(b'"y": ', b'"y": NaN, "_": ', 1)
            )
        jobs.append(Job(kind, path, body, status))
    return jobs


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Outcome:
    job: Job
    status: int
    seconds: float
    wrong: str = ""


def check(job: Job, status: int, payload: bytes, images: list[tuple[np.ndarray, str]], real: bool) -> str:
    """'' if the answer is right, else what is wrong with it."""
    if status != job.expect:
        return f"{job.kind}: HTTP {status}, expected {job.expect}"
    try:
        body = json.loads(payload)
    except ValueError:
        return f"{job.kind}: answer is not JSON"
    if job.expect >= 400:
        return "" if isinstance(body.get("error"), str) else f"{job.kind}: no error message"
    if job.kind == "no-context":
        return "" if body == {"results": []} else f"no-context: {body}"
    pixels = images[job.image][0]
    h, w = pixels.shape[:2]
    mask = region_mask(body["results"][0]["result"][0]) > 0
    if mask.shape != (h, w):
        return f"click: mask {mask.shape} for a {w}x{h} image"
    if real:
        return ""
    x, y = job.click
    expected = id_disc(w, h, x * w / 100, y * h / 100, float(pixels.mean()))
    return "" if np.array_equal(mask, expected) else f"click: not the mask of image {job.image} at its click"


def run_client(
    url: str, jobs: list[Job], images: list[tuple[np.ndarray, str]], real: bool, out: list[Outcome]
) -> None:
    host, port = url.removeprefix("http://").split(":")
    assert host == "127.0.0.1"
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    for job in jobs:
        started = time.perf_counter()
        try:
            conn.request("POST", job.path, job.body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            status, payload = resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=300)
            out.append(Outcome(job, 0, time.perf_counter() - started, f"{job.kind}: {type(exc).__name__}"))
            continue
        elapsed = time.perf_counter() - started
        out.append(Outcome(job, status, elapsed, check(job, status, payload, images, real)))
    conn.close()


def build_app(args: argparse.Namespace, store: Path) -> App:
    settings = replace(
        Settings.from_env(os.environ),
        project_store_dir=store,
        image_cache_bytes=args.image_cache_mb * 2**20,
        feature_cache_bytes=args.feature_cache_mb * 2**20,
    )
    if args.real:
        return compose_app(settings)
    return compose_app(replace(settings, warmup=False), model=ImageIdModel(feature_bytes=16 * 2**20))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3 if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--invalid-share", type=float, default=0.3)
    parser.add_argument("--image-cache-mb", type=int, default=16)
    parser.add_argument("--feature-cache-mb", type=int, default=128)
    parser.add_argument(
        "--max-rss-growth-mb",
        type=float,
        help="default: 150 + the image cache budget (+ the feature cache budget with --real)",
    )
    parser.add_argument("--real", action="store_true", help="the real SAM2 model (MODEL_CHECKPOINT)")
    parser.add_argument("--warmup", type=int, default=100, help="uncounted requests before measuring")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    images = make_images(args.images)
    jobs = make_jobs(args.requests, images, args.invalid_share, args.seed)
    with tempfile.TemporaryDirectory() as store:
        app = build_app(args, Path(store))
        outcomes: list[Outcome] = []
        peaks = {"features": 0, "images": 0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.01):
                peaks["features"] = max(peaks["features"], app.engine.cache.nbytes)
                peaks["images"] = max(peaks["images"], app.images.nbytes)

        with running_server(app) as url:
            # Warm-up (not counted): lazy imports and first allocations are not growth.
            run_client(
                url, make_jobs(args.warmup, images, args.invalid_share, args.seed + 1), images, args.real, []
            )
            rss_before = rss_mb()
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            shares = [jobs[i :: args.clients] for i in range(args.clients)]
            per_client: list[list[Outcome]] = [[] for _ in shares]
            threads = [
                threading.Thread(target=run_client, args=(url, share, images, args.real, per_client[i]))
                for i, share in enumerate(shares)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
            stop.set()
            sampler.join()
        app.close()
        for chunk in per_client:
            outcomes += chunk
        rss_after, rss_peak = rss_mb(), rss_mb("VmHWM")

    valid = [o for o in outcomes if o.job.expect < 400]
    wrong = [o.wrong for o in outcomes if o.wrong]
    valid_5xx = sum(1 for o in valid if o.status >= 500 or o.status == 0)
    statuses = Counter(o.status for o in outcomes)
    clicks = [o.seconds for o in valid if o.job.kind == "click"]
    every = [o.seconds for o in outcomes]
    model = "SAM2 (" + app.settings.model_config + ")" if args.real else "FakeModel (ImageIdModel)"
    rows = [
        ("machine", f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"),
        ("model", model),
        (
            "requests / clients",
            f"{len(outcomes)} / {args.clients} ({len(valid)} valid, {len(outcomes) - len(valid)} invalid)",
        ),
        ("images", f"{len(images)} distinct, {app.engine.stats.encoder_calls} encoder passes (with warm-up)"),
        ("wall time", f"{wall:.2f} s"),
        ("throughput", f"{len(outcomes) / wall:.0f} req/s"),
        ("latency p50 / p95, all", f"{percentile(every, 50):.1f} / {percentile(every, 95):.1f} ms"),
        ("latency p50 / p95, clicks", f"{percentile(clicks, 50):.1f} / {percentile(clicks, 95):.1f} ms"),
        ("statuses", ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))),
        ("wrong answers", str(len(wrong))),
        ("5xx for valid requests", str(valid_5xx)),
        ("RSS after warm-up / after run / peak", f"{rss_before:.0f} / {rss_after:.0f} / {rss_peak:.0f} MiB"),
        ("feature cache peak / budget", f"{peaks['features'] / 2**20:.0f} / {args.feature_cache_mb} MiB"),
        ("image cache peak / budget", f"{peaks['images'] / 2**20:.1f} / {args.image_cache_mb} MiB"),
    ]
    print("| metric | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    for line in wrong[:10]:
        print("wrong:", line, file=sys.stderr)
    growth = rss_after - rss_before
    if args.max_rss_growth_mb is None:
        args.max_rss_growth_mb = 150 + args.image_cache_mb + (args.feature_cache_mb if args.real else 0)
    ok = not wrong and valid_5xx == 0 and growth <= args.max_rss_growth_mb
    if growth > args.max_rss_growth_mb:
        print(f"RSS grew by {growth:.0f} MiB (limit {args.max_rss_growth_mb:.0f})", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
