"""Logging: structlog and the standard library's loggers render alike, once configured."""

from __future__ import annotations

import io
import json
import logging

import structlog

from screener.log import configure_logging, dumps


def test_library_lines_are_json_too() -> None:
    """A stdlib logger's line is one JSON object, like structlog's, in a JSON log."""
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    structlog.get_logger("screener.test").info("call screened", route="staff")
    logging.getLogger("asyncio").warning("slow callback %s", "x")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["call screened", "slow callback x"]
    assert lines[1]["level"] == "warning" and lines[1]["logger"] == "asyncio"


def test_reconfiguring_replaces_the_handler_and_level() -> None:
    """The CLI configures logging, `run` again: the second level and stream win, no duplicates."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "warning", stream=first)
    configure_logging("json", "debug", stream=second)
    logging.getLogger("aiosqlite").debug("executing")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


def test_panoramisk_chatter_is_quiet_below_debug() -> None:
    """panoramisk's per-message info lines stay out of an info log."""
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    logging.getLogger("panoramisk.ami_protocol").info("message interpreted")
    assert out.getvalue() == ""


def test_dumps_escapes_every_raw_line_end_and_control_and_nothing_else() -> None:
    """DEL, the C1 controls, U+2028/9 and lone surrogates come out as \\uXXXX (in ASCII lines
    and in lines with Japanese), every other character as json.dumps writes it, and the
    line decodes to the same value."""
    escaped = [0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, *range(0xD800, 0xE000)]
    for cp in escaped:
        for text in (f"a{chr(cp)}b", f"山田{chr(cp)}"):
            line = dumps({"name": text})
            assert chr(cp) not in line and f"\\u{cp:04x}" in line
            if not 0xD800 <= cp < 0xE000:
                assert json.loads(line) == {"name": text}
    for text in ("Tele Sales", "タナカ ショウジ\u3000", "tab\there", "\x1b[2J"):
        assert dumps({"name": text}) == json.dumps({"name": text}, ensure_ascii=False)
