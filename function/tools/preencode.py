"""`python -m function preencode`: fill the shared feature tier before annotators start.

    FEATURE_STORE_URL=redis://redis:6379/0 LABEL_STUDIO_API_KEY=... \\
      python -m function preencode --label-studio-url http://label-studio:8080 --project 3
    FEATURE_STORE_URL=redis://redis:6379/0 python -m function preencode --images /data/frames

Lists the project's tasks through the Label Studio API (page by page), fetches each task's
image exactly as a click would (same credentials, limits and content key), encodes it with
the model the function runs (MODEL_SIZE / MODEL_CHECKPOINT: entries are per model) and stores
the features in the tier. What is stored already is skipped, so a second run resumes. The
first Ctrl-C finishes the image in progress, stores it and stops with a report; a second one
stops at once. A broken image is reported and skipped.

The key is what a first click encodes with the deployment's DEFAULT_EXTRA_PARAMS (set the same
env as the function). Projects that crop around each click (subpatching) have nothing to
prepare. `--images DIR` does the same for a folder (CVAT tasks): CVAT sends the original
frame bytes, so files uploaded unchanged get the same key.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from function.core.errors import ExpectedError
from function.settings import Settings, SettingsError

if TYPE_CHECKING:
    from function.core.engine import EncoderInput
    from function.core.images import LoadedImage
    from function.core.model import SegmentationModel
    from function.service.app import App

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Job:
    label: str  # for the report: "task 12" or a relative path, never a URL
    load: Callable[[], LoadedImage]
    view: Callable[[LoadedImage], EncoderInput | None]


@dataclass
class Report:
    total: int | None = None
    encoded: int = 0
    stored_already: int = 0
    nothing_to_prepare: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    stopped: bool = False
    seconds: float = 0.0

    @property
    def seen(self) -> int:
        return self.encoded + self.stored_already + self.nothing_to_prepare + len(self.failed)

    def summary(self) -> str:
        per = f", {self.seconds / self.encoded:.2f} s per encoded image" if self.encoded else ""
        head = "stopped after" if self.stopped else "done:"
        lines = [
            f"preencode {head} {self.seen} of {self.total if self.total is not None else '?'} images in "
            f"{self.seconds:.1f} s{per}: {self.encoded} encoded and stored, {self.stored_already} already "
            f"stored, {self.nothing_to_prepare} with nothing to prepare, {len(self.failed)} failed"
        ]
        lines += [f"  failed: {label}: {why}" for label, why in self.failed]
        return "\n".join(lines)


class ListingFailed(Exception):
    """The task list could not be read (HTTP error, unreachable, not JSON)."""


class Stop:
    """First SIGINT: finish the current image, then stop. Second: KeyboardInterrupt."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __enter__(self) -> Stop:
        self._old = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGINT, self._old)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        print("\nstopping after the current image (Ctrl-C again to stop now)", file=sys.stderr)


def run(
    app: App, jobs: Iterator[Job], total: int | None, stop: threading.Event, progress: bool = True
) -> Report:
    """Encode and store every job's image not stored yet."""
    from tqdm import tqdm

    tier = app.tier
    assert tier is not None
    report = Report(total=total)
    started = time.perf_counter()
    bar = tqdm(total=total, unit="img", disable=None if progress else True, file=sys.stderr)
    try:
        for job in jobs:
            if stop.is_set():
                report.stopped = True
                break
            outcome = _one(app, job, report)
            bar.update(1)
            bar.set_postfix_str(outcome, refresh=False)
    except KeyboardInterrupt:
        report.stopped = True
    except ListingFailed as exc:
        report.failed.append(("task listing", str(exc)))
    finally:
        bar.close()
        tier.flush(30.0)
        report.seconds = time.perf_counter() - started
    return report


def _one(app: App, job: Job, report: Report) -> str:
    tier = app.tier
    assert tier is not None
    try:
        image = job.load()
        source = job.view(image)
        if source is None:
            report.nothing_to_prepare += 1
            return "nothing to prepare"
        stored = tier.exists(source.key)
        if stored is None:
            report.failed.append((job.label, "feature store unavailable"))
            return "store down"
        if stored:
            report.stored_already += 1
            return "stored already"
        app.engine.features(source)  # encodes, and publishes to the tier
        if not tier.flush(30.0) or not tier.exists(source.key):
            report.failed.append((job.label, "the feature store did not take the entry"))
            return "not stored"
        report.encoded += 1
        return "encoded"
    except ExpectedError as exc:
        report.failed.append((job.label, app.redact(exc.message)))
    except (OSError, ValueError) as exc:
        report.failed.append((job.label, type(exc).__name__))
    return "failed"


# -- sources ----------------------------------------------------------------------------------------


