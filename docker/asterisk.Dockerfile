# Asterisk 22 from Debian sid, configured from asterisk-conf/ (mounted read-only).
#
# Builds unchanged from the official debian:sid-slim image or from a local root of the same name
# (scripts/compose-test imports one made with debootstrap). Secrets are never baked into the
# image: the entrypoint writes manager_users.conf and pjsip_auth.conf from the environment at
# start. One stage: everything installed is needed at run time, there is nothing to build.
FROM debian:sid-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      asterisk asterisk-modules asterisk-core-sounds-en-gsm \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

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
