# syntax=docker/dockerfile:1.7
# GPU image of the SAM2 Nuclio function: Nuclio's processor + Python 3.11 + CUDA torch + sam2 with
# its CUDA extension + the SAM2.1 checkpoint(s), so a pod starts offline. Deployed as a prebuilt
# image (`spec.image` / `nuctl deploy --run-image`); see deploy/README.md.
#
#   docker build -t registry.example.org/sam2-nuclio:0.1.0 .
#   docker build --build-arg MODEL_SIZE=base_plus --build-arg EXTRA_MODEL_SIZES="tiny small" ...
#
# NUCLIO_VERSION must match the Nuclio dashboard/controller (and nuctl) that runs the function.
ARG NUCLIO_VERSION=1.14.1
ARG CUDA_VERSION=13.0.2
ARG UBUNTU=ubuntu24.04
ARG UV_VERSION=0.9.26
# Base of the slim remote-mode image (no CUDA).
ARG UBUNTU_IMAGE=ubuntu:24.04
# Checkpoints baked into the image: MODEL_SIZE is the default the function loads; every size in
# EXTRA_MODEL_SIZES is there too, for deployments that set MODEL_SIZE to it (deploy/targets).
ARG MODEL_SIZE=large
ARG EXTRA_MODEL_SIZES="tiny"
# Sizes whose ONNX graphs are baked next to their checkpoint, so a CPU pod (RUNTIME=auto serves
# onnxruntime there) starts without exporting; empty: none (a CPU pod then exports at start).
ARG ONNX_MODEL_SIZES="tiny"

# Processor binary, Python wrapper and wheels of that Nuclio version (a FROM scratch image).
FROM quay.io/nuclio/handler-builder-python-onbuild:${NUCLIO_VERSION}-amd64 AS nuclio
# uhttpc: the static HTTP probe the HEALTHCHECK below runs.
FROM quay.io/nuclio/uhttpc:0.0.1-amd64 AS uhttpc
# uv only installs a relocatable CPython 3.11 (Ubuntu 24.04 ships 3.12); pip does the rest.
# That Python reads CA certificates from SSL_CERT_FILE (the distribution's bundle, set below).
FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---- python: CPython 3.11 and an empty virtualenv at fixed paths, copied as-is to the runtime.
FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS python311
ARG PYTHON_VERSION=3.11
ENV DEBIAN_FRONTEND=noninteractive \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PATH=/opt/venv/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install "${PYTHON_VERSION}" \
 && uv venv --python "${PYTHON_VERSION}" /opt/venv \
 && uv pip install --python /opt/venv/bin/python pip==26.3 setuptools==84.2.1 wheel==0.48.0

# ---- checkpoints: fetched and SHA256-verified by the project's own command. Its own stage, so
# it downloads in parallel with the torch install and is cached apart from it.
FROM python311 AS checkpoints
ARG MODEL_SIZE
ARG EXTRA_MODEL_SIZES
WORKDIR /src
COPY function/ function/
RUN for size in ${MODEL_SIZE} ${EXTRA_MODEL_SIZES}; do \
      python -m function download-checkpoint "$size" --dir /models || exit 1; \
    done

# ---- build: CUDA torch, the pinned requirements, sam2 compiled with its CUDA extension.
FROM python311 AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
# Turing .. Blackwell; +PTX lets newer GPUs JIT the kernel.
ARG TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
ENV CUDA_HOME=/usr/local/cuda \
    TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" \
    SAM2_BUILD_CUDA=1 \
    SAM2_BUILD_ALLOW_ERRORS=0 \
    MAX_JOBS=4
WORKDIR /src
COPY requirements.txt requirements-sam2.txt ./
# torch/torchvision at the versions requirements.txt pins, as CUDA 13.0 builds from the PyTorch
# index; then everything else from PyPI (torch is already satisfied).
RUN pip install --index-url "${TORCH_INDEX_URL}" $(grep -E '^(torch|torchvision)==' requirements.txt) \
 && pip install -r requirements.txt
# sam2 builds against the torch above (no build isolation); SAM2_BUILD_ALLOW_ERRORS=0 makes a
# failed CUDA extension fail the build instead of being skipped silently.
RUN pip install --no-build-isolation --require-hashes -r requirements-sam2.txt \
 && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('sam2._C') is None)"