def label_studio_jobs(
    app: App, project: int, page_size: int = 100, data_key: str | None = None
) -> tuple[int | None, Iterator[Job]]:
    """(task count, jobs) of a Label Studio project, listed page by page."""
    from function.adapters.labelstudio.tasks import FirstClick

    media = app.labelstudio.media
    first_click = FirstClick(app.labelstudio.projects, app.labelstudio.segmenter)
    auth = media.auth
    if auth is None:
        raise SettingsError("LABEL_STUDIO_API_KEY", "preencode needs a Label Studio token to list tasks")
    base = app.settings.label_studio_url
    timeout = app.settings.download_timeout_s
    verify = app.settings.label_studio_verify_ssl

    def page(number: int) -> tuple[list[dict[str, Any]], int | None]:
        params = {"project": project, "page": number, "page_size": page_size}
        try:
            resp = media.session.get(
                f"{base}/api/tasks", params=params, headers=auth.headers(), timeout=timeout, verify=verify
            )
        except ExpectedError as exc:  # token refresh
            raise ListingFailed(app.redact(exc.message)) from None
        except OSError as exc:  # requests' errors are OSErrors
            raise ListingFailed(f"cannot reach Label Studio ({type(exc).__name__})") from None
        if resp.status_code == 404 and number > 1:  # Label Studio: past the last page
            return [], None
        if resp.status_code != 200:
            raise ListingFailed(
                f"Label Studio answered HTTP {resp.status_code} listing project {project}'s tasks"
            )
        try:
            body = resp.json()
        except ValueError:
            raise ListingFailed("Label Studio's task list is not JSON") from None
        tasks = body.get("tasks", []) if isinstance(body, dict) else body
        total = body.get("total") if isinstance(body, dict) else None
        if not isinstance(tasks, list):
            raise ListingFailed("Label Studio's task list has no tasks array")
        return [t for t in tasks if isinstance(t, dict)], total if isinstance(total, int) else None

    first, total = page(1)

    def jobs() -> Iterator[Job]:
        tasks, number, listed = first, 1, 0
        while tasks:
            for task in tasks:
                yield _task_job(media, first_click, task, data_key)
            listed += len(tasks)
            if len(tasks) < page_size or (total is not None and listed >= total):
                return
            number += 1
            tasks, _ = page(number)

    return total, jobs()


def _task_job(media: Any, first_click: Any, task: dict[str, Any], data_key: str | None) -> Job:
    task_id = task.get("id")
    label = f"task {task_id}"

    def load() -> LoadedImage:
        if data_key is not None:
            data = task.get("data")
            value = data.get(data_key) if isinstance(data, dict) else None
            tid = task_id if isinstance(task_id, int) else None
        else:
            value, tid = first_click.image(task, None)
        loaded: LoadedImage = media.load(value, tid)
        return loaded

    return Job(label, load, lambda image: first_click.encoder_input(image, None))


def folder_jobs(app: App, folder: Path) -> tuple[int, Iterator[Job]]:
    """Every image file under `folder`, encoded as a CVAT click would see it (the whole frame)."""
    from function.core.images import LoadedImage

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    max_pixels = app.settings.max_image_pixels
    segmenter = app.labelstudio.segmenter

    def job(path: Path) -> Job:
        def load() -> LoadedImage:
            return LoadedImage.from_bytes(path.read_bytes(), max_pixels)

        return Job(
            str(path.relative_to(folder)), load, lambda image: segmenter.first_click_input(image, None)
        )

    return len(files), (job(p) for p in files)


# -- command line ---------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "preencode",
        help="encode a Label Studio project's (or a folder's) images into the shared feature tier",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--project", type=int, help="Label Studio project id")
    source.add_argument("--images", type=Path, help="a folder of images (CVAT tasks)")
    p.add_argument("--label-studio-url", help="default: LABEL_STUDIO_URL (token: LABEL_STUDIO_API_KEY)")
    p.add_argument("--data-key", help="task data key of the image (default: as a click finds it)")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=main)


def main(args: argparse.Namespace, model: SegmentationModel | None = None) -> int:
    from function.core.checkpoints import CheckpointMissing
    from function.service.compose import build_app

    try:
        settings = Settings.from_env(os.environ)
        if args.label_studio_url:
            settings = Settings.from_env({**os.environ, "LABEL_STUDIO_URL": args.label_studio_url})
        if not settings.feature_store_enabled:
            raise SettingsError("FEATURE_STORE_URL", "preencode stores into the shared tier: set it")
        if settings.upstream_url:
            raise SettingsError("UPSTREAM_URL", "run preencode where the model runs, not on a proxy")
        # Nothing is kept in this process: features go to the tier only.
        settings = dataclasses.replace(settings, feature_cache_bytes=0, prewarm=False)
        app = build_app(settings, model=model)
        if args.images is not None:
            if not args.images.is_dir():
                raise SettingsError("--images", f"{args.images} is not a folder")
            total: int | None
            total, jobs = folder_jobs(app, args.images)
        else:
            total, jobs = label_studio_jobs(app, args.project, max(1, args.page_size), args.data_key)
    except (SettingsError, CheckpointMissing, ListingFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with Stop() as stop:
        report = run(app, jobs, total, stop.event, progress=not args.no_progress)
    print(report.summary())
    if report.stopped:
        return 130
    return 1 if report.failed else 0
