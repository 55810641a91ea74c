"""Command line: `python -m function {serve,download-checkpoint,probe,export,...}`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from function.core.checkpoints import CHECKPOINTS, DownloadError, default_checkpoint_dir, download

from .settings import Settings, SettingsError


def _serve_until_interrupted(server: Any) -> int:
    """Serve until Ctrl+C, then close the socket."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _serve_sagemaker(settings: Settings, host: str, port: int | None) -> int:
    from function.service.compose import build_app
    from function.service.nuclio import configure_logging
    from function.service.sagemaker_server import DEFAULT_PORT, SageMakerServer

    configure_logging(settings)
    bound = port or int(os.environ.get("SAGEMAKER_BIND_TO_PORT") or DEFAULT_PORT)
    server = SageMakerServer((host, bound), settings.max_body_bytes)
    server.load_in_background(lambda: build_app(settings))
    print(f"SageMaker server on {host}:{bound} (GET /ping, POST /invocations)", file=sys.stderr)
    return _serve_until_interrupted(server)


def _serve(args: argparse.Namespace) -> int:
    from function.core.checkpoints import CheckpointMissing, require_checkpoint
    from function.service import nuclio
    from function.service.server import LocalServer, build_context
    from function.tools.demo import demo_routes

    env = dict(os.environ)
    if args.model_size:  # the flags mean what the variables mean, for the settings built here
        env["MODEL_SIZE"] = args.model_size
    if args.device:
        env["DEVICE"] = args.device
    try:
        settings = Settings.from_env(env)
        if not settings.upstream_url:  # remote mode loads no model
            require_checkpoint(settings.model_checkpoint, settings.model_config)
    except (SettingsError, CheckpointMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.sagemaker:
        return _serve_sagemaker(settings, args.host or "0.0.0.0", args.port)
    if settings.upstream_url:
        print(f"remote mode: forwarding every request to {settings.upstream_url}", file=sys.stderr)
    else:
        print(f"loading {settings.model_config} from {settings.model_checkpoint} ...", file=sys.stderr)
    context = build_context()
    try:
        context.user_data.app = nuclio.start(context, settings)
    except (SettingsError, CheckpointMissing):
        return 2  # already said in one line by the glue
    server = LocalServer(
        (args.host or "127.0.0.1", args.port or 9090),
        nuclio.handler,
        context,
        max_body_bytes=settings.max_body_bytes,
        static_routes=demo_routes(),
    )
    print(f"serving on {server.url} (Ctrl+C to stop; demo page: {server.url}/demo)", file=sys.stderr)
    return _serve_until_interrupted(server)


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
    from function.core.hf_detector import DetectorDownloadError, download_detector

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

    from function.core.hf_detector import DEFAULT_REPO

    det = sub.add_parser(
        "download-detector",
        help="fetch a text-prompt detector (default Grounding DINO-T; --repo for another)",
    )
    det.add_argument("--repo", default=DEFAULT_REPO, help=f"Hugging Face repository (default {DEFAULT_REPO})")
    det.add_argument("--revision", help="a branch, tag or commit of the repository")
    det.add_argument("--dir", help="target folder (default: DETECTOR_MODEL or ~/.cache/sam2-nuclio/detector)")
    det.set_defaults(run=_download_detector)

    from function.tools.preannotate import add_parser as add_preannotate_parser

    add_preannotate_parser(sub)

    from function.tools.probe_cli import add_parser as add_probe_parser

    add_probe_parser(sub)
    from function.tools.preencode import add_parser as add_preencode_parser

    add_preencode_parser(sub)

    from .tools.export_cli import add_parser as add_export_parser

    add_export_parser(sub)

    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
