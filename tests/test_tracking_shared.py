"""Tracking snapshots in the shared tier: the value format, and two apps sharing one real Redis
(CVAT tracker calls behind the deterministic FakeTracker): a track started on A continues on B,
a corrupt or foreign entry is a 410, and with Redis down A tracks locally. One real SAM2 tiny
run checks that a snapshot loaded by a fresh replica gives the same masks as staying local."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from function.core.engine import Engine, FeatureCache
from function.core.feature_store import ModelIdentity
from function.core.geometry import Box
from function.core.tracking.errors import EXPIRED_MESSAGE
from function.core.tracking.model import TrackPrompt
from function.core.tracking.session import SessionLimits, SessionStore, StateRef
from function.core.tracking.shared import (
    MAGIC,
    SharedSnapshots,
    pack_snapshot,
    redis_snapshots,
    unpack_snapshot,
)
from function.core.tracking.tracker import Tracker
from function.core.wire import CorruptEntry
from function.service.app import App
from function.service.compose import build_app

from .fakes import FakeModel, SharingFakeModel
from .redis_support import RedisServer
from .support import call, encode_image, make_settings
from .tracking_support import STEP_PX, FakeTracker, disc_box, disc_frame, frame

ID = ModelIdentity("sam2.1_hiera_t", "abc123")
RECT = {"type": "rectangle", "points": [10.0, 34.0, 39.0, 63.0], "label_id": 1, "frame": 0}


def image(index: int) -> str:
    return base64.b64encode(encode_image(disc_frame(index))).decode()


def fake_snapshot(steps: int = 8):  # type: ignore[no-untyped-def]
    tracker = Tracker(
        Engine(FakeModel(), FeatureCache(1 << 30)), FakeTracker(), SessionStore(SessionLimits())
    )
    prompts = {"a": TrackPrompt(box=Box(*disc_box(0))), "b": TrackPrompt(box=Box(60, 10, 80, 30))}
    snap, _ = tracker.start(frame(0), prompts)
    for i in range(1, steps + 1):
        snap, _ = tracker.step(snap.ref, frame(i))
    return snap, tracker.model


# -- the value format ---------------------------------------------------------------------------


def test_a_snapshot_round_trips_with_every_bank_and_a_json_header() -> None:
    snap, codec = fake_snapshot()
    blob = pack_snapshot(snap, ID, codec)
    assert blob.startswith(MAGIC)
    size = int.from_bytes(blob[4:8], "little")
    header = json.loads(blob[8 : 8 + size])  # JSON, never pickle
    assert (header["session"], header["step"], header["model"], header["checkpoint"]) == (
        snap.ref.session,
        snap.ref.step,
        ID.name,
        ID.checkpoint,
    )
    assert {a[1] for m in header["memories"] for a in m["arrays"]} == {"|b1", "<i8"}
    back = unpack_snapshot(blob, snap.ref, ID, codec)
    assert (back.ref, back.frame, back.frame_hw, list(back.banks)) == (
        snap.ref,
        snap.frame,
        snap.frame_hw,
        ["a", "b"],
    )
    for key, bank in snap.banks.items():
        other = back.banks[key]
        assert (other.prompt_frame, other.reverse) == (bank.prompt_frame, bank.reverse)
        assert [f for f, _ in other.recent] == [f for f, _ in bank.recent]
        for m, n in zip(bank.memories, other.memories, strict=True):
            assert m.mask_memory == n.mask_memory and m.nbytes == n.nbytes
            assert np.array_equal(m.data["mask"], n.data["mask"]) and m.data["frame"] == n.data["frame"]
    assert sum(not m.mask_memory for m in back.banks["a"].memories) == 2  # 8 steps: 2 pointer-only


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda b: b[:-10], "truncated payload"),
        (lambda b: b[:12], "truncated header"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "checksum"),
        (lambda b: b"PICK" + b[4:], "not a tracking snapshot"),
    ],
)
def test_a_damaged_snapshot_is_refused(damage: Any, why: str) -> None:
    snap, codec = fake_snapshot(2)
    with pytest.raises(CorruptEntry, match=why):
        unpack_snapshot(damage(pack_snapshot(snap, ID, codec)), snap.ref, ID, codec)


def test_a_snapshot_of_another_model_session_or_step_is_refused() -> None:
    snap, codec = fake_snapshot(2)
    blob = pack_snapshot(snap, ID, codec)
    with pytest.raises(CorruptEntry, match="another model"):
        unpack_snapshot(blob, snap.ref, ModelIdentity(ID.name, "ffff"), codec)
    with pytest.raises(CorruptEntry, match="another session"):
        unpack_snapshot(blob, StateRef(snap.ref.session, snap.ref.step + 1), ID, codec)


# -- two apps, one Redis ------------------------------------------------------------------------


def tracker_app(tmp_path: Path, redis: RedisServer | None, name: str) -> App:
    settings: dict[str, Any] = {"prewarm": False}
    if redis is not None:
        settings.update(feature_store_url=redis.url, feature_store_timeout_s=1.0, feature_store_retry_s=30.0)
    return build_app(
        make_settings(tmp_path / name, **settings), model=SharingFakeModel(), tracker_model=FakeTracker()
    )


def track(app: App, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    reply = call(app, "POST", "/", body)
    assert reply.status == status, reply.body
    return reply.body


def shared_of(app: App) -> SharedSnapshots:
    assert app.tracker is not None and app.tracker.shared is not None
    return app.tracker.shared


def test_a_track_started_on_a_continues_on_b(tmp_path: Path, redis_server: RedisServer) -> None:
    a, b = tracker_app(tmp_path, redis_server, "a"), tracker_app(tmp_path, redis_server, "b")
    init = track(a, {"image": image(0), "shapes": [RECT], "states": []})
    s1 = track(a, {"image": image(1), "shapes": [None], "states": init["states"]})
    assert b.tracker is not None and b.tracker.store.snapshot_count == 0  # nothing local on B
    s2 = track(b, {"image": image(2), "shapes": [None], "states": s1["states"]})
    assert s2["shapes"][0]["points"][0] == 10 + 2 * STEP_PX  # B continued A's bank
    assert b.tracker.store.snapshot_count == 2  # A's step 1, adopted, and its own step 2
    assert shared_of(b).stats.loaded == 1
    # back on A with B's state: A loads B's step; step numbers never collide across replicas
    s3 = track(a, {"image": image(3), "shapes": [None], "states": s2["states"]})
    assert s3["shapes"][0]["points"][0] == 10 + 3 * STEP_PX
    steps = [s["states"][0]["step"] for s in (init, s1, s2, s3)]
    assert steps == sorted(set(steps))
    assert shared_of(a).stats.loaded == 1 and shared_of(a).stats.saved == 3
    metrics = call(b, "GET", "/metrics").body["tracking"]["shared"]
    assert metrics["enabled"] and metrics["available"] and metrics["saved"] == 1


def test_step_numbers_stay_unique_when_redis_lost_the_counter(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a, b = tracker_app(tmp_path, redis_server, "a"), tracker_app(tmp_path, redis_server, "b")
    states = track(a, {"image": image(0), "shapes": [RECT], "states": []})["states"]
    for i in (1, 2):
        states = track(a, {"image": image(i), "shapes": [None], "states": states})["states"]
    client = redis_server.client()
    (counter,) = client.keys("sam2-nuclio:t1:*:next")
    client.delete(counter)  # e.g. a restarted Redis that kept only some keys
    on_b = track(b, {"image": image(3), "shapes": [None], "states": states})["states"][0]["step"]
    on_a = track(a, {"image": image(3), "shapes": [None], "states": states})["states"][0]["step"]
    assert states[0]["step"] == 2 and sorted({on_a, on_b}) == [3, 4]
    assert 0 < client.ttl(counter) <= shared_of(a).ttl_s


def test_a_corrupt_or_foreign_snapshot_is_never_used(tmp_path: Path, redis_server: RedisServer) -> None:
    a, b = tracker_app(tmp_path, redis_server, "a"), tracker_app(tmp_path, redis_server, "b")
    init = track(a, {"image": image(0), "shapes": [RECT, RECT], "states": []})
    state = init["states"][0]
    key = shared_of(a).key(StateRef(state["session"], state["step"]))
    client = redis_server.client()
    blob = client.get(key)
    client.set(key, blob[:-100])
    assert track(b, {"image": image(1), "shapes": [None], "states": [state]}, 410) == {
        "error": EXPIRED_MESSAGE
    }
    # another checkpoint's snapshot under our key (a bug elsewhere, a shared Redis)
    snapshot = a.tracker.store.get(StateRef(state["session"], state["step"]))  # type: ignore[union-attr]
    client.set(key, pack_snapshot(snapshot, ModelIdentity(shared_of(a).identity.name, "ffff"), FakeTracker()))
    assert track(b, {"image": image(1), "shapes": [None], "states": [state]}, 410) == {
        "error": EXPIRED_MESSAGE
    }
    assert shared_of(b).stats.rejected == 2 and b.tracker.store.snapshot_count == 0  # type: ignore[union-attr]
    client.set(key, blob)  # the real one again: B continues
    track(b, {"image": image(1), "shapes": [None], "states": [state]})


def test_with_redis_down_a_tracks_locally(tmp_path: Path, redis_server: RedisServer) -> None:
    a, b = tracker_app(tmp_path, redis_server, "a"), tracker_app(tmp_path, redis_server, "b")
    redis_server.stop()
    states = track(a, {"image": image(0), "shapes": [RECT], "states": []})["states"]
    for i in range(1, 4):
        out = track(a, {"image": image(i), "shapes": [None], "states": states})
        assert out["shapes"][0]["points"][0] == 10 + i * STEP_PX
        states = out["states"]
    metrics = call(a, "GET", "/metrics").body["tracking"]["shared"]
    assert not metrics["available"] and metrics["saved"] == 0 and metrics["errors"] == 1  # then the breaker
    assert track(b, {"image": image(4), "shapes": [None], "states": states}, 410) == {
        "error": EXPIRED_MESSAGE
    }


def test_a_snapshot_that_cannot_be_packed_is_kept_local(tmp_path: Path, redis_server: RedisServer) -> None:
    a = tracker_app(tmp_path, redis_server, "a")
    codec = shared_of(a).codec
    codec.export_memory = lambda memory: {"odd": np.array(["text"])}  # type: ignore[method-assign]
    states = track(a, {"image": image(0), "shapes": [RECT], "states": []})["states"]
    out = track(a, {"image": image(1), "shapes": [None], "states": states})
    assert out["shapes"][0]["points"][0] == 10 + STEP_PX
    assert shared_of(a).stats.save_errors == 2 and shared_of(a).metrics()["available"]


def test_without_a_store_nothing_is_shared(tmp_path: Path) -> None:
    app = tracker_app(tmp_path, None, "solo")
    assert app.tracker is not None and app.tracker.shared is None
    assert call(app, "GET", "/metrics").body["tracking"]["shared"] == {"enabled": False}


# -- real SAM2 tiny, once -----------------------------------------------------------------------


@pytest.mark.sam2
def test_sam2_continues_on_a_fresh_replica_with_the_same_masks(
    sam2_model: Any, redis_server: RedisServer
) -> None:
    from function.core.tracking.sam2_tracker import Sam2Tracker

    engine = Engine(sam2_model, FeatureCache(1 << 30))

    def replica() -> Tracker:  # its own tracker state and sessions, the same weights and Redis
        model = Sam2Tracker(sam2_model)
        shared = redis_snapshots(
            redis_server.url, ID, model, password="", timeout_s=5.0, ttl_s=3600, retry_s=30.0
        )
        return Tracker(engine, model, SessionStore(SessionLimits()), shared=shared)

    a, b = replica(), replica()
    snap, _ = a.start(frame(0), {"disc": TrackPrompt(box=Box(*disc_box(0)))})
    snap, _ = a.step(snap.ref, frame(1))
    _, local = a.step(snap.ref, frame(2))
    assert b.store.snapshot_count == 0
    _, remote = b.step(snap.ref, frame(2))
    assert b.shared is not None and b.shared.stats.loaded == 1
    assert local["disc"].score == pytest.approx(remote["disc"].score, abs=1e-4)
    assert np.array_equal(local["disc"].mask, remote["disc"].mask)
