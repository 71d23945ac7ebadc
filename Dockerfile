# syntax=docker/dockerfile:1
# Conveyor: one image for every process (api, worker, beat, bridge, flower); the command picks one.
#   docker build -t conveyor .
#   docker run --rm -p 8080:8080 conveyor                 # conveyor api on 0.0.0.0:8080
#   docker run --rm conveyor conveyor worker              # any other process

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/conveyor
ENV PATH=/opt/conveyor/bin:$PATH
WORKDIR /src
# Dependencies first, so that a code change does not reinstall them: exactly the versions and
# hashes of requirements.lock (runtime dependencies and the `ai` extra, resolved by
# `uv pip compile`; regenerate it with the command at its top), then the package itself.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY tasks ./tasks
COPY api ./api
COPY beat ./beat
COPY conveyor ./conveyor
RUN pip install --no-deps . && pip check && python -m compileall -q /opt/conveyor/lib

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="conveyor" \
      org.opencontainers.image.description="Durable workflow engine for teams that already run Celery" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/conveyor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/conveyor \
    CONVEYOR_API_HOST=0.0.0.0 \
    CONVEYOR_API_PORT=8080 \
    CONVEYOR_STATE_DIR=/var/lib/conveyor \
    CONVEYOR_LOG_JSON=true
RUN groupadd --system --gid 10001 conveyor \
 && useradd --system --uid 10001 --gid conveyor --home-dir /home/conveyor --create-home \
      --shell /usr/sbin/nologin conveyor \
 && install -d -o conveyor -g conveyor -m 0750 /var/lib/conveyor
COPY --from=build /opt/conveyor /opt/conveyor
# The application is owned by root and read-only for the runtime user; only /var/lib/conveyor
# (state dir) and /tmp are written, so the container runs with a read-only root filesystem
# when those two are volumes (the Helm chart mounts emptyDirs there).
WORKDIR /var/lib/conveyor
USER 10001:10001
EXPOSE 8080 5555
# One image, several processes: a worker or beat (CONVEYOR_LIVENESS_FILE set) is healthy while its
# heartbeat file is fresh; any other container while the API answers /healthz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=4 CMD \
  if [ -n "$CONVEYOR_LIVENESS_FILE" ]; then \
    test $(( $(date +%s) - $(stat -c %Y "$CONVEYOR_LIVENESS_FILE") )) -lt 60; \
  else \
    python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CONVEYOR_API_PORT', '8080'), timeout=3)"; \
  fi
CMD ["conveyor", "api"]