# msgpack for Nuclio's wrapper, from the wheels of the pinned Nuclio version (nuclio-sdk is
# already installed at the version requirements.txt pins).
COPY --from=nuclio /home/nuclio/bin/py3.11-whl /opt/nuclio-whl
RUN pip install nuclio-sdk msgpack --no-index --find-links /opt/nuclio-whl

# ---- remote-build / remote: the thin proxy of remote mode (UPSTREAM_URL set): no CUDA, no torch,
# no model. `docker build --target remote -t registry.example.org/sam2-nuclio-remote:0.1.0 .`
# Python's standard library plus nuclio-sdk (requirements-remote.txt) and the wrapper's msgpack.
FROM python311 AS remote-build
WORKDIR /src
COPY requirements-remote.txt ./
COPY --from=nuclio /home/nuclio/bin/py3.11-whl /opt/nuclio-whl
RUN pip install -r requirements-remote.txt \
 && pip install msgpack --no-index --find-links /opt/nuclio-whl

FROM ${UBUNTU_IMAGE} AS remote
LABEL org.opencontainers.image.title="sam2-nuclio-remote" \
      org.opencontainers.image.description="sam2-nuclio remote mode: forwards to a SAM2 instance elsewhere"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 nuclio \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin nuclio
COPY --from=remote-build /opt/python /opt/python
COPY --from=remote-build /opt/venv /opt/venv
COPY --from=nuclio /home/nuclio/bin/processor /usr/local/bin/processor
COPY --from=nuclio /home/nuclio/bin/py /opt/nuclio/
COPY --from=uhttpc /home/nuclio/bin/uhttpc /usr/local/bin/uhttpc
COPY handler.py /opt/nuclio/handler.py
COPY function/ /opt/nuclio/function/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /opt/nuclio
# The proxy must import with nothing but the standard library and nuclio-sdk installed.
RUN python -m compileall -q function handler.py \
 && UPSTREAM_URL=http://upstream.invalid python -c "import handler, nuclio_sdk, msgpack, function.service.proxy"
EXPOSE 8080
USER 10001:10001
HEALTHCHECK --interval=1s --timeout=3s CMD /usr/local/bin/uhttpc --url http://127.0.0.1:8082/ready || exit 1
CMD ["processor"]

# ---- runtime: CUDA runtime libraries only, no compilers.
FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU} AS runtime
ARG MODEL_SIZE
ARG ONNX_MODEL_SIZES
LABEL org.opencontainers.image.title="sam2-nuclio" \
      org.opencontainers.image.description="SAM2.1 interactive segmentation as a Nuclio function"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 nuclio \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin nuclio
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
COPY --from=nuclio /home/nuclio/bin/processor /usr/local/bin/processor
COPY --from=nuclio /home/nuclio/bin/py /opt/nuclio/
COPY --from=uhttpc /home/nuclio/bin/uhttpc /usr/local/bin/uhttpc
COPY --from=checkpoints /models /models
COPY handler.py /opt/nuclio/handler.py
COPY function/ /opt/nuclio/function/
# SageMaker runs `docker run <image> serve`: GET /ping and POST /invocations on port 8080.
COPY --chmod=0755 deploy/sagemaker/serve /usr/local/bin/serve
# The processor starts `python3` from PATH: the virtualenv's. MODEL_SIZE picks the checkpoint in
# CHECKPOINT_DIR, so one image serves every size it was built with (MODEL_CHECKPOINT stays unset:
# it would override MODEL_SIZE per deployment).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    CHECKPOINT_DIR=/models \
    MODEL_SIZE=${MODEL_SIZE}
WORKDIR /opt/nuclio
# Fails the build if the handler does not import with what is installed (the wrapper's first step).
RUN python -m compileall -q function handler.py \
 && python -c "import handler, nuclio_sdk, msgpack; assert handler.init_context and handler.handler"
# CPU runtime graphs into /models/sam2-runtime (read-only at run time: found there first).
RUN for size in ${ONNX_MODEL_SIZES}; do \
      MODEL_SIZE="$size" python -m function export --runtime onnxruntime || exit 1; \
    done
EXPOSE 8080
USER 10001:10001
# Without it a `--platform local` deploy never turns ready (Kubernetes uses its own probes).
HEALTHCHECK --interval=1s --timeout=3s CMD /usr/local/bin/uhttpc --url http://127.0.0.1:8082/ready || exit 1
CMD ["processor"]
