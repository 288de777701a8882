# The screener service: Debian's Python 3.11 with the project in a virtual environment.
#
# Builds unchanged from the official debian:bookworm-slim image or from a local root of the
# same name (scripts/compose-test imports one made with debootstrap). Two stages: the build
# stage has pip, setuptools and the wheel cache; the image keeps only python3 and the venv.
FROM debian:bookworm-slim AS build

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

# The package index pip uses: empty means pip's default. docker-compose.yml passes the
# PIP_INDEX_URL / PIP_EXTRA_INDEX_URL of the environment; scripts/compose-test derives them
# from the host's own pip configuration. Where the host's pip trusts its own CA bundle
# (PIP_CERT), compose hands it in as the build secret pip_cert: mounted for the RUN alone,
# it is in no layer (empty when there is none).
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""

# Dependencies first, from pyproject.toml alone (with stand-ins for the package and its
# readme), so a change to the code or the README reuses this layer.
COPY pyproject.toml /src/
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && python3 -m venv /opt/screener \
 && mkdir /src/screener && touch /src/screener/__init__.py /src/README.md \
 && /opt/screener/bin/pip install --no-cache-dir --disable-pip-version-check \
      ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} \
      ${PIP_EXTRA_INDEX_URL:+--extra-index-url "$PIP_EXTRA_INDEX_URL"} \
      "/src[shared]" \
 && rm -rf /src/screener /src/README.md /src/build /src/*.egg-info

COPY README.md /src/
COPY screener /src/screener
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && /opt/screener/bin/pip install --no-cache-dir --disable-pip-version-check \
      --no-deps --force-reinstall /src \
 && /opt/screener/bin/pip uninstall -y -q pip setuptools \
 && find /opt/screener -name __pycache__ -prune -exec rm -rf {} + \
 && /opt/screener/bin/python -m compileall -q /opt/screener/lib

FROM debian:bookworm-slim

# tzdata: office hours are in Asia/Tokyo (zoneinfo reads the system database).
# The screener's user has a fixed uid/gid (999), so the volume's files keep their owner across rebuilds.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 tzdata \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && groupadd --system --gid 999 screener \
 && useradd --system --uid 999 --gid 999 --home-dir /var/lib/screener --shell /usr/sbin/nologin screener \
 && mkdir -p /var/lib/screener \
 && chown screener:screener /var/lib/screener

COPY --from=build /opt/screener /opt/screener
COPY docker/healthcheck.py /opt/screener/healthcheck.py
ENV PATH=/opt/screener/bin:$PATH \
    SCREENER_DB=/var/lib/screener/screener.db \
    SCREENER_LOG_FORMAT=json

# The call log / number lists (SQLite) live on a named volume.
VOLUME ["/var/lib/screener"]
WORKDIR /var/lib/screener
USER screener

# AMI login with the screener's own credentials (docker/healthcheck.py); set
# SCREENER_HEALTHCHECK_URL to check an HTTP endpoint such as /healthz instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/opt/screener/bin/python", "/opt/screener/healthcheck.py"]

# `screener run` refuses to start without a database (a typo in a path must never mean empty
# lists); `screener init` creates or upgrades it first, and is a no-op when it is current.
CMD ["sh", "-c", "screener init && exec screener run"]
