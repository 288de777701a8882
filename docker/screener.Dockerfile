# The screener service: Python 3.11, installed from this repository.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY screener ./screener
RUN pip install --no-cache-dir . \
 && useradd --system --home-dir /var/lib/screener screener \
 && mkdir -p /var/lib/screener \
 && chown screener:screener /var/lib/screener

# The call log / number lists (SQLite) live on a named volume.
VOLUME ["/var/lib/screener"]
WORKDIR /var/lib/screener
USER screener

ENTRYPOINT ["screener"]
CMD ["run"]
