"""The screener container's HEALTHCHECK: exit 0 when healthy, 1 with one line why not.

Two checks, chosen by the environment:

- ``SCREENER_HEALTHCHECK_URL`` set (e.g. ``http://127.0.0.1:9120/healthz``): an HTTP GET that
  must answer 2xx.
- otherwise: an AMI login with the screener's own settings (``SCREENER_AMI_HOST``, ``_PORT``,
  ``_USER``, and ``SCREENER_AMI_SECRET`` or ``SCREENER_AMI_SECRET_FILE``), then Logoff. It
  shows that Asterisk is up and accepts the secret the service uses.

Standard library only; the secret is never printed.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from pathlib import Path

TIMEOUT = 4.0


def check_http(url: str) -> str | None:
    """None when the URL answers 2xx, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310 (the operator's own URL)
            status = int(response.status)
    except OSError as exc:
        return f"{url}: {exc}"
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def read_message(sock: socket.socket, buf: bytearray) -> dict[str, str]:
    """One AMI message (header lines up to a blank line)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("AMI closed the connection")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    fields: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    return fields


def check_ami(env: dict[str, str]) -> str | None:
    """None when the screener's AMI user can log in, else why not."""
    host = env.get("SCREENER_AMI_HOST", "127.0.0.1")
    port = int(env.get("SCREENER_AMI_PORT", "5038"))
    user = env.get("SCREENER_AMI_USER", "screener")
    secret = env.get("SCREENER_AMI_SECRET", "")
    if not secret and env.get("SCREENER_AMI_SECRET_FILE"):
        secret = Path(env["SCREENER_AMI_SECRET_FILE"]).read_text().strip()
    if not secret:
        return "no SCREENER_AMI_SECRET or SCREENER_AMI_SECRET_FILE"
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
            buf = bytearray()
            while b"\r\n" not in buf:  # the banner line
                chunk = sock.recv(4096)
                if not chunk:
                    return f"AMI {host}:{port} closed the connection"
                buf += chunk
            del buf[: buf.index(b"\r\n") + 2]
            login = f"Action: Login\r\nUsername: {user}\r\nSecret: {secret}\r\nEvents: off\r\n\r\n"
            sock.sendall(login.encode())
            reply = read_message(sock, buf)
            with_logoff = reply.get("response", "").lower() == "success"
            if with_logoff:
                sock.sendall(b"Action: Logoff\r\n\r\n")
    except (OSError, ConnectionError) as exc:
        return f"AMI {host}:{port}: {exc}"
    if not with_logoff:
        return f"AMI login as {user} refused: {reply.get('message', 'no message')}"
    return None


def main() -> int:
    env = dict(os.environ)
    url = env.get("SCREENER_HEALTHCHECK_URL", "")
    problem = check_http(url) if url else check_ami(env)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
