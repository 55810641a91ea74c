"""Command line: `python -m function {serve,download-checkpoint,probe,export,...}`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from function.core.checkpoints import CHECKPOINTS, DownloadError, default_checkpoint_dir, download

from .settings import Settings, SettingsError


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
        (args.host, args.port),
        nuclio.handler,
        context,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m function", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the function locally with Nuclio's event semantics")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9090)
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
