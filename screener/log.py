"""structlog, configured once: console on a terminal, JSON lines otherwise.

Every screened call binds ``call_id`` and the caller with ``structlog.contextvars`` so that all
lines about a call carry them; the service writes one canonical line per call.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    *,
    stream: TextIO | None = None,
) -> None:
    """Set up structlog (and the stdlib logging that libraries use) for the process."""
    out = stream if stream is not None else sys.stderr
    json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        # Not cached: tests (structlog.testing.capture_logs) and `run` reconfigure after import.
        cache_logger_on_first_use=False,
    )
    # panoramisk and asyncio log through the standard library; keep them quiet unless asked.
    logging.basicConfig(
        level=max(LEVELS[level], logging.WARNING),
        stream=out,
        format="%(name)s %(levelname)s %(message)s",
    )
