"""Tracking snapshots in the shared tier, so that any replica continues a track.

With `FEATURE_STORE_URL` set, each snapshot a step makes (every object's memory bank: the
prompted frame's memory, the recent frames' memories, the object pointers) is also written to
the store, synchronously before the reply, so the next call may land on any replica. A replica
asked to continue a `(session, step)` it does not hold loads the snapshot and adopts it.

Values use the tier's framing (`core/wire.py`): raw arrays after a JSON header, never pickle.
The header names the format version, the model (config name + checkpoint hash), the session and
step, the frame, each object's frames and each memory's arrays (name, dtype, shape); a payload
checksum covers the rest. An entry that does not match exactly (other model, other session or
step, truncated, corrupt, a dtype outside a short list) is ignored: the client gets the usual
"tracking state expired". Store failures never fail a step: the breaker of the feature tier
opens, the replica works locally, and the store is tried again after `retry_s`.

Step numbers are reserved with one atomic script call per step on a per-session counter (never
below the replica's own next step), so two replicas continuing one session never write the same
`(session, step)`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..feature_store import Breaker, ModelIdentity
from ..wire import CorruptEntry, check_payload, frame, unframe
from .model import FrameMemory, MemoryBank
from .session import Snapshot, StateRef

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAGIC = b"S2TS"
# Little-endian (or byte-order free) plain dtypes only: nothing that numpy would build objects of.
DTYPES = frozenset({"|b1", "|u1", "|i1", "<u2", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8"})


@runtime_checkable
class MemoryCodec(Protocol):
    """The model side: one frame's memory as named arrays and back (Sam2Tracker, test fakes)."""

    def export_memory(self, memory: FrameMemory) -> dict[str, np.ndarray]:
        """Arrays (dtypes in DTYPES) that `import_memory` turns back into `memory`."""

    def import_memory(self, arrays: Mapping[str, np.ndarray], mask_memory: bool) -> FrameMemory:
        """The memory from `export_memory`'s arrays (read-only views: copy what is kept).
        Raises CorruptEntry (or any error) for arrays that do not fit this model."""


class SnapshotStore(Protocol):
    """The few calls the snapshots make (a `redis.Redis` client has them)."""

    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: bytes, ex: int | None = None) -> Any: ...

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any: ...


# The next step number of a session: one past the larger of the counter and the caller's own
# next step (a counter lost with a restarted Redis catches up), refreshed to the snapshots' TTL.
_RESERVE = """
local n = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if n < floor then
  n = floor
  redis.call('SET', KEYS[1], n)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return n
"""


# -- the value format ---------------------------------------------------------------------------


def pack_snapshot(snapshot: Snapshot, identity: ModelIdentity, codec: MemoryCodec) -> bytes:
    objects, memories, chunks = [], [], []
    for key, bank in snapshot.banks.items():
        objects.append(
            {
                "key": key,
                "prompt_frame": bank.prompt_frame,
                "reverse": bank.reverse,
                "frames": [f for f, _ in bank.recent],
            }
        )
        for memory in bank.memories:
            arrays = []
            for name, array in codec.export_memory(memory).items():
                a = np.ascontiguousarray(array)
                a = a.astype(a.dtype.newbyteorder("<"), copy=False)
                if a.dtype.str not in DTYPES:
                    raise TypeError(f"memory array {name!r} has dtype {a.dtype}")
                arrays.append([name, a.dtype.str, list(a.shape)])
                chunks.append(a.tobytes())
            memories.append({"mask_memory": memory.mask_memory, "arrays": arrays})
    header = {
        "v": FORMAT_VERSION,
        "model": identity.name,
        "checkpoint": identity.checkpoint,
        "session": snapshot.ref.session,
        "step": snapshot.ref.step,
        "frame": snapshot.frame,
        "frame_hw": list(snapshot.frame_hw),
        "objects": objects,
        "memories": memories,
    }
    return frame(MAGIC, header, b"".join(chunks))


def _ints(value: Any, count: int | None = None, minimum: int = 0) -> bool:
    return (
        isinstance(value, list)
        and (count is None or len(value) == count)
        and all(type(v) is int and v >= minimum for v in value)
    )


