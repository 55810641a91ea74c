"""Tracking sessions: memory banks kept server-side under an unguessable id.

A session is a chain of immutable *snapshots*, one per tracking step: `(session id, step)`
names one. A step never modifies a snapshot, it adds a new one (copy-on-write), so a client
that re-sends an older state (CVAT after a user edit, a retried request) continues from exactly
that point. Snapshots share their frame memories, and the byte budget counts each memory once
(reference counts), so a step costs one frame's memory per object, not a whole bank.

Bounds: a TTL since last use, at most `versions_kept` snapshots per session (older ones
expire), a byte budget over all sessions with least-recently-used eviction, and a number of
sessions per replica (the least recently used idle one makes room; if every session was used
within `busy_s`, a new one is refused).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .errors import TooManySessions, TrackingExpired
from .model import FrameMemory, MemoryBank


@dataclass(frozen=True)
class StateRef:
    """What a client holds: a session id and a step number in it."""

    session: str
    step: int


@dataclass(frozen=True)
class Snapshot:
    """All objects of a session after one step. `frame_hw` is the (height, width) of the
    track's frames; `frame` the index of the last frame the step saw."""

    ref: StateRef
    frame: int
    frame_hw: tuple[int, int]
    banks: Mapping[str, MemoryBank] = field(default_factory=dict)

    def memories(self) -> list[FrameMemory]:
        return [m for bank in self.banks.values() for m in bank.memories]


@dataclass(frozen=True)
class SessionLimits:
    max_bytes: int = 2 * 2**30
    ttl_s: float = 8 * 3600.0  # CVAT's own state max age
    max_sessions: int = 256
    versions_kept: int = 16
    busy_s: float = 60.0


@dataclass
class _Session:
    last_used: float
    next_step: int = 0
    steps: list[int] = field(default_factory=list)  # oldest first


class SessionStore:
    def __init__(self, limits: SessionLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._lock = threading.Lock()
        self._snapshots: OrderedDict[StateRef, tuple[Snapshot, float]] = OrderedDict()  # LRU order
        self._sessions: dict[str, _Session] = {}
        self._refs: dict[int, tuple[FrameMemory, int]] = {}  # id(memory) -> (memory, count)
        self.nbytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def snapshot_count(self) -> int:
        return len(self._snapshots)

    # -- public ---------------------------------------------------------------------------
    def new_session(self) -> str:
        """Reserve an id (128 random bits). May evict the least recently used idle session."""
        now = self.clock()
        with self._lock:
            self._make_room(now)
            sid = secrets.token_urlsafe(16)
            self._sessions[sid] = _Session(now)
            return sid

    def adopt(self, snapshot: Snapshot) -> Snapshot:
        """Keep a snapshot another replica made (from the shared tier); its session is created
        here if this replica does not know it. Returns the snapshot now held for its ref."""
        now = self.clock()
        ref = snapshot.ref
        with self._lock:
            found = self._snapshots.get(ref)
            if found is not None:  # a concurrent call adopted it first
                return found[0]
            if ref.session not in self._sessions:
                self._make_room(now)
                self._sessions[ref.session] = _Session(now)
        self.put(snapshot)
        return snapshot

    def next_ref(self, session: str) -> StateRef:
        with self._lock:
            info = self._sessions.get(session)
            if info is None:
                raise TrackingExpired()
            info.next_step += 1
            return StateRef(session, info.next_step - 1)

    def put(self, snapshot: Snapshot) -> None:
        now = self.clock()
        ref = snapshot.ref
        with self._lock:
            info = self._sessions.get(ref.session)
            if info is None:
                raise TrackingExpired()
            if ref in self._snapshots:
                return
            for memory in snapshot.memories():
                self._acquire(memory)
            self._snapshots[ref] = (snapshot, now)
            info.steps.append(ref.step)
            info.next_step = max(info.next_step, ref.step + 1)
            info.last_used = now
            while len(info.steps) > self.limits.versions_kept:
                self._drop(StateRef(ref.session, info.steps[0]))
            self._expire(now)
            for old in list(self._snapshots):
                if self.nbytes <= self.limits.max_bytes or old == ref:
                    break
                self._drop(old)
                self.evictions += 1

    def get(self, ref: StateRef) -> Snapshot:
        now = self.clock()
        with self._lock:
            found = self._snapshots.get(ref)
            if found is None or now - found[1] > self.limits.ttl_s:
                raise TrackingExpired()
            self._snapshots[ref] = (found[0], now)
            self._snapshots.move_to_end(ref)
            self._sessions[ref.session].last_used = now
            return found[0]

    def discard(self, session: str) -> None:
        with self._lock:
            self._drop_session(session)

    # -- internals (lock held) ------------------------------------------------------------
    def _make_room(self, now: float) -> None:
        self._expire(now)
        while len(self._sessions) >= self.limits.max_sessions:
            oldest = min(self._sessions.items(), key=lambda kv: kv[1].last_used)
            if now - oldest[1].last_used < self.limits.busy_s:
                raise TooManySessions(
                    f"this replica already tracks {len(self._sessions)} active sessions "
                    "(TRACKING_MAX_SESSIONS); try again shortly"
                )
            self._drop_session(oldest[0])

    def _acquire(self, memory: FrameMemory) -> None:
        held = self._refs.get(id(memory))
        if held is None:
            self._refs[id(memory)] = (memory, 1)
            self.nbytes += memory.nbytes
        else:
            self._refs[id(memory)] = (memory, held[1] + 1)

    def _release(self, memory: FrameMemory) -> None:
        held, count = self._refs[id(memory)]
        if count == 1:
            del self._refs[id(memory)]
            self.nbytes -= held.nbytes
        else:
            self._refs[id(memory)] = (held, count - 1)

    def _drop(self, ref: StateRef) -> None:
        found = self._snapshots.pop(ref, None)
        if found is None:
            return
        for memory in found[0].memories():
            self._release(memory)
        info = self._sessions.get(ref.session)
        if info is not None:
            info.steps.remove(ref.step)
            if not info.steps:
                del self._sessions[ref.session]

    def _drop_session(self, session: str) -> None:
        info = self._sessions.pop(session, None)
        for step in list(info.steps if info else ()):
            found = self._snapshots.pop(StateRef(session, step), None)
            if found is not None:
                for memory in found[0].memories():
                    self._release(memory)

    def _expire(self, now: float) -> None:
        ttl = self.limits.ttl_s
        for ref, (_, used) in list(self._snapshots.items()):
            if now - used > ttl:
                self._drop(ref)
        for sid, info in list(self._sessions.items()):
            if not info.steps and now - info.last_used > ttl:
                del self._sessions[sid]
