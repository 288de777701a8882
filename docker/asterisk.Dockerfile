# Asterisk 22 from Debian sid, configured from asterisk-conf/ (mounted read-only).
# Secrets are never baked into the image: the entrypoint writes
# manager_users.conf and pjsip_auth.conf from the environment at start.

# The Japanese prompts, rendered from the default wording (screener prompts build) in a
# throw-away stage: the voice (about 140 MB) never reaches the Asterisk image, only the WAVs.
# To use the office's own wording, render on the host and mount it over
# /usr/share/asterisk/sounds/ja instead.
FROM python:3.11-slim AS prompts
WORKDIR /src
COPY pyproject.toml README.md ./
COPY screener ./screener
RUN pip install --no-cache-dir '.[voice]' \
 && SCREENER_CONFIG= screener prompts build --lang ja --out /sounds

FROM debian:sid-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      asterisk asterisk-modules asterisk-core-sounds-en-gsm \
 && rm -rf /var/lib/apt/lists/*

COPY --from=prompts /sounds/ja /usr/share/asterisk/sounds/ja
COPY docker/asterisk-entrypoint.sh /usr/local/bin/asterisk-entrypoint.sh
RUN chmod 0755 /usr/local/bin/asterisk-entrypoint.sh

# Voicemail messages survive a container rebuild when this is a volume.
VOLUME ["/var/spool/asterisk"]

ENTRYPOINT ["/usr/local/bin/asterisk-entrypoint.sh"]
# Foreground, no colour, as the unprivileged asterisk user.
CMD ["asterisk", "-f", "-n", "-U", "asterisk", "-G", "asterisk"]
