"""Two server processes (replicas) share one real Redis, with real SAM2 tiny (random weights).

An image encoded on A is clicked on B: B runs no encoder (its /metrics says so) and returns the
same mask as A, within float16 agreement (>= 99.99 % of pixels).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from .redis_support import RedisServer
from .server_process import function_process, http_json
from .support import data_uri, encode_image, keypoint, predict_body, region_mask, sample_array

pytestmark = pytest.mark.sam2


def textured(width: int = 320, height: int = 240) -> np.ndarray:
    rng = np.random.default_rng(7)
    img = sample_array(width, height).astype(np.int16)
    img += rng.integers(-20, 20, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def click(url: str, image: str, x: float, y: float) -> np.ndarray:
    body = predict_body(image, [keypoint(x, y, w=320, h=240)])
    status, reply = http_json("POST", f"{url}/predict", body)
    assert status == 200, reply
    (region,) = reply["results"][0]["result"]
    return region_mask(region) > 0


def test_replica_b_clicks_what_replica_a_encoded(
    tmp_path: Path, redis_server: RedisServer, tiny_checkpoint: Path
) -> None:
    env = {
        "MODEL_CHECKPOINT": str(tiny_checkpoint),
        "FEATURE_STORE_URL": redis_server.url,
        "FEATURE_STORE_TIMEOUT_MS": "2000",  # two model processes on a 2-core machine
        "PROJECT_STORE_DIR": str(tmp_path / "projects"),
    }
    image = data_uri(encode_image(textured()))
    with (
        function_process(env, tmp_path / "a.log") as a,
        function_process(env, tmp_path / "b.log") as b,
    ):
        mask_a = click(a, image, 50, 50)
        # A's write happens after its reply: wait for it.
        for _ in range(200):
            if http_json("GET", f"{a}/metrics")[1]["feature_store"]["writes"] == 1:
                break
            time.sleep(0.05)
        mask_b = click(b, image, 50, 50)
        metrics_b = http_json("GET", f"{b}/metrics")[1]
        assert metrics_b["encoder_calls"] == 0
        assert metrics_b["feature_store"]["hits"] == 1
        assert http_json("GET", f"{a}/metrics")[1]["encoder_calls"] == 1
        agreement = float((mask_a == mask_b).mean())
        assert agreement >= 0.9999, agreement
        # A second click on B is served from B's own LRU.
        click(b, image, 30, 30)
        assert http_json("GET", f"{b}/metrics")[1]["feature_store"]["hits"] == 1
