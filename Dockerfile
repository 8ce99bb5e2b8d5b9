# syntax=docker/dockerfile:1
# ocpp-oicp-bridge: OCPP 1.6J / 2.0.1 endpoint that pushes EVSE statuses to Hubject (OICP).
#
#   docker build -t ocpp-oicp-bridge .
#   docker run -p 9000:9000 -p 127.0.0.1:9100:9100 -e BRIDGE_OPS__HOST=0.0.0.0 \
#     -v ./config/bridge.yaml:/etc/bridge/bridge.yaml:ro -v bridge-state:/var/lib/bridge \
#     ocpp-oicp-bridge
#
# Ports: 9000 OCPP websocket (chargers), 9100 ops (/healthz, /readyz, /metrics, /api/v1): the
# ops port has no authentication, publish it only where monitoring reaches it.
# Configuration: /etc/bridge/bridge.yaml plus BRIDGE_* environment variables.
# State: /var/lib/bridge (the SQLite database; keep it on a volume, one bridge per volume).
# More: docs/deploying.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: install the package and its dependencies into a virtualenv ------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/bridge
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN /opt/bridge/bin/pip install --no-cache-dir .

# -- runtime: the virtualenv only, as an unprivileged user ------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="ocpp-oicp-bridge" \
      org.opencontainers.image.description="OCPP 1.6J/2.0.1 central-system endpoint pushing EVSE status to Hubject OICP"
RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid bridge --home-dir /var/lib/bridge --no-create-home \
        --shell /usr/sbin/nologin bridge \
 && mkdir -p /etc/bridge /var/lib/bridge \
 && chown bridge:bridge /var/lib/bridge
COPY --from=build /opt/bridge /opt/bridge
# A working default (the example registry against a hub simulator on 127.0.0.1:9501);
# mount your own file over it.
COPY config/bridge.example.yaml /etc/bridge/bridge.yaml
ENV PATH=/opt/bridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Relative paths in the configuration (state.database: state/bridge.db) land on the volume.
WORKDIR /var/lib/bridge
VOLUME ["/var/lib/bridge"]
USER 10001:10001
EXPOSE 9000 9100
# Liveness on the ops port (BRIDGE_OPS__PORT if set there; keep ops.enabled true).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('BRIDGE_OPS__PORT', '9100'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]
# SIGTERM: stop accepting, close chargers, finish the push in flight, commit (docs/operations.md).
STOPSIGNAL SIGTERM
CMD ["oicp-bridge", "run", "--config", "/etc/bridge/bridge.yaml"]
