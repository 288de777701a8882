# The shared list's PostgreSQL for docker/compose.shared.yml (README "Several sites, one list"):
# Debian's own postgresql package, a cluster made on first start in the volume, the superuser
# password from SCREENER_SHARED_PASSWORD (never baked in), listening on 127.0.0.1 only.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && mkdir -p /var/lib/screener-pg \
 && chown postgres:postgres /var/lib/screener-pg
COPY docker/postgres-entrypoint.sh /usr/local/bin/screener-postgres
VOLUME ["/var/lib/screener-pg"]
USER postgres
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=5 \
  CMD ["sh", "-c", "pg_isready -q -h 127.0.0.1 -p \"${SCREENER_PG_PORT:-25432}\""]
CMD ["/usr/local/bin/screener-postgres"]
