"""The floor for part 2: a minimal asyncio AMI client that redirects every request at once.

No lookup, no decision, no database, no logging: it logs in, splits the stream on CRLFCRLF,
and answers each ``UserEvent: ScreenRequest`` with a Redirect of its ``Uniqueid`` to
``screen-staff``. Reads the same ``SCREENER_AMI_*`` variables as ``screener run``; stops on
SIGTERM/SIGINT or when the server closes the connection.
"""

from __future__ import annotations

import asyncio
import os
import signal

SEP = b"\r\n\r\n"
MARK = b"UserEvent: ScreenRequest\r\n"


class _Floor(asyncio.Protocol):
    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.buffer = b""
        self.seq = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        user = os.environ.get("SCREENER_AMI_USER", "screener")
        secret = os.environ["SCREENER_AMI_SECRET"]
        login = f"Action: Login\r\nActionID: 0\r\nUsername: {user}\r\nSecret: {secret}\r\n"
        transport.write(login.encode() + b"Events: user\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if SEP not in self.buffer:
            return
        *blocks, self.buffer = self.buffer.split(SEP)
        out = []
        for block in blocks:
            if not block.startswith(b"Event: UserEvent") or MARK not in block:
                continue
            start = block.find(b"\r\nUniqueid: ")
            if start < 0:
                continue
            start += 12
            end = block.find(b"\r\n", start)
            uid = block[start:end] if end >= 0 else block[start:]
            self.seq += 1
            out.append(
                b"Action: Redirect\r\nActionID: %d\r\nChannel: %s\r\nContext: screen-staff\r\n"
                b"Exten: s\r\nPriority: 1\r\n\r\n" % (self.seq, uid)
            )
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def main() -> None:
    """Connect, log in, answer until stopped."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    host = os.environ.get("SCREENER_AMI_HOST", "127.0.0.1")
    port = int(os.environ.get("SCREENER_AMI_PORT", "5038"))
    transport, _ = await loop.create_connection(lambda: _Floor(done), host, port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        transport.close()


if __name__ == "__main__":
    asyncio.run(main())
