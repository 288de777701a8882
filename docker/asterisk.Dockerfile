# Asterisk 22 from Debian sid, configured from asterisk-conf/ (mounted read-only).
#
# Builds unchanged from the official debian:sid-slim and debian:bookworm-slim images or from
# local roots of the same names (scripts/compose-test imports ones made with debootstrap).
# Secrets are never baked into the image: the entrypoint writes manager_users.conf and
# pjsip_auth.conf from the environment at start.
#
# Two stages. The Japanese prompts are rendered from the default wording (screener prompts
# build) in a throw-away stage, so the voice (about 140 MB) never reaches the Asterisk image,
# only the WAVs. To use the office's own wording, render on the host and mount it over
# /usr/share/asterisk/sounds/ja instead. pip's index and CA bundle come in as in
# docker/screener.Dockerfile (build args and the pip_cert secret).
FROM debian:bookworm-slim AS prompts

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""

# The voice and its dependencies first, from pyproject.toml alone, so a code change reuses it.
COPY pyproject.toml /src/
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && python3 -m venv /opt/voice \
 && mkdir /src/screener && touch /src/screener/__init__.py /src/README.md \
 && /opt/voice/bin/pip install --no-cache-dir --disable-pip-version-check \
      ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} \
      ${PIP_EXTRA_INDEX_URL:+--extra-index-url "$PIP_EXTRA_INDEX_URL"} \
      '/src[voice]' \
 && rm -rf /src/screener /src/README.md /src/build /src/*.egg-info

COPY README.md /src/
COPY screener /src/screener
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && /opt/voice/bin/pip install --no-cache-dir --disable-pip-version-check \
      --no-deps --force-reinstall /src \
 && SCREENER_CONFIG= /opt/voice/bin/screener prompts build --lang ja --out /sounds

FROM debian:sid-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      asterisk asterisk-modules asterisk-core-sounds-en-gsm \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

COPY --from=prompts /sounds/ja /usr/share/asterisk/sounds/ja
COPY docker/asterisk-entrypoint.sh /usr/local/bin/asterisk-entrypoint.sh
RUN chmod 0755 /usr/local/bin/asterisk-entrypoint.sh

# Voicemail messages survive a container rebuild when this is a volume.
VOLUME ["/var/spool/asterisk"]

# Healthy once every module has loaded (AMI, SIP and the dialplan are up): the screener's
# container waits for this before it logs in.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["asterisk", "-rx", "core waitfullybooted"]

ENTRYPOINT ["/usr/local/bin/asterisk-entrypoint.sh"]
# Foreground, no colour, as the unprivileged asterisk user.
CMD ["asterisk", "-f", "-n", "-U", "asterisk", "-G", "asterisk"]
