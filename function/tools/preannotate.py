"""`python -m function preannotate`: text-prompt predictions for a whole Label Studio project.

Reads the project's label config and tasks through the Label Studio API, runs each task
through this function's own `/setup` + `/predict` (the project's default text prompt, as
Label Studio's "Retrieve predictions" would), and posts each result to `/api/predictions/`.
Resumable: tasks that already hold a prediction of this model version are skipped. Reports
counts and time at the end. Use it for projects too large for one synchronous batch call.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from function.adapters.labelstudio.auth import LabelStudioAuth
from function.core.errors import ExpectedError
from function.service.app import App
from function.service.compose import build_app
from function.service.messages import Request

log = logging.getLogger(__name__)
PAGE_SIZE = 100


class PreannotateError(RuntimeError):
    pass


@dataclass
class Counts:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    regions: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.done} predicted ({self.regions} regions), {self.skipped} skipped (already predicted), "
            f"{self.failed} failed, in {self.seconds:.1f} s"
        )


class LabelStudioClient:
    def __init__(self, url: str, token: str, timeout_s: float = 30.0, verify: bool = True) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.auth = LabelStudioAuth(self.url, token, session=self.session, timeout_s=timeout_s, verify=verify)
        self.timeout_s = timeout_s
        self.verify = verify

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.session.request(
                method,
                f"{self.url}{path}",
                headers=self.auth.headers(),
                timeout=self.timeout_s,
                verify=self.verify,
                **kw,
            )
        except requests.RequestException as exc:
            raise PreannotateError(
                f"{method} {path}: cannot reach Label Studio ({type(exc).__name__})"
            ) from None
        if resp.status_code >= 400:
            raise PreannotateError(f"{method} {path}: HTTP {resp.status_code}")
        return resp.json() if resp.content else None

    def project(self, pid: int) -> dict[str, Any]:
        found = self._call("GET", f"/api/projects/{pid}/")
        if not isinstance(found, dict) or not isinstance(found.get("label_config"), str):
            raise PreannotateError(f"project {pid} has no label config")
        return found

    def tasks(self, pid: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            params = {"project": pid, "page": page, "page_size": PAGE_SIZE, "fields": "all"}
            try:
                body = self._call("GET", "/api/tasks/", params=params)
            except PreannotateError as exc:
                if page > 1 and "HTTP 404" in str(exc):  # past the last page
                    break
                raise
            batch = body.get("tasks", []) if isinstance(body, dict) else body
            if not batch:
                break
            out.extend(t for t in batch if isinstance(t, dict))
            total = body.get("total") if isinstance(body, dict) else None
            if (isinstance(total, int) and len(out) >= total) or len(batch) < PAGE_SIZE:
                break
            page += 1
        return out

    def post_prediction(self, task_id: int, result: dict[str, Any]) -> None:
        body = {
            "task": task_id,
            "result": result["result"],
            "score": result.get("score", 0.0),
            "model_version": result["model_version"],
        }
        self._call("POST", "/api/predictions/", json=body)


def has_version(task: dict[str, Any], version: str) -> bool:
    return any(
        isinstance(p, dict) and p.get("model_version") == version for p in task.get("predictions") or []
    )


def preannotate(
    app: App,
    client: LabelStudioClient,
    pid: int,
    text_prompt: dict[str, Any],
    extra_params: dict[str, Any] | None = None,
    progress: bool = True,
) -> Counts:
    started = time.monotonic()
    project = client.project(pid)
    config = project["label_config"]
    params = {**(extra_params or {}), "text_prompt": text_prompt}
    setup = app.handle(
        Request("POST", "/setup", {"project": str(pid), "schema": config, "extra_params": params})
    )
    if setup.status != 200:
        raise PreannotateError(f"options refused: {setup.body.get('error')}")
    version = app.labelstudio.version
    counts = Counts()
    tasks = client.tasks(pid)
    from tqdm import tqdm

    for task in tqdm(tasks, desc=f"project {pid}", unit="task", disable=not progress):
        if has_version(task, version):
            counts.skipped += 1
            continue
        body = {"tasks": [task], "project": str(pid), "label_config": config}
        reply = app.handle(Request("POST", "/predict", body))
        results = reply.body.get("results") if reply.status == 200 else None
        if not results:
            counts.failed += 1
            counts.errors.append(f"task {task.get('id')}: {reply.body.get('error', 'no result')}")
            continue
        client.post_prediction(int(task["id"]), results[0])
        counts.done += 1
        counts.regions += len(results[0]["result"])
    counts.seconds = time.monotonic() - started
    return counts


def add_parser(sub: Any) -> None:
    p = sub.add_parser("preannotate", help="text-prompt predictions for a whole Label Studio project")
    p.add_argument("--label-studio-url", default=os.environ.get("LABEL_STUDIO_URL", ""), required=False)
    p.add_argument(
        "--api-key", help="default: LABEL_STUDIO_API_KEY (a Personal Access Token or legacy token)"
    )
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--text", required=True, help='phrases, e.g. "car. person."')
    p.add_argument("--box-threshold", type=float)
    p.add_argument("--text-threshold", type=float)
    p.add_argument("--extra-params", help="more project options as JSON, e.g. a return_format")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from function.settings import Settings, SettingsError

    token = (
        args.api_key or os.environ.get("LABEL_STUDIO_API_KEY") or os.environ.get("LABEL_STUDIO_ACCESS_TOKEN")
    )
    if not args.label_studio_url or not token:
        print("error: needs --label-studio-url and --api-key (or LABEL_STUDIO_API_KEY)", file=sys.stderr)
        return 2
    text: dict[str, Any] = {"default": args.text}
    if args.box_threshold is not None:
        text["box_threshold"] = args.box_threshold
    if args.text_threshold is not None:
        text["text_threshold"] = args.text_threshold
    try:
        extra = json.loads(args.extra_params) if args.extra_params else {}
        settings = replace(Settings.from_env(os.environ), label_studio_url=args.label_studio_url.rstrip("/"))
        settings = replace(settings, label_studio_api_key=token, prewarm=False)
        if settings.detector_model is None:
            raise SettingsError("DETECTOR_MODEL", "preannotate needs a detector (see download-detector)")
        app = build_app(settings)
        counts = preannotate(app, LabelStudioClient(args.label_studio_url, token), args.project, text, extra)
    except (SettingsError, PreannotateError, ExpectedError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(counts.summary())
    for line in counts.errors[:20]:
        print(f"  {line}", file=sys.stderr)
    return 0 if counts.failed == 0 else 1
