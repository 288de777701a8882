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

# `screener run` refuses to start without a database (a typo in a path must never mean empty
# lists); `screener init` creates or upgrades it first, and is a no-op when it is current.
CMD ["sh", "-c", "screener init && exec screener run"]
