# Asterisk 22 from Debian sid, configured from asterisk-conf/ (mounted read-only).
# Secrets are never baked into the image: the entrypoint writes
# manager_users.conf and pjsip_auth.conf from the environment at start.
FROM debian:sid-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      asterisk asterisk-modules asterisk-core-sounds-en-gsm \
 && rm -rf /var/lib/apt/lists/*

COPY docker/asterisk-entrypoint.sh /usr/local/bin/asterisk-entrypoint.sh
RUN chmod 0755 /usr/local/bin/asterisk-entrypoint.sh

# Voicemail messages survive a container rebuild when this is a volume.
VOLUME ["/var/spool/asterisk"]

ENTRYPOINT ["/usr/local/bin/asterisk-entrypoint.sh"]
# Foreground, no colour, as the unprivileged asterisk user.
CMD ["asterisk", "-f", "-n", "-U", "asterisk", "-G", "asterisk"]
