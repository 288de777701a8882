"""structlog, configured once: console on a terminal, JSON lines otherwise.

Every screened call binds ``call_id`` and the caller with ``structlog.contextvars`` so that all
lines about a call carry them; the service writes one canonical line per call.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any, Literal, TextIO

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


# Characters json.dumps(ensure_ascii=False) leaves raw that still end a line for someone
# (U+0085, U+2028, U+2029 for str.splitlines() and JavaScript), drive a terminal (DEL and the C1
# controls, U+009B is CSI) or cannot be written as UTF-8 (lone surrogates). As \uXXXX escapes
# the JSON still decodes to exactly the same value.
_RAW = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` with no raw control or line-separator character (caller data is hostile)."""
    text = json.dumps(value, ensure_ascii=False, **kwargs)
    # One regex search over a clean line (nearly every line) instead of str.translate with a
    # 2,200-entry table, which looked every character up: 5 times json.dumps's own cost.
    if text.isascii() and "\x7f" not in text:  # DEL is the one ASCII character to escape
        return text
    return _RAW.sub(_escape, text) if _RAW.search(text) else text


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
        structlog.processors.JSONRenderer(dumps)
        if json
        # repr() every value: a bare string would reach the terminal raw (ESC, C1 CSI, NUL).
        else structlog.dev.ConsoleRenderer(colors=out.isatty(), repr_native_str=True)
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
    # Libraries (asyncio, panoramisk) log through the standard library: render their
    # lines the same way, so that a JSON log stays one JSON object per line. Replaces whatever
    # handler an earlier call installed (the CLI configures once, then `run` again).
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # panoramisk narrates every AMI message at debug and info; only its warnings are ours.
    logging.getLogger("panoramisk").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
