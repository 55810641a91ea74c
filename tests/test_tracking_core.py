"""The tracking engine and its sessions, behind a deterministic model (fast; no SAM2 here)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from function.core.engine import Engine, FeatureCache
from function.core.geometry import Box
from function.core.tracking.errors import (
    EXPIRED_MESSAGE,
    FrameMismatch,
    TooManySessions,
    TrackingExpired,
    TrackingLimit,
)
from function.core.tracking.model import RECENT_MASK_MEMORIES, RECENT_POINTERS, TrackPrompt
from function.core.tracking.session import SessionLimits, SessionStore, StateRef
from function.core.tracking.tracker import ObjectPlan, Tracker
from function.service.errors import status_for

from .fakes import FakeModel
from .tracking_support import STEP_PX, FakeTracker, disc_box, frame


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def build(limits: SessionLimits | None = None, clock: Clock | None = None, max_objects: int = 16):  # type: ignore[no-untyped-def]
    model = FakeModel()
    engine = Engine(model, FeatureCache(1 << 30))
    fake = FakeTracker()
    store = SessionStore(limits or SessionLimits(), clock or Clock())
    return Tracker(engine, fake, store, max_objects=max_objects), fake, model


def box_prompt(index: int = 0) -> TrackPrompt:
    return TrackPrompt(box=Box(*disc_box(index)))


def test_start_then_steps_follow_the_object_and_name_new_steps() -> None:
    tracker, fake, _ = build()
    snap, first = tracker.start(frame(0), {"a": box_prompt()})
    assert first["a"].mask.sum() > 0 and snap.ref.step == 0 and len(snap.ref.session) >= 22
    x0 = np.argwhere(first["a"].mask)[:, 1].min()
    for i in range(1, 4):
        snap, out = tracker.step(snap.ref, frame(i))
        assert snap.ref.step == i and snap.frame == i
        assert np.argwhere(out["a"].mask)[:, 1].min() == x0 + STEP_PX * i
    assert (fake.starts, fake.tracks) == (1, 3)


def test_several_objects_share_one_encode_per_frame() -> None:
    tracker, fake, model = build()
    prompts = {"a": box_prompt(), "b": TrackPrompt(box=Box(80, 10, 100, 30)), "c": box_prompt()}
    snap, out = tracker.start(frame(0), prompts)
    assert set(out) == {"a", "b", "c"}
    for i in range(1, 3):
        snap, out = tracker.step(snap.ref, frame(i))
        assert set(out) == {"a", "b", "c"}
    assert model.encode_calls == 3  # one per frame, not per object
    assert fake.tracks == 6


def test_a_frame_clicked_before_is_not_encoded_again() -> None:
    tracker, _, model = build()
    tracker.engine.features(frame(0).source)  # e.g. an interactor click on this frame
    tracker.start(frame(0), {"a": box_prompt()})
    assert model.encode_calls == 1


def test_memory_bank_is_bounded_over_many_steps_and_store_bytes_stay_flat() -> None:
    limits = SessionLimits(versions_kept=4)
    tracker, fake, _ = build(limits)
    snap, _ = tracker.start(frame(0), {"a": box_prompt()})
    sizes = []
    for i in range(1, 40):
        snap, _ = tracker.step(snap.ref, frame(i % 5))
        bank = snap.banks["a"]
        assert len(bank.recent) <= RECENT_POINTERS - 1 + 1
        assert sum(m.mask_memory for _, m in bank.recent) <= RECENT_MASK_MEMORIES
        sizes.append(tracker.store.nbytes)
    assert tracker.store.snapshot_count == 4
    assert max(sizes[20:]) == min(sizes[20:])  # flat once the bank is full
    # 4 kept versions share memories: prompt + 6 mask memories + 3 more steps, pointers small
    assert tracker.store.nbytes < (1 + RECENT_MASK_MEMORIES + 4) * fake.memory_bytes + 64 * 1024
    # SAM2 reads the six frames before the current one: they are exactly the mask memories
    last = fake.banks_seen[-1]
    kept = [f for f, m in last.recent if m.mask_memory]
    assert kept == list(range(last.last_frame - RECENT_MASK_MEMORIES + 1, last.last_frame + 1))


def test_copy_on_write_an_older_step_resent_continues_from_there() -> None:
    tracker, _, _ = build()
    s0, _ = tracker.start(frame(0), {"a": box_prompt()})
    s1, _ = tracker.step(s0.ref, frame(1))
    s2, _ = tracker.step(s1.ref, frame(2))
    tracker.step(s2.ref, frame(3))
    again, out = tracker.step(s1.ref, frame(2))  # step n re-sent after n+2
    assert again.ref != s2.ref and again.frame == 2
    assert np.array_equal(out["a"].mask, tracker.store.get(again.ref).banks["a"].recent[-1][1].data["mask"])
    assert again.banks["a"].recent[:1] == s2.banks["a"].recent[:1]  # shared, not copied
    assert tracker.store.get(s1.ref) is s1  # the old snapshot is untouched


def test_unknown_and_expired_states_answer_410_with_a_clear_message() -> None:
    clock = Clock()
    tracker, _, _ = build(SessionLimits(ttl_s=60), clock)
    snap, _ = tracker.start(frame(0), {"a": box_prompt()})
    with pytest.raises(TrackingExpired) as unknown:
        tracker.step(StateRef("no-such-session", 0), frame(1))
    assert status_for(unknown.value) == 410 and unknown.value.message == EXPIRED_MESSAGE
    with pytest.raises(TrackingExpired):
        tracker.step(StateRef(snap.ref.session, 99), frame(1))
    clock.now += 61
    with pytest.raises(TrackingExpired):
        tracker.step(snap.ref, frame(1))
    tracker.start(frame(0), {"a": box_prompt()})  # a new start sweeps the expired session out
    assert (
        tracker.store.nbytes
        == tracker.store._snapshots[next(iter(tracker.store._snapshots))][0].banks["a"].nbytes
    )


def test_byte_budget_evicts_least_recently_used_snapshots_first() -> None:
    tracker, _, _ = build(SessionLimits(max_bytes=5 * (1 << 20)))
    a, _ = tracker.start(frame(0), {"a": box_prompt()})
    b, _ = tracker.start(frame(0, np.zeros((96, 128, 3), np.uint8)), {"b": box_prompt()})
    tracker.store.get(a.ref)  # a used more recently than b
    for i in range(1, 5):
        a, _ = tracker.step(a.ref, frame(i))
    assert tracker.store.nbytes <= 5 * (1 << 20)
    with pytest.raises(TrackingExpired):
        tracker.store.get(b.ref)
    tracker.store.get(a.ref)  # the newest step always survives


def test_sessions_per_replica_evict_idle_ones_and_refuse_when_all_are_busy() -> None:
    clock = Clock()
    tracker, _, _ = build(SessionLimits(max_sessions=2, busy_s=30), clock)
    first, _ = tracker.start(frame(0), {"a": box_prompt()})
    clock.now += 40
    tracker.start(frame(0), {"a": box_prompt()})
    tracker.start(frame(0), {"a": box_prompt()})  # evicts the idle first session
    with pytest.raises(TrackingExpired):
        tracker.step(first.ref, frame(1))
    with pytest.raises(TooManySessions) as busy:
        tracker.start(frame(0), {"a": box_prompt()})
    assert status_for(busy.value) == 503 and "TRACKING_MAX_SESSIONS" in busy.value.message


def test_objects_per_session_and_frame_size_are_checked() -> None:
    tracker, _, _ = build(max_objects=2)
    with pytest.raises(TrackingLimit) as many:
        tracker.start(frame(0), {k: box_prompt() for k in "abc"})
    assert status_for(many.value) == 422 and "TRACKING_MAX_OBJECTS" in many.value.message
    snap, _ = tracker.start(frame(0), {"a": box_prompt()})
    with pytest.raises(FrameMismatch) as size:
        tracker.step(snap.ref, frame(1, np.zeros((50, 60, 3), np.uint8)))
    assert "60x50" in size.value.message and "128x96" in size.value.message
    with pytest.raises(FrameMismatch):
        tracker.step(snap.ref, frame(1), objects=["zz"])


def test_two_concurrent_sessions_never_mix() -> None:
    tracker, _, _ = build()
    left = TrackPrompt(box=Box(0, 0, 10, 10))
    right = TrackPrompt(box=Box(60, 60, 70, 70))
    errors: list[BaseException] = []

    def run(prompt: TrackPrompt, seen: list[np.ndarray]) -> None:
        try:
            snap, out = tracker.start(frame(0), {"obj": prompt})
            seen.append(out["obj"].mask)
            for i in range(1, 6):
                snap, out = tracker.step(snap.ref, frame(i))
                seen.append(out["obj"].mask)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    a: list[np.ndarray] = []
    b: list[np.ndarray] = []
    threads = [threading.Thread(target=run, args=(left, a)), threading.Thread(target=run, args=(right, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, (ma, mb) in enumerate(zip(a, b, strict=True)):
        assert np.argwhere(ma)[:, 0].max() < 10 and np.argwhere(mb)[:, 0].min() >= 60, i


def test_run_windows_start_mid_video_and_run_in_reverse() -> None:
    tracker, fake, model = build()
    frames = [frame(i) for i in range(10)]
    plans = {
        "a": ObjectPlan(box_prompt(3), prompt_frame=3, last_frame=6),
        "b": ObjectPlan(box_prompt(5), prompt_frame=5, last_frame=8),
    }
    seen = {i: set(out) for i, out in tracker.run(frames, plans)}
    assert seen == {3: {"a"}, 4: {"a"}, 5: {"a", "b"}, 6: {"a", "b"}, 7: {"b"}, 8: {"b"}}
    assert model.encode_calls == 6  # frames 0-2 and 9 are never encoded
    back = {"a": ObjectPlan(box_prompt(4), prompt_frame=4, last_frame=1, reverse=True)}
    seen_back = [(i, set(out)) for i, out in tracker.run(reversed(frames), back)]
    assert [i for i, _ in seen_back] == [4, 3, 2, 1]
    assert fake.banks_seen[-1].reverse and fake.banks_seen[-1].next_frame() == 1


def test_objects_limit_applies_to_windows_too() -> None:
    tracker, _, _ = build(max_objects=1)
    plans = {k: ObjectPlan(box_prompt(), 0, 2) for k in "ab"}
    with pytest.raises(TrackingLimit):
        list(tracker.run([frame(0)], plans))
