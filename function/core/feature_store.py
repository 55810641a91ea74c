"""A second feature tier shared by replicas: in-process LRU -> shared store -> encode.

Replicas behind one Service see consecutive clicks on one image; without a shared tier each
re-encodes it. `FeatureTier` keeps encoder output in a key-value store (Redis) so that any
replica finds what another encoded. It sits behind `FeatureCache` (engine.py): a local miss
asks the tier (one GET, bounded by a short timeout) before encoding, and a local encode is
published afterwards by a background writer, never on the request's path.

Values are raw float16 arrays after a small header, never pickle (framing: wire.py):

    MAGIC (4 bytes) | header length (uint32 LE) | header (JSON, UTF-8) | payload

The header names the format version, the model (config name + checkpoint hash), the entry's
own cache key, dtype, shapes, the encoded image size and a checksum of the payload. An entry
whose header does not match exactly (another model, another key, a truncated or corrupt
payload) is ignored, counted as rejected and overwritten by the local encode.

Failures never fail a click: every store error opens a circuit breaker (logged once), the
replica encodes locally, and the store is tried again after `retry_s`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import xxhash

from .wire import CorruptEntry, check_payload, frame, unframe

if TYPE_CHECKING:
    from .model import ImageFeatures

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAGIC = b"S2FT"
WIRE_DTYPE = np.dtype("<f2")
MAX_WRITE_DELAY_S = 2.0  # a write waits for running clicks at most this long


@dataclass(frozen=True)
class ModelIdentity:
    """Which weights produced features: entries of other weights are never used."""

    name: str  # e.g. sam2.1_hiera_t
    checkpoint: str  # hash of the checkpoint file's bytes

    @property
    def id(self) -> str:
        return f"{self.name}@{self.checkpoint}"


def checkpoint_hash(path: Any, chunk: int = 8 * 2**20) -> str:
    """xxh3-128 of a checkpoint file (~0.1 s for the 156 MB tiny, ~0.5 s for large)."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:24]


@runtime_checkable
class FeatureCodec(Protocol):
    """The model side of the tier: its features as arrays and back (Sam2Model, test fakes)."""

    def export_features(self, features: ImageFeatures) -> list[np.ndarray]:
        """Arrays (any float dtype) that `import_features` turns back into `features`."""

    def import_features(self, arrays: list[np.ndarray], image_hw: tuple[int, int]) -> ImageFeatures:
        """Features ready for `decode`, from arrays as `export_features` gave them (float16)."""


# -- the value format ---------------------------------------------------------------------------


def pack(key: str, identity: ModelIdentity, arrays: Sequence[np.ndarray], image_hw: tuple[int, int]) -> bytes:
    """One entry: header + the arrays as contiguous little-endian float16."""
    wire = [np.ascontiguousarray(a, dtype=WIRE_DTYPE) for a in arrays]
    header = {
        "v": FORMAT_VERSION,
        "model": identity.name,
        "checkpoint": identity.checkpoint,
        "key": key,
        "dtype": "float16",
        "shapes": [list(a.shape) for a in wire],
        "image_hw": [int(image_hw[0]), int(image_hw[1])],
    }
    return frame(MAGIC, header, b"".join(a.tobytes() for a in wire))


