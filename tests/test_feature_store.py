"""The shared feature tier: value format, and two apps sharing one real Redis (fake model).

The model is `SharingFakeModel`: deterministic masks, counted encoder calls, so the tests see
exactly which process encoded what. The mask agreement of real SAM2 features through float16
is in test_shared_tier_processes.py.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from function.core.feature_store import (
    MAGIC,
    CorruptEntry,
    FeatureTier,
    ModelIdentity,
    pack,
    unpack,
)
from function.service.app import App

from .cvat_support import body, full_frame
from .fakes import SharingFakeModel
from .redis_support import RedisServer
from .support import call, encode_image, make_app, sample_array

ID = ModelIdentity("sam2.1_hiera_t", "abc123")
ARRAYS = [np.linspace(-3, 3, 2 * 4 * 4, dtype=np.float32).reshape(1, 2, 4, 4), np.ones((1, 3), np.float32)]


# -- the value format -----------------------------------------------------------------------------


def test_pack_unpack_round_trips_float16_with_the_image_size() -> None:
    arrays, hw = unpack(pack("k1", ID, ARRAYS, (480, 640)), "k1", ID)
    assert hw == (480, 640)
    assert [a.dtype for a in arrays] == [np.float16, np.float16]
    assert [a.shape for a in arrays] == [(1, 2, 4, 4), (1, 3)]
    np.testing.assert_allclose(arrays[0], ARRAYS[0], atol=2e-3)


def test_the_header_is_json_and_never_pickle() -> None:
    blob = pack("k1", ID, ARRAYS, (4, 5))
    assert blob.startswith(MAGIC)
    size = int.from_bytes(blob[4:8], "little")
    header = json.loads(blob[8 : 8 + size])
    assert header["model"] == ID.name and header["checkpoint"] == ID.checkpoint
    assert header["dtype"] == "float16" and header["shapes"] == [[1, 2, 4, 4], [1, 3]]
    assert header["image_hw"] == [4, 5] and header["key"] == "k1" and header["v"] == 1
    assert len(blob) == 8 + size + (32 + 3) * 2


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda b: pack("k1", ModelIdentity("sam2.1_hiera_l", "abc123"), ARRAYS, (4, 5)), "another model"),
        (lambda b: pack("k1", ModelIdentity(ID.name, "other"), ARRAYS, (4, 5)), "another model"),
        (lambda b: pack("k2", ID, ARRAYS, (4, 5)), "another image"),
        (lambda b: b[:-10], "truncated payload"),
        (lambda b: b[:12], "truncated header"),
        (lambda b: b[:-2] + bytes([b[-2] ^ 0xFF, b[-1]]), "checksum"),
        (lambda b: b"\x80\x04\x95pickle", "not a feature entry"),
        (lambda b: b"", "not a feature entry"),
    ],
)
def test_entries_not_exactly_ours_are_rejected(mutate: Any, why: str) -> None:
    blob = mutate(pack("k1", ID, ARRAYS, (4, 5)))
    with pytest.raises(CorruptEntry, match=why):
        unpack(blob, "k1", ID)


# -- two apps, one Redis --------------------------------------------------------------------------


def tier_app(tmp_path: Path, redis: RedisServer, name: str, **overrides: Any) -> tuple[App, SharingFakeModel]:
    model = SharingFakeModel()
    settings = {
        "feature_store_url": redis.url,
        "feature_store_timeout_s": 1.0,  # a loaded 2-core CI machine; production default is 50 ms
        "feature_store_retry_s": 0.2,
        "prewarm": False,
        **overrides,
    }
    return make_app(tmp_path / name, model, **settings), model


def tier_of(app: App) -> FeatureTier:
    assert app.tier is not None
    return app.tier


def click(app: App, frame: bytes, x: int = 300, y: int = 240) -> np.ndarray:
    reply = call(app, "POST", "/", body(frame, pos=[[x, y]]))
    assert reply.status == 200, reply.text
    return full_frame(reply.body, 640, 480)


def frame(shade: int) -> bytes:
    img = sample_array()
    img[:10, :10] = shade  # another image, the same size
    return encode_image(img)


def test_an_image_encoded_on_a_is_clicked_on_b_without_encoding(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a, model_a = tier_app(tmp_path, redis_server, "a")
    b, model_b = tier_app(tmp_path, redis_server, "b")
    mask_a = click(a, frame(1))
    assert tier_of(a).flush(10)
    mask_b = click(b, frame(1))
    assert (model_a.encode_calls, model_b.encode_calls) == (1, 0)
    assert np.array_equal(mask_a, mask_b)
    metrics = call(b, "GET", "/metrics").body
    assert metrics["encoder_calls"] == 0
    assert metrics["feature_store"]["hits"] == 1 and metrics["feature_store"]["available"]
    # B now holds it locally: the next click asks nobody.
    click(b, frame(1), 100, 100)
    assert call(b, "GET", "/metrics").body["feature_store"]["hits"] == 1
    assert call(a, "GET", "/metrics").body["feature_store"]["writes"] == 1


def test_a_key_of_another_image_is_never_served(tmp_path: Path, redis_server: RedisServer) -> None:
    a, _ = tier_app(tmp_path, redis_server, "a")
    b, model_b = tier_app(tmp_path, redis_server, "b")
    click(a, frame(1))
    assert tier_of(a).flush(10)
    click(b, frame(2))
    assert model_b.encode_calls == 1
    # The fake's features carry the image's mean colour: B encoded its own image.
    assert model_b.encoded_images[0][:10, :10].max() == 2


def test_another_models_entry_is_ignored_and_overwritten(tmp_path: Path, redis_server: RedisServer) -> None:
    a, _ = tier_app(tmp_path, redis_server, "a")
    click(a, frame(1))
    assert tier_of(a).flush(10)
    client = redis_server.client()
    (stored,) = client.keys("sam2-nuclio:*")
    own_key = stored.decode().split(":", 3)[-1].split(":", 1)[-1]
    # Another checkpoint wrote features under our key (a bug elsewhere, a shared Redis).
    foreign = pack(own_key, ModelIdentity(tier_of(a).identity.name, "ffff"), [np.ones((1, 4))], (480, 640))
    client.set(stored, foreign)
    b, model_b = tier_app(tmp_path, redis_server, "b")
    click(b, frame(1))
    assert model_b.encode_calls == 1
    assert call(b, "GET", "/metrics").body["feature_store"]["rejected"] == 1
    assert tier_of(b).flush(10)
    unpack(client.get(stored), own_key, tier_of(b).identity)  # ours again


def test_a_truncated_entry_is_ignored(tmp_path: Path, redis_server: RedisServer) -> None:
    a, _ = tier_app(tmp_path, redis_server, "a")
    click(a, frame(1))
    assert tier_of(a).flush(10)
    client = redis_server.client()
    (stored,) = client.keys("sam2-nuclio:*")
    client.set(stored, client.get(stored)[:-100])
    b, model_b = tier_app(tmp_path, redis_server, "b")
    mask = click(b, frame(1))
    assert model_b.encode_calls == 1 and mask.any()
    assert tier_of(b).stats.rejected == 1


def test_redis_stopped_mid_run_then_back(tmp_path: Path, redis_server: RedisServer) -> None:
    a, model_a = tier_app(tmp_path, redis_server, "a")
    click(a, frame(1))
    assert tier_of(a).flush(10)
    redis_server.stop()
    for shade in (2, 3, 4):  # every click answers, from local encodes
        assert click(a, frame(shade)).any()
    assert tier_of(a).flush(10)
    metrics = call(a, "GET", "/metrics").body["feature_store"]
    assert model_a.encode_calls == 4
    assert not metrics["available"] and metrics["breaker_opened"] == 1
    assert metrics["errors"] + metrics["write_errors"] >= 1
    redis_server.start()  # empty: no persistence
    time.sleep(0.3)  # past FEATURE_STORE_RETRY_S (0.2 s here): the next call tries the store again
    click(a, frame(5))
    assert tier_of(a).flush(10)
    assert tier_of(a).metrics()["available"]
    b, model_b = tier_app(tmp_path, redis_server, "b")
    click(b, frame(5))
    assert model_b.encode_calls == 0, "the tier is used again once Redis is back"


def test_a_hanging_redis_costs_one_timeout_and_the_click_answers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a, model_a = tier_app(tmp_path, redis_server, "a", feature_store_timeout_s=0.05)
    sleeper = threading.Thread(target=lambda: redis_server.client().execute_command("DEBUG", "SLEEP", "1.5"))
    sleeper.start()
    try:
        threading.Event().wait(0.2)  # the server is now busy sleeping
        assert click(a, frame(1)).any()
    finally:
        sleeper.join()
    assert model_a.encode_calls == 1
    assert tier_of(a).stats.errors == 1


def test_off_by_default_and_cvat_redis_names(tmp_path: Path) -> None:
    from function.settings import Settings

    app = make_app(tmp_path, SharingFakeModel())
    assert app.tier is None and call(app, "GET", "/metrics").body["feature_store"] == {"enabled": False}
    s = Settings.from_env(
        {
            "CVAT_FUNCTIONS_REDIS_HOST": "cvat_redis_inmem",
            "CVAT_FUNCTIONS_REDIS_PORT": "6380",
            "CVAT_FUNCTIONS_REDIS_PASSWORD": "s3cret-pw",
        }
    )
    assert s.feature_store_url == "redis://cvat_redis_inmem:6380/0" and "s3cret-pw" in s.secrets
    env = {"FEATURE_STORE_URL": "redis://:pw-in-url@r:6379/1", "FEATURE_STORE_TIMEOUT_MS": "30"}
    s = Settings.from_env(env)
    assert s.feature_store_timeout_s == pytest.approx(0.03) and "pw-in-url" in s.secrets
    assert "pw-in-url" not in repr(replace(s))


def test_a_task_opened_on_a_warms_the_tier_for_b(tmp_path: Path, redis_server: RedisServer) -> None:
    from .support import data_uri, keypoint, predict_body

    a, model_a = tier_app(tmp_path, redis_server, "a", prewarm=True)
    b, model_b = tier_app(tmp_path, redis_server, "b")
    image = data_uri(frame(7))
    opened = call(a, "POST", "/predict", predict_body(image, None))  # task open: no context
    assert opened.status == 200
    assert a.prewarmer is not None and a.prewarmer.drain(10)
    assert tier_of(a).flush(10)
    assert model_a.encode_calls == 1
    reply = call(b, "POST", "/predict", predict_body(image, [keypoint(50, 50)]))
    assert reply.status == 200 and model_b.encode_calls == 0


def test_an_entry_the_model_cannot_load_is_ignored(tmp_path: Path, redis_server: RedisServer) -> None:
    class Failing(SharingFakeModel):
        def import_features(self, arrays: list[np.ndarray], image_hw: tuple[int, int]) -> Any:
            raise RuntimeError("device out of memory")

    a, _ = tier_app(tmp_path, redis_server, "a")
    click(a, frame(1))
    assert tier_of(a).flush(10)
    model = Failing()
    b = make_app(
        tmp_path / "b", model, feature_store_url=redis_server.url, feature_store_timeout_s=1.0, prewarm=False
    )
    assert click(b, frame(1)).any() and model.encode_calls == 1
    assert tier_of(b).stats.rejected == 1


def test_a_full_redis_refuses_writes_but_reads_go_on(tmp_path: Path, redis_server: RedisServer) -> None:
    a, _ = tier_app(tmp_path, redis_server, "a")
    click(a, frame(1))
    assert tier_of(a).flush(10)
    client = redis_server.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")  # every write now answers OOM
    b, model_b = tier_app(tmp_path, redis_server, "b")
    click(b, frame(2))  # encoded; its write is refused
    assert tier_of(b).flush(10)
    assert tier_of(b).stats.write_errors == 1 and tier_of(b).metrics()["available"]
    click(b, frame(1))  # still read from Redis
    assert model_b.encode_calls == 1 and tier_of(b).stats.hits == 1


class DictStore:
    """An in-memory KeyValueStore that signals its writes."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.written = threading.Event()

    def get(self, name: str) -> bytes | None:
        return self.data.get(name)

    def set(self, name: str, value: bytes, ex: int | None = None) -> bool:
        self.data[name] = value
        self.written.set()
        return True

    def exists(self, *names: str) -> int:
        return sum(n in self.data for n in names)


def test_a_write_goes_out_after_the_click_that_encoded_it() -> None:
    from function.core.model import ImageFeatures
    from function.core.prewarm import Activity

    activity, store = Activity(), DictStore()
    tier = FeatureTier(store, ID, SharingFakeModel(), ttl_s=0, retry_s=1.0, idle=activity.wait_idle)
    with activity.track():  # the click whose encode is published is still being answered
        tier.publish("k1", ImageFeatures(0.5, (), (4, 5), 100))
        assert not store.written.wait(0.3)
    assert tier.flush(5) and store.written.is_set()
    assert tier.get("k1") is not None and tier.stats.writes == 1
