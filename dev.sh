#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./dev.sh serve   set up, then run the function locally on http://127.0.0.1:9090
#   ./dev.sh test    set up, then lint, type-check and run every test (what CI runs)
#   ./dev.sh quick   lint, type-check and the tests that need no real SAM2, Label Studio or
#                    browser (the inner loop, < 60 s)
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VENV:-.venv}
PY="$VENV/bin/python"

setup() {
  if [ ! -x "$PY" ]; then
    python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
  fi
  stamp="$VENV/.installed-$(cat requirements.txt requirements-sam2.txt requirements-dev.txt | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    "$PY" -m pip install -q --upgrade pip wheel setuptools
    "$PY" -m pip install -q -r requirements.txt -r requirements-dev.txt
    # sam2 builds against the torch just installed; without nvcc its CUDA extension is skipped.
    if command -v nvcc >/dev/null 2>&1 && "$PY" -c 'import torch,sys; sys.exit(not torch.cuda.is_available())'; then
      build_cuda=1
    else
      build_cuda=0
    fi
    SAM2_BUILD_CUDA=$build_cuda "$PY" -m pip install -q --no-build-isolation --require-hashes -r requirements-sam2.txt
    touch "$stamp"
  fi
}

# The real Label Studio for the end-to-end test, in its own venv (~1 GB, ~70 s, once).
setup_label_studio() {
  if [ ! -x .lsvenv/bin/label-studio ]; then
    { python3 -m venv .lsvenv && .lsvenv/bin/pip install -q label-studio==1.23.2; } \
      || echo "label-studio did not install: its end-to-end test skips (fails under CI)" >&2
  fi
}

lint() {
  "$VENV/bin/ruff" check function tests bench handler.py
  "$VENV/bin/ruff" format --check function tests bench handler.py
  "$VENV/bin/mypy" function
  "$VENV/bin/lint-imports"
}

case "${1:-}" in
  serve)
    shift
    setup
    if [ -z "${MODEL_CHECKPOINT:-}" ]; then
      # Fetch (or verify) the checkpoint; offline, `serve` below says exactly what is missing.
      "$PY" -m function download-checkpoint "${MODEL_SIZE:-tiny}" \
        || echo "Set MODEL_CHECKPOINT to a SAM2 .pt file you have, or run this again online." >&2
    fi
    exec "$PY" -m function serve --host "${HOST:-127.0.0.1}" --port "${PORT:-9090}" "$@"
    ;;
  test)
    shift
    setup
    setup_label_studio
    lint
    exec "$PY" -m pytest -q "$@"
    ;;
  quick)
    shift
    setup
    lint
    # Two workers (the 2-core CI size) and the quick hypothesis profile: the same properties on a
    # fifth of the examples (tests/conftest.py). `./dev.sh test` keeps the thorough profile.
    exec "$PY" -m pytest -q -n 2 -m "not sam2 and not labelstudio and not browser" \
      --hypothesis-profile=quick "$@"
    ;;
  *)
    echo "usage: $0 {serve|test|quick} [args...]" >&2
    exit 2
    ;;
esac