def unpack(blob: bytes, key: str, identity: ModelIdentity) -> tuple[list[np.ndarray], tuple[int, int]]:
    """(float16 arrays, image (h, w)) of an entry for exactly `key` and `identity`, else
    `CorruptEntry`. The arrays are read-only views into `blob`."""
    header, payload = unframe(MAGIC, blob, "feature entry")
    try:
        version, shapes, hw = header["v"], header["shapes"], header["image_hw"]
        model, checkpoint, own_key = header["model"], header["checkpoint"], header["key"]
        dtype = header["dtype"]
    except KeyError:
        raise CorruptEntry("unreadable header") from None
    if version != FORMAT_VERSION:
        raise CorruptEntry(f"format version {version!r}")
    if (model, checkpoint) != (identity.name, identity.checkpoint):
        raise CorruptEntry("features of another model")
    if own_key != key:
        raise CorruptEntry("features of another image")
    if dtype != "float16" or not isinstance(shapes, list) or not _is_hw(hw):
        raise CorruptEntry("unexpected dtype or shapes")
    try:
        counts = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    except (TypeError, ValueError):
        raise CorruptEntry("unexpected shapes") from None
    check_payload(header, payload, sum(counts) * WIRE_DTYPE.itemsize)
    arrays, offset = [], 0
    for shape, count in zip(shapes, counts, strict=True):
        arrays.append(np.frombuffer(payload, WIRE_DTYPE, count, offset).reshape(shape))
        offset += count * WIRE_DTYPE.itemsize
    return arrays, (int(hw[0]), int(hw[1]))


def _is_hw(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)


# -- failure handling ---------------------------------------------------------------------------


class Breaker:
    """Open after a failure: calls are skipped for `retry_s`, then one is let through.

    Logs once when it opens (with the error's type and text) and once when the store works again.
    """

    def __init__(
        self,
        retry_s: float,
        what: str,
        clock: Callable[[], float] = time.monotonic,
        fallback: str = "encoding locally",
    ) -> None:
        self.retry_s = retry_s
        self.what = what
        self.fallback = fallback
        self.clock = clock
        self._open_until: float | None = None
        self._lock = threading.Lock()
        self.opened = 0

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None

    def allow(self) -> bool:
        with self._lock:
            return self._open_until is None or self.clock() >= self._open_until

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            first = self._open_until is None
            self._open_until = self.clock() + self.retry_s
            if first:
                self.opened += 1
        if first:
            log.warning(
                "%s unavailable (%s: %s): %s, retrying every %g s",
                self.what,
                type(exc).__name__,
                str(exc)[:200],
                self.fallback,
                self.retry_s,
            )

    def succeeded(self) -> None:
        with self._lock:
            was_open = self._open_until is not None
            self._open_until = None
        if was_open:
            log.warning("%s reachable again: using it", self.what)


# -- the tier -----------------------------------------------------------------------------------


class KeyValueStore(Protocol):
    """The few calls the tier makes (a `redis.Redis` client has them)."""

    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: bytes, ex: int | None = None) -> Any: ...

    def exists(self, *names: str) -> Any: ...


@dataclass
class TierStats:
    hits: int = 0
    misses: int = 0
    rejected: int = 0  # entries found but not usable (foreign model, corrupt): overwritten
    errors: int = 0  # store calls that failed or timed out
    skipped: int = 0  # calls not made while the breaker was open
    writes: int = 0
    write_errors: int = 0
    dropped: int = 0  # writes pushed out of the full queue
    get_seconds: float = 0.0  # summed over hits: GET + checks + decode


