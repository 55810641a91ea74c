"""Command line: `python -m function {serve,download-checkpoint,probe,...}`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from .checkpoints import CHECKPOINTS, DownloadError, default_checkpoint_dir, download
from .settings import Settings, SettingsError


def _serve_sagemaker(settings: Settings, host: str, port: int | None) -> int:
    from .app import App
    from .nuclio import configure_logging
    from .sagemaker_server import DEFAULT_PORT, SageMakerServer

    configure_logging(settings)
    bound = port or int(os.environ.get("SAGEMAKER_BIND_TO_PORT") or DEFAULT_PORT)
    server = SageMakerServer((host, bound), settings.max_body_bytes)
    server.load_in_background(lambda: App.create(settings))
    print(f"SageMaker server on {host}:{bound} (GET /ping, POST /invocations)", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .startup import CheckpointMissing, require_checkpoint

    if args.model_size:
        os.environ["MODEL_SIZE"] = args.model_size
    if args.device:
        os.environ["DEVICE"] = args.device
    try:
        settings = Settings.from_env(os.environ)
        require_checkpoint(settings)
    except (SettingsError, CheckpointMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.sagemaker:
        return _serve_sagemaker(settings, args.host or "0.0.0.0", args.port)
    # The repository root holds handler.py, the module Nuclio loads.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    handler_module = importlib.import_module("handler")
    from .demo import demo_routes
    from .server import LocalServer

    print(f"loading {settings.model_config} from {settings.model_checkpoint} ...", file=sys.stderr)
    server = LocalServer(
        (args.host or "127.0.0.1", args.port or 9090),
        handler_module,
        max_body_bytes=settings.max_body_bytes,
        static_routes=demo_routes(),
    )
    print(f"serving on {server.url} (Ctrl+C to stop; demo page: {server.url}/demo)", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _download(args: argparse.Namespace) -> int:
    target = (
        Path(args.dir)
        if args.dir
        else (
            Path(os.environ["CHECKPOINT_DIR"])
            if os.environ.get("CHECKPOINT_DIR")
            else default_checkpoint_dir()
        )
    )
    try:
        path = download(CHECKPOINTS[args.size], target, url=args.url)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _download_detector(args: argparse.Namespace) -> int:
    from .core.detector import DetectorDownloadError, download_detector

    target = Path(args.dir or os.environ.get("DETECTOR_MODEL") or Path.home() / ".cache/sam2-nuclio/detector")
    print(f"downloading {args.repo} into {target} ...", file=sys.stderr)
    try:
        path = download_detector(args.repo, target, args.revision)
    except DetectorDownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    print(f"enable text prompts with DETECTOR_MODEL={path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m function", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the function locally with Nuclio's event semantics")
    serve.add_argument("--host", help="default 127.0.0.1 (0.0.0.0 with --sagemaker)")
    serve.add_argument("--port", type=int, help="default 9090 (--sagemaker: SAGEMAKER_BIND_TO_PORT or 8080)")
    serve.add_argument(
        "--sagemaker",
        action="store_true",
        help="SageMaker's container contract: GET /ping, POST /invocations",
    )
    serve.add_argument("--model-size", choices=tuple(CHECKPOINTS), help="sets MODEL_SIZE")
    serve.add_argument("--device", choices=("auto", "cpu", "cuda"), help="sets DEVICE")
    serve.set_defaults(run=_serve)

    dl = sub.add_parser("download-checkpoint", help="fetch a SAM2.1 checkpoint and verify it")
    dl.add_argument("size", choices=tuple(CHECKPOINTS))
    dl.add_argument(
        "--dir", help="target folder (default: CHECKPOINT_DIR or ~/.cache/sam2-nuclio/checkpoints)"
    )
    dl.add_argument("--url", help="download from this mirror instead of Meta's URL")
    dl.set_defaults(run=_download)

    from .core.detector import DEFAULT_REPO

    det = sub.add_parser("download-detector", help="fetch the text-prompt detector (Grounding DINO-T)")
    det.add_argument("--repo", default=DEFAULT_REPO, help=f"Hugging Face repository (default {DEFAULT_REPO})")
    det.add_argument("--revision", help="a branch, tag or commit of the repository")
    det.add_argument("--dir", help="target folder (default: DETECTOR_MODEL or ~/.cache/sam2-nuclio/detector)")
    det.set_defaults(run=_download_detector)

    from .preannotate import add_parser as add_preannotate_parser

    add_preannotate_parser(sub)

    from .probe_cli import add_parser as add_probe_parser

    add_probe_parser(sub)

    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
