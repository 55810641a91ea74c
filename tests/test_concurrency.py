"""Many parallel clients on the local server: every answer belongs to its own request, and the
caches stay within their byte budgets while they work.

`ImageIdModel` draws a disc around the click whose radius encodes the image's mean colour, and
every request uses its own click on one of 40 images (distinct colours and sizes), so an
answer computed from another request's image or prompt cannot match the expected mask.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nuclio_sdk
import numpy as np
import pytest

import handler
from function.service.app import App
from function.service.nuclio import NuclioLogHandler, configure_logging
from function.service.server import LocalServer

from .reliability_support import ImageIdModel, id_disc
from .support import data_uri, encode_image, keypoint, make_app, predict_body, region_mask, running

THREADS, PER_THREAD, N_IMAGES = 16, 20, 40


@contextmanager
def running_server(app: App, max_body_bytes: int = 64 * 2**20, log_to_context: bool = False) -> Iterator[str]:
    """The local server on 127.0.0.1 (free port) serving `app` through handler.handler.

    `log_to_context`: route Python logging to the Nuclio logger (stderr) as init_context does."""
    logger = nuclio_sdk.Logger(logging.DEBUG, "sam2-nuclio-test")
    logger.set_handler("default", sys.stderr, nuclio_sdk.logger.HumanReadableFormatter())
    context = nuclio_sdk.Context(logger, worker_id=0, trigger=nuclio_sdk.TriggerInfo("http", "local"))
    context.user_data.app = app
    if log_to_context:
        configure_logging(app.settings, NuclioLogHandler(context.logger))
    server = LocalServer(("127.0.0.1", 0), handler.handler, context, max_body_bytes=max_body_bytes)
    with running(server):
        yield server.url


def post_json(url: str, body: Any, timeout: float = 30.0) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def id_image(k: int) -> tuple[np.ndarray, float]:
    """Image `k`: one colour (so its mean is exact), a size of its own."""
    fill = 10 + 6 * k
    width, height = 48 + 8 * (k % 5), 40 + 4 * (k % 7)
    return np.full((height, width, 3), fill, np.uint8), float(fill)


def test_parallel_clients_each_get_their_own_answer_and_caches_stay_bounded(tmp_path: Path) -> None:
    model = ImageIdModel(feature_bytes=1 << 20, encode_seconds=0.002)
    feature_budget, image_budget = 6 << 20, 48 << 10  # 6 images' features, a few images' pixels
    app = make_app(tmp_path, model)
    app.engine.cache.max_bytes = feature_budget
    app.images.max_bytes = image_budget
    images = [id_image(k) for k in range(N_IMAGES)]
    uris = [data_uri(encode_image(pixels)) for pixels, _ in images]
    largest_pixels = max(p.nbytes for p, _ in images)

    failures: list[str] = []
    peaks = {"features": 0, "images": 0}
    stop = threading.Event()

    def sample_caches() -> None:
        cache = app.engine.cache
        while not stop.is_set():
            with cache._lock:  # the committed state, not an update half done
                peaks["features"] = max(peaks["features"], cache.nbytes)
            peaks["images"] = max(peaks["images"], app.images.nbytes)
            stop.wait(0.001)

    def client(t: int, url: str) -> None:
        rng = np.random.default_rng(t)
        for j in range(PER_THREAD):
            k = int(rng.integers(N_IMAGES))
            pixels, mean = images[k]
            h, w = pixels.shape[:2]
            x_pct, y_pct = float(rng.uniform(5, 95)), float(rng.uniform(5, 95))
            try:
                status, body = post_json(
                    f"{url}/predict", predict_body(uris[k], [keypoint(x_pct, y_pct)], task_id=t * 1000 + j)
                )
            except OSError as exc:
                failures.append(f"thread {t} request {j}: {exc!r}")
                continue
            if status != 200:
                failures.append(f"thread {t} request {j}: HTTP {status} {body}")
                continue
            region = body["results"][0]["result"][0]
            mask = region_mask(region) > 0
            expected = id_disc(w, h, x_pct * w / 100, y_pct * h / 100, mean)
            if mask.shape != (h, w) or not np.array_equal(mask, expected):
                failures.append(f"thread {t} request {j}: mask is not the one for image {k} at its click")

    sampler = threading.Thread(target=sample_caches, daemon=True)
    sampler.start()
    with running_server(app) as url:
        threads = [threading.Thread(target=client, args=(t, url)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
    stop.set()
    sampler.join()

    assert failures == []
    assert model.decode_calls == THREADS * PER_THREAD
    # Every image was encoded at least once and the small cache forced re-encodes.
    assert N_IMAGES <= model.encode_calls < THREADS * PER_THREAD
    assert 0 < peaks["features"] <= feature_budget
    assert app.engine.cache.nbytes <= feature_budget
    # Decoding grows an image before the cache evicts (pipeline.segment calls enforce_budget
    # right after): in flight, the cache may hold one extra decoded image per request.
    assert 0 < peaks["images"] <= image_budget + THREADS * largest_pixels
    assert app.images.nbytes <= image_budget


def test_concurrent_first_clicks_on_one_image_encode_it_once(tmp_path: Path) -> None:
    """Single flight: 12 clients clicking a new image at once cause one encoder pass."""
    model = ImageIdModel(encode_seconds=0.2)
    app = make_app(tmp_path, model)
    pixels, mean = id_image(3)
    uri = data_uri(encode_image(pixels))
    results: list[bool] = []
    h, w = pixels.shape[:2]

    def client(i: int, url: str) -> None:
        x_pct = 10.0 + 6 * i
        status, body = post_json(f"{url}/predict", predict_body(uri, [keypoint(x_pct, 50)]))
        mask = region_mask(body["results"][0]["result"][0]) > 0 if status == 200 else None
        results.append(mask is not None and np.array_equal(mask, id_disc(w, h, x_pct * w / 100, h / 2, mean)))

    with running_server(app) as url:
        threads = [threading.Thread(target=client, args=(i, url)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert results == [True] * 12
    assert model.encode_calls == 1


def test_load_bench_runs_clean_on_a_small_run(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/load.py itself: every answer checked, exit status 0, a markdown table printed."""
    from bench.load import main

    assert main(["--requests", "120", "--clients", "4", "--warmup", "8", "--images", "6"]) == 0
    table = capsys.readouterr().out
    assert "| wrong answers | 0 |" in table and "| 5xx for valid requests | 0 |" in table