class FeatureTier:
    """Shared features behind `FeatureCache`: `get` on a local miss, `publish` after an encode."""

    def __init__(
        self,
        store: KeyValueStore,
        identity: ModelIdentity,
        codec: FeatureCodec,
        *,
        ttl_s: int,
        retry_s: float,
        queue_size: int = 4,
        store_errors: tuple[type[BaseException], ...] = (OSError,),
        refusals: tuple[type[BaseException], ...] = (),
        idle: Callable[[float], bool] | None = None,
        prefix: str = "sam2-nuclio",
        describe: str = "feature store",
    ) -> None:
        self.store = store
        self.identity = identity
        self.codec = codec
        self.ttl_s = ttl_s
        self.queue_size = max(1, queue_size)
        self.store_errors = store_errors
        # Errors the store answers with (e.g. Redis OOM under `noeviction`): it is reachable,
        # so reads go on; the write is dropped and the first refusal is logged.
        self.refusals = refusals
        # `idle(timeout_s)` returns once no click is being answered (or after timeout_s): the
        # write of an encode waits for the reply that needed it to go out first.
        self.idle = idle
        self._refusal_logged = False
        self.prefix = f"{prefix}:f{FORMAT_VERSION}:{identity.id}:"
        self.describe = describe
        self.breaker = Breaker(retry_s, describe)
        self.stats = TierStats()
        self._queue: deque[tuple[str, ImageFeatures]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def store_key(self, key: str) -> str:
        return self.prefix + key

    # -- read side: on the request path, bounded by the store's timeout ---------------------------
    def get(self, key: str) -> ImageFeatures | None:
        """The features stored for `key`, or None (absent, unusable, store down)."""
        if not self.breaker.allow():
            self.stats.skipped += 1
            return None
        started = time.perf_counter()
        try:
            blob = self.store.get(self.store_key(key))
        except self.store_errors as exc:
            self.stats.errors += 1
            self.breaker.failed(exc)
            return None
        self.breaker.succeeded()
        if blob is None:
            self.stats.misses += 1
            return None
        try:
            arrays, hw = unpack(bytes(blob), key, self.identity)
            features = self.codec.import_features(arrays, hw)
        except CorruptEntry as exc:
            self.stats.rejected += 1
            log.info("feature store entry ignored (%s); it will be overwritten", exc)
            return None
        except Exception as exc:  # e.g. device memory: the click encodes locally instead
            self.stats.rejected += 1
            log.warning("feature store entry not loaded (%s); encoding locally", type(exc).__name__)
            return None
        self.stats.hits += 1
        self.stats.get_seconds += time.perf_counter() - started
        return features

    def exists(self, key: str) -> bool | None:
        """Whether `key` is stored (None: the store cannot say now)."""
        if not self.breaker.allow():
            return None
        try:
            found = bool(self.store.exists(self.store_key(key)))
        except self.store_errors as exc:
            self.stats.errors += 1
            self.breaker.failed(exc)
            return None
        self.breaker.succeeded()
        return found

    # -- write side: a daemon thread, off the request path ----------------------------------------
    def publish(self, key: str, features: ImageFeatures) -> None:
        """Queue a write; returns at once. The oldest queued write is dropped when full."""
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.stats.dropped += 1
            self._queue.append((key, features))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sam2-feature-writer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def write(self, key: str, features: ImageFeatures) -> bool:
        """Store now (the writer thread, `preencode`). False when the store did not take it."""
        if not self.breaker.allow():
            self.stats.skipped += 1
            return False
        blob = pack(key, self.identity, self.codec.export_features(features), features.image_hw)
        try:
            self.store.set(self.store_key(key), blob, ex=self.ttl_s or None)
        except self.refusals as exc:
            self.stats.write_errors += 1
            if not self._refusal_logged:
                self._refusal_logged = True
                log.warning(
                    "%s refused a write (%s); check its maxmemory and maxmemory-policy (allkeys-lru)",
                    self.describe,
                    str(exc)[:200],
                )
            return False
        except self.store_errors as exc:
            self.stats.write_errors += 1
            self.breaker.failed(exc)
            return False
        self.breaker.succeeded()
        self.stats.writes += 1
        return True

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued write is done (tests, preencode, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout_s)

    def close(self, timeout_s: float = 2.0) -> None:
        self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue) or self._closed)
                if self._closed and not self._queue:
                    return
                key, features = self._queue.popleft()
                self._busy = True
            try:
                if self.idle is not None:
                    self.idle(MAX_WRITE_DELAY_S)
                self.write(key, features)
            except Exception as exc:  # a bug must not kill the writer
                self.stats.write_errors += 1
                log.warning("feature store write failed: %s", type(exc).__name__)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def metrics(self) -> dict[str, Any]:
        stats = asdict(self.stats)
        with self._cond:
            pending = len(self._queue)
        return {
            "enabled": True,
            "model": self.identity.id,
            "available": not self.breaker.is_open,
            "breaker_opened": self.breaker.opened,
            "pending_writes": pending,
            **stats,
        }
