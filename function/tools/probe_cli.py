"""`python -m function probe`: options (command line and YAML), where to run, what to print.

The cycle itself lives in `probe.py`; this module only turns arguments into its inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .probe import (
    HttpTransport,
    InProcessTransport,
    ProbeError,
    ProbeImage,
    Transport,
    pretty_json,
    read_image,
    run_cycle,
    write_outputs,
)
from .probe_prompt import Geometry, PromptError, PromptSpec, build_prompt
from .sample import BALL_CENTRE

DEFAULT_URL = "http://127.0.0.1:9090"
CONFIG_KEYS = (
    *("image", "point", "box", "prompt", "label", "extra_params"),
    *("url", "in_process", "out", "timeout"),
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "probe",
        help="run one /setup + /predict cycle and draw the result",
        description="Integers are pixels, decimals are fractions of the image; a box is X,Y,W,H "
        "from its top-left corner. With no argument: the bundled sample image, a click on the ball.",
    )
    p.add_argument("image", nargs="?", help="image file or http(s) URL (default: the bundled sample)")
    p.add_argument("--point", action="append", metavar="X,Y[,neg]", help="a click; repeat for more")
    p.add_argument("--box", metavar="X,Y,W,H", help="a box prompt")
    p.add_argument("--prompt", metavar="JSON", help='e.g. {"type": "KeyPointLabels", "geometry": [120, 80]}')
    p.add_argument("--label", help="label of the prompt regions (default: object)")
    p.add_argument("--extra-params", metavar="FILE", help="JSON file sent as /setup extra_params")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML with the same keys as these options")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help=f"a running function (default: $ML_BACKEND_URL or {DEFAULT_URL})")
    where.add_argument("--in-process", action="store_true", default=None, help="load the model here")
    p.add_argument("--out", metavar="DIR", help="write prediction.json, request.json and pictures here")
    p.add_argument("--timeout", type=float, help="seconds per HTTP request (default 300)")
    p.set_defaults(run=main)


def load_config(path: str) -> dict[str, Any]:
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ProbeError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ProbeError(f"{path} must hold a mapping of probe options")
    config = {str(k).replace("-", "_"): v for k, v in raw.items()}
    if "points" in config:
        config["point"] = config.pop("points")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ProbeError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(CONFIG_KEYS)}")
    if isinstance(config.get("point"), str):
        config["point"] = [config["point"]]
    return config


def merged(args: argparse.Namespace) -> dict[str, Any]:
    """Config file values, then every option given on the command line on top."""
    options = load_config(args.config) if args.config else {}
    if args.url or args.in_process:  # where to run is one choice: the command line's wins
        options.pop("url", None)
        options.pop("in_process", None)
    for key in CONFIG_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    if options.get("url") and options.get("in_process"):
        raise ProbeError("give either url or in_process, not both")
    return options


def read_extra_params(value: Any) -> dict[str, Any]:
    """A path to a JSON file (CLI or config) or a mapping written inline in the YAML config."""
    if value is None or isinstance(value, dict):
        return dict(value or {})
    try:
        parsed = json.loads(Path(str(value)).read_text())
    except OSError as exc:
        raise ProbeError(f"cannot read extra params {value}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ProbeError(f"{value} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(parsed, dict):
        raise ProbeError(f"{value} must hold a JSON object")
    return parsed


def default_prompt(image: ProbeImage, is_sample: bool) -> PromptSpec:
    if is_sample:
        return PromptSpec(((Geometry(tuple(map(float, BALL_CENTRE)), False), True),))
    return PromptSpec(((Geometry((0.5, 0.5), True), True),))


def make_transport(options: dict[str, Any], timeout_s: float, log: Callable[[str], None]) -> Transport:
    url = options.get("url") or os.environ.get("ML_BACKEND_URL")
    if not options.get("in_process"):
        if url:
            return HttpTransport(url, timeout_s)
        probe = HttpTransport(DEFAULT_URL, 1.0)
        try:
            if probe.call("GET", "/live")[0] == 200:
                return HttpTransport(DEFAULT_URL, timeout_s)
        except ProbeError:
            pass
        log(f"no function answers at {DEFAULT_URL}; loading the model in this process")
    return load_in_process(log)


def load_in_process(log: Callable[[str], None]) -> Transport:
    from function.core.checkpoints import CheckpointMissing
    from function.service.compose import build_app
    from function.settings import Settings, SettingsError

    try:
        settings = replace(Settings.from_env(os.environ), warmup=False)  # the probe times the first encode
        started = time.perf_counter()
        app = build_app(settings)
    except (SettingsError, CheckpointMissing) as exc:
        raise ProbeError(str(exc)) from None
    log(f"model {settings.model_config} loaded in {time.perf_counter() - started:.2f} s")
    return InProcessTransport(app)


def main(args: argparse.Namespace) -> int:
    def log(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        options = merged(args)
        timeout_s = float(options.get("timeout") or 300.0)
        started = time.perf_counter()
        image = read_image(options.get("image"), timeout_s)
        fetched = time.perf_counter() - started
        prompt = build_prompt(
            options.get("point"), options.get("box"), options.get("prompt"), options.get("label")
        )
        if prompt.is_empty:
            prompt = replace(default_prompt(image, options.get("image") is None), label=prompt.label)
            log(f"no prompt given: one positive click at {prompt.drawn(*image.size).positive[0]}")
        extra_params = read_extra_params(options.get("extra_params"))
        transport = make_transport(options, timeout_s, log)
        log(f"probing the {transport.description} with {image.name} ({image.width}x{image.height})")
        run = run_cycle(transport, image, prompt, extra_params)
        source = "drew the bundled sample" if options.get("image") is None else f"read {image.name}"
        run.timings.insert(0, ("fetch", fetched, f"{source}, {len(image.data)} bytes"))
        print(pretty_json(run.prediction))
        if options.get("out"):
            out = Path(options["out"])
            lines = run.timed("render", lambda: write_outputs(out, run, image, prompt), f"wrote {out}/")
            for line in lines:
                log(line)
    except (ProbeError, PromptError) as exc:
        log(f"error: {exc}")
        return exc.code if isinstance(exc, ProbeError) else 2
    log("timing (client side):")
    for step, seconds, note in run.timings:
        log(f"  {step:<8}{seconds * 1000:>9.1f} ms  {note}")
    return 0