def unpack_snapshot(blob: bytes, ref: StateRef, identity: ModelIdentity, codec: MemoryCodec) -> Snapshot:
    """The snapshot stored for exactly `ref` by `identity`'s model, else CorruptEntry."""
    header, payload = unframe(MAGIC, blob, "tracking snapshot")
    if header.get("v") != FORMAT_VERSION:
        raise CorruptEntry(f"format version {header.get('v')!r}")
    if (header.get("model"), header.get("checkpoint")) != (identity.name, identity.checkpoint):
        raise CorruptEntry("a snapshot of another model")
    if (header.get("session"), header.get("step")) != (ref.session, ref.step):
        raise CorruptEntry("a snapshot of another session or step")
    objects, memories, hw = header.get("objects"), header.get("memories"), header.get("frame_hw")
    if type(header.get("frame")) is not int or not _ints(hw, 2, 1):
        raise CorruptEntry("unreadable frame")
    if not isinstance(objects, list) or not isinstance(memories, list):
        raise CorruptEntry("unreadable objects")
    specs: list[tuple[bool, list[tuple[str, np.dtype[Any], list[int], int]]]] = []
    for m in memories:
        arrays = m.get("arrays") if isinstance(m, dict) else None
        if not isinstance(arrays, list) or not isinstance(m.get("mask_memory"), bool):
            raise CorruptEntry("unreadable memory")
        parsed = []
        for a in arrays:
            if not (
                isinstance(a, list)
                and len(a) == 3
                and isinstance(a[0], str)
                and a[1] in DTYPES
                and _ints(a[2])
            ):
                raise CorruptEntry("unexpected dtype or shape")
            dtype = np.dtype(a[1])
            parsed.append((a[0], dtype, a[2], math.prod(a[2]) * dtype.itemsize))
        specs.append((m["mask_memory"], parsed))
    check_payload(header, payload, sum(n for _, arrays in specs for *_, n in arrays))
    loaded, offset = [], 0
    for mask_memory, arrays in specs:
        views = {}
        for name, dtype, shape, n in arrays:
            views[name] = np.frombuffer(payload, dtype, n // dtype.itemsize, offset).reshape(shape)
            offset += n
        loaded.append(codec.import_memory(views, mask_memory))
    banks, used = {}, 0
    for o in objects:
        if not (
            isinstance(o, dict)
            and isinstance(o.get("key"), str)
            and type(o.get("prompt_frame")) is int
            and isinstance(o.get("reverse"), bool)
            and _ints(o.get("frames"), minimum=-(2**62))
        ):
            raise CorruptEntry("unreadable object")
        frames = o["frames"]
        if used + 1 + len(frames) > len(loaded):
            raise CorruptEntry("fewer memories than frames")
        prompt, recent = (
            loaded[used],
            tuple(zip(frames, loaded[used + 1 : used + 1 + len(frames)], strict=True)),
        )
        banks[o["key"]] = MemoryBank(o["prompt_frame"], prompt, recent, o["reverse"])
        used += 1 + len(frames)
    if used != len(loaded):
        raise CorruptEntry("more memories than frames")
    return Snapshot(ref, header["frame"], (hw[0], hw[1]), banks)  # type: ignore[index]


# -- the store ----------------------------------------------------------------------------------


@dataclass
class SnapshotStats:
    saved: int = 0
    save_errors: int = 0
    loaded: int = 0
    misses: int = 0
    rejected: int = 0  # entries found but not usable: the client is told the state expired
    errors: int = 0
    skipped: int = 0  # calls not made while the breaker was open


class SharedSnapshots:
    def __init__(
        self,
        store: SnapshotStore,
        identity: ModelIdentity,
        codec: MemoryCodec,
        *,
        ttl_s: int,
        retry_s: float,
        store_errors: tuple[type[BaseException], ...] = (OSError,),
        prefix: str = "sam2-nuclio",
        describe: str = "tracking snapshot store",
    ) -> None:
        self.store = store
        self.identity = identity
        self.codec = codec
        self.ttl_s = max(1, ttl_s)
        self.store_errors = store_errors
        self.prefix = f"{prefix}:t{FORMAT_VERSION}:{identity.id}:"
        self.breaker = Breaker(retry_s, describe, fallback="tracking locally")
        self.stats = SnapshotStats()

    def key(self, ref: StateRef) -> str:
        return f"{self.prefix}{ref.session}:{ref.step}"

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """(True, result) or (False, None) when the breaker is open or the store failed."""
        if not self.breaker.allow():
            self.stats.skipped += 1
            return False, None
        try:
            result = fn(*args, **kwargs)
        except self.store_errors as exc:
            self.stats.errors += 1
            self.breaker.failed(exc)
            return False, None
        self.breaker.succeeded()
        return True, result

    def reserve(self, ref: StateRef) -> StateRef:
        """`ref`, or a later step of its session no replica has used (the store's counter)."""
        counter = f"{self.prefix}{ref.session}:next"
        ok, count = self._call(self.store.eval, _RESERVE, 1, counter, ref.step + 1, self.ttl_s)
        if not ok:
            return ref
        return StateRef(ref.session, max(ref.step, int(count) - 1))

    def save(self, snapshot: Snapshot) -> bool:
        """Store now (False when not stored: the track then continues only on this replica)."""
        try:
            blob = pack_snapshot(snapshot, self.identity, self.codec)
        except Exception as exc:  # e.g. a header over its limit: never fails the step
            self.stats.save_errors += 1
            log.warning("tracking snapshot not shared (%s: %s)", type(exc).__name__, str(exc)[:200])
            return False
        ok, _ = self._call(self.store.set, self.key(snapshot.ref), blob, ex=self.ttl_s)
        if ok:
            self.stats.saved += 1
        else:
            self.stats.save_errors += 1
        return ok

    def load(self, ref: StateRef) -> Snapshot | None:
        """The snapshot stored for `ref`, or None (absent, unusable, store down)."""
        ok, blob = self._call(self.store.get, self.key(ref))
        if not ok:
            return None
        if blob is None:
            self.stats.misses += 1
            return None
        try:
            snapshot = unpack_snapshot(bytes(blob), ref, self.identity, self.codec)
        except Exception as exc:  # CorruptEntry, or arrays the model refuses: never used
            self.stats.rejected += 1
            log.warning("tracking snapshot ignored (%s: %s)", type(exc).__name__, str(exc)[:200])
            return None
        self.stats.loaded += 1
        return snapshot

    def metrics(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "available": not self.breaker.is_open,
            "ttl_s": self.ttl_s,
            **asdict(self.stats),
        }


def redis_snapshots(
    url: str,
    identity: ModelIdentity,
    codec: MemoryCodec,
    *,
    password: str,
    timeout_s: float,
    ttl_s: int,
    retry_s: float,
) -> SharedSnapshots:
    from ..redis_tier import redis_client, redis_errors

    return SharedSnapshots(
        redis_client(url, password, timeout_s),
        identity,
        codec,
        ttl_s=ttl_s,
        retry_s=retry_s,
        store_errors=redis_errors(),
        describe="tracking snapshot store (Redis)",
    )
