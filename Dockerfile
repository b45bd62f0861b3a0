# gfx-sync as one agent on the NAS: `docker compose up -d` (see compose.yaml).
# Builds on any Debian-based Python 3.11+ image; a machine that cannot pull python:3.12-slim
# builds on its own base: `--build-arg BASE=localhost/debian-python:bookworm`.
# Podman keeps HEALTHCHECK only in the docker image format: `podman build --format docker`.
ARG BASE=python:3.12-slim
FROM ${BASE}

# PID 1 is tini: `gfx-sync up` starts children (a Prefect server, the watcher, a forkserver and
# its run children); tini reaps whatever gets orphaned and forwards SIGTERM to `gfx-sync up`
# alone (no -g), which stops its children itself in order: runs in flight finish, the rest stays
# in the durable queue. In the image rather than compose's `init: true`, so `docker run`,
# `podman run` (whose --init needs catatonit on the host) and Kubernetes get the same PID 1.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

ARG UID=10001
ARG GID=10001
# The state folder (durable queue, embedded Postgres, local Prefect server) is the user's home,
# so Prefect's client files (~/.prefect) live on the volume too.
RUN groupadd --gid "${GID}" gfx-sync \
    && useradd --uid "${UID}" --gid gfx-sync --home-dir /var/lib/gfx-sync --no-create-home \
        --shell /usr/sbin/nologin gfx-sync \
    && mkdir -p /var/lib/gfx-sync /data \
    && chown gfx-sync:gfx-sync /var/lib/gfx-sync

ENV VIRTUAL_ENV=/opt/gfx-sync/venv \
    PATH=/opt/gfx-sync/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv "${VIRTUAL_ENV}"

WORKDIR /opt/gfx-sync/app
# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
# The Prefect UI's static files are prepared here too, as root: at run time the server would
# copy them into site-packages, read-only for the non-root user. Prefect writes them
# owner-only (0700): made readable, or the UI answers with empty pages.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && HOME=/tmp python3 -c 'from prefect.server.api.server import create_ui_app; create_ui_app(False)' \
    && rm -rf /tmp/.prefect \
    && ui=$(python3 -c 'import prefect; print(prefect.__ui_static_subpath__, prefect.__ui_v2_static_subpath__)') \
    && chmod -R a+rX ${ui} \
    && for d in ${ui}; do test -s "$d/index.html"; done
COPY README.md ./
COPY supabase/ supabase/
COPY gfx_sync/ gfx_sync/
COPY tasks/ tasks/
COPY flows/ flows/
COPY deployments/ deployments/
# Installed from this source folder (editable), as `make up` runs it: gfx_sync.migrate reads
# supabase/migrations/ beside the package, which a wheel (`pip install .`) does not carry.
RUN pip install --no-deps --editable . && pip check

USER gfx-sync
# The Prefect UI calls the API from the browser: a relative address works through any published
# port and host name (Prefect's default would be the container's own 127.0.0.1:4200).
ENV GFX_SYNC_BASE_PATH=/data \
    GFX_SYNC_STATE_DIR=/var/lib/gfx-sync \
    GFX_SYNC_REGISTRY_PATH=/etc/gfx-sync/pc_registry.json \
    GFX_SYNC_PREFECT_HOST=0.0.0.0 \
    GFX_SYNC_PREFECT_PORT=4200 \
    PREFECT_UI_API_URL=/api
VOLUME ["/var/lib/gfx-sync"]
EXPOSE 4200

# `gfx-sync health` is 0 once `up` beats in the state folder and its watcher has its watches
# in place. The first start creates the embedded Postgres and the Prefect database: allow 2 min.
HEALTHCHECK --interval=30s --timeout=15s --start-period=120s --retries=3 \
    CMD ["gfx-sync", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "gfx-sync"]
CMD ["up"]
