"""Encode a task's image when Label Studio opens the task, so the first click finds it cached.

Opening a task without predictions makes Label Studio call `/predict` with `context: null`.
That request is answered at once as before; `Prewarmer.on_task_open` only queues the image
of the first `PREWARM_MAX_TASKS` tasks. One daemon thread inside the worker process (the same
under Nuclio and the local server) fetches each queued image the way a click does and encodes
it through `Engine.features` with the key a click uses, so the click finds the features in the
`FeatureCache`, or, if it comes mid-encode, waits for that pass (the cache is single-flight).

Clicks go first: the thread starts a fetch or an encode only while no interactive request
(`Activity`) is running. The queue is bounded, dropping the oldest job when full (the task
opened last is the one the annotator looks at), and deduplicated: an image already queued,
being encoded, or cached is not encoded again. A failure is logged (redacted) and dropped; the
click on that image then goes through its normal error path.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import xxhash

from .engine import EncoderInput, Engine
from .errors import ExpectedError
from .images import LoadedImage

log = logging.getLogger(__name__)

# (task, project id) -> (image reference, task id) a first click on the task would load.
Locate = Callable[[dict[str, Any], str | None], tuple[Any, int | None]]
# (image reference, task id) -> the image, fetched and cached like a click fetches it.
Load = Callable[[Any, int | None], LoadedImage]
# (image, project id) -> what a click would encode, or None when that depends on the prompt
# (e.g. a crop around the click): then there is nothing to prepare before the click.
FirstClickInput = Callable[[LoadedImage, str | None], EncoderInput | None]

_IDLE_POLL_S = 0.25
# What became of one task open's image.
Outcome = Literal["encoded", "skipped", "failed"]


class Activity:
    """Counts interactive requests (clicks) in progress, so background work can yield to them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0

    @property
    def running(self) -> int:
        with self._cond:
            return self._running

    @contextlib.contextmanager
    def track(self, interactive: bool = True) -> Iterator[None]:
        if not interactive:
            yield
            return
        with self._cond:
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                if not self._running:
                    self._cond.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """True once no interactive request runs; False if `timeout_s` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running, timeout_s)


@dataclass
class PrewarmStats:
    queued: int = 0  # jobs accepted into the queue
    encoded: int = 0  # encoder passes run by prewarm
    skipped: int = 0  # already queued, being encoded or cached; no image in the task
    failed: int = 0  # fetch, decode or encode failed (logged, dropped)
    dropped: int = 0  # pushed out of the full queue by newer task opens

    def count(self, outcome: Outcome) -> None:
        if outcome == "encoded":
            self.encoded += 1
        elif outcome == "skipped":
            self.skipped += 1
        else:
            self.failed += 1


@dataclass(frozen=True)
class PrewarmJob:
    ref: str  # dedup identity of the image reference, before its content is known
    value: Any
    task_id: int | None
    project: str | None

    @property
    def label(self) -> str:
        """For logs: never the image reference (URLs can carry presigned credentials)."""
        return f"task {self.task_id}" if self.task_id is not None else "a task"


class Prewarmer:
    def __init__(
        self,
        engine: Engine,
        activity: Activity,
        *,
        locate: Locate,
        load: Load,
        first_click_input: FirstClickInput,
        queue_size: int = 8,
        max_tasks: int = 1,
        redact: Callable[[str], str] = str,
    ) -> None:
        self.engine = engine
        self.activity = activity
        self.locate = locate
        self.load = load
        self.first_click_input = first_click_input
        self.queue_size = max(1, queue_size)
        self.max_tasks = max(0, max_tasks)
        self.redact = redact
        self.stats = PrewarmStats()
        self._queue: deque[PrewarmJob] = deque()
        self._refs: set[str] = set()  # queued or being worked on
        self._busy = False
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- request side: never blocks, never raises ----------------------------------------------
    def on_task_open(self, tasks: list[dict[str, Any]], project: str | None) -> None:
        """Queue the images of the first `max_tasks` tasks; the reply does not wait for them."""
        for task in tasks[: self.max_tasks]:
            try:
                value, task_id = self.locate(task, project)
            except ExpectedError as exc:  # no image in the task: the click will say so
                log.debug("prewarm: nothing to prepare for a task: %s", self.redact(exc.message))
                self._count("skipped")
                continue
            except Exception as exc:  # whatever it is, the task-open reply must not fail
                log.warning("prewarm: cannot find a task's image: %s", type(exc).__name__)
                self._count("failed")
                continue
            self.submit(PrewarmJob(_ref(value), value, task_id, project))

    def submit(self, job: PrewarmJob) -> bool:
        """Queue `job` unless the same image reference is queued or in progress."""
        with self._cond:
            if self._closed:
                return False
            if job.ref in self._refs:
                self.stats.skipped += 1
                return False
            if len(self._queue) >= self.queue_size:
                old = self._queue.popleft()
                self._refs.discard(old.ref)
                self.stats.dropped += 1
            self._queue.append(job)
            self._refs.add(job.ref)
            self.stats.queued += 1
            self._start()
            self._cond.notify_all()
            return True

    def metrics(self) -> dict[str, Any]:
        with self._cond:
            return {"enabled": True, "pending": len(self._queue), **asdict(self.stats)}

    def drain(self, timeout_s: float) -> bool:
        """Wait until the queue is empty and nothing is in progress (tests, benchmarks)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._refs.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    # -- the worker thread ------------------------------------------------------------------------
    def _start(self) -> None:
        # Started on first use, so processes that never see a task open run no extra thread.
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sam2-prewarm", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue) or self._closed)
                if self._closed:
                    return
                job = self._queue.popleft()
                self._busy = True
            try:
                self._prewarm(job)
            except Exception:  # pragma: no cover - _prewarm handles its own errors
                log.exception("prewarm worker error")
            finally:
                with self._cond:
                    self._refs.discard(job.ref)
                    self._busy = False
                    self._cond.notify_all()

    def _prewarm(self, job: PrewarmJob) -> None:
        outcome: Outcome | None = None
        try:
            outcome = self._fetch_and_encode(job)
        except ExpectedError as exc:
            outcome = "failed"
            log.warning("prewarm of %s dropped: %s", job.label, self.redact(exc.message))
        except Exception as exc:
            outcome = "failed"
            # The type only: an unexpected error's text may quote the image reference.
            log.warning("prewarm of %s dropped: %s", job.label, type(exc).__name__)
        finally:
            if outcome is not None:
                self._count(outcome)

    def _count(self, outcome: Outcome) -> None:
        with self._cond:
            self.stats.count(outcome)

    def _fetch_and_encode(self, job: PrewarmJob) -> Outcome | None:
        """The stats counter to bump, or None when closing."""
        if not self._wait_for_clicks():
            return None
        image = self.load(job.value, job.task_id)
        source = self.first_click_input(image, job.project)
        if source is None or self.engine.has_features(source.key):
            return "skipped"
        if not self._wait_for_clicks():  # the fetch took a while: a click may have come
            return None
        _, cached = self.engine.features(source)
        if cached:  # a click got there between the check and the call
            return "skipped"
        log.info("prewarm: encoded the image of %s", job.label)
        return "encoded"

    def _wait_for_clicks(self) -> bool:
        """Block while clicks run (they go first). False when closing."""
        while not self._closed:
            if self.activity.wait_idle(_IDLE_POLL_S):
                return True
        return False


def _ref(value: Any) -> str:
    return xxhash.xxh3_64_hexdigest(repr(value).encode())
