"""CSV import and export of the allow/block lists. No SQL here; parsing is pure.

The format is UTF-8 (a byte-order mark is tolerated) with a header row::

    number,kind,prefix,label,expires,note,source
    +81312345678,allow,0,Tanaka Shoji,,,manual
    0120,block,1,Telemarketers,2026-12-31,,manual

Only ``number`` and ``kind`` are required (``kind`` not even that when a default is given);
columns may come in any order. ``prefix`` takes 1/0, yes/no, true/false or empty (no);
``expires`` an ISO-8601 date (midnight UTC of that day) or datetime (naive means UTC).

Spreadsheets run a cell that begins with ``=``, ``+``, ``-``, ``@``, TAB or CR as a formula, so
:func:`write_csv` puts a ``'`` in front of such free-text values (label, note, source) and
:func:`read_csv` takes exactly one off again. The ``number`` column is E.164 and so begins with
``+``: it is written as it is, because it is the data. Spreadsheet users must import that column
as text, or the spreadsheet will turn it into an arithmetic expression or drop the ``+``.

A bad row never stops the parse: it becomes a :class:`Reject` naming the physical line (1 is
the header) and the reason. Only an unusable header raises :class:`~screener.errors.InputError`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import operator
import os
import re
from collections import deque
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import lru_cache
from typing import IO, NamedTuple, TextIO

from screener.errors import InputError
from screener.numbers import broad_prefix, parse_list_number
from screener.policy import SOURCE_MANUAL, Entry, ListKind
from screener.validity import is_valid_e164
from screener.when import parse_instant

COLUMNS = ("number", "kind", "prefix", "label", "expires", "note", "source")
FREE_TEXT = frozenset({"label", "note", "source"})
MAX_FIELD_CHARS = 1000
MAX_LINE_BYTES = 1 << 20
# The stream is read this much (and the rest of the last line) at a time.
BLOCK_BYTES = 1 << 18
# A record whose quoted field runs over several lines can be no longer than this and be valid.
MAX_RECORD_CHARS = len(COLUMNS) * (MAX_FIELD_CHARS + 3)
REJECT_TEXT_CHARS = 80

_PREFIX_VALUES = {
    "": False,
    "0": False,
    "no": False,
    "false": False,
    "1": True,
    "yes": True,
    "true": True,
}
# A value a spreadsheet would evaluate (=, +, -, @, TAB, CR first), possibly behind quotes that
# protect() added before: quoting those too keeps protect/unprotect exact inverses.
_NEEDS_QUOTE = re.compile(r"'*[=+\-@\t\r]")
_QUOTED = re.compile(r"'+[=+\-@\t\r]")
# The columns _row reads, in the order it unpacks them.
_PICKED = ("kind", "prefix", "number", "label", "note", "source", "expires")


@dataclass(frozen=True, slots=True)
class Reject:
    """A row that was not imported: its first physical line, why, and (the start of) its text."""

    line: int
    reason: str
    text: str


# A good data row: its first physical line, and the entry it describes.
Row = tuple[int, Entry]
# A good data row as :meth:`screener.store.ImportStage.add_rows` stages it: its first physical
# line, kind, number (the list key), prefix flag (1/0), label, source, expiry (seconds since the
# epoch, or None) and note. The entry's created_at is the import's ``now``.
Staged = tuple[int, str, str, int, str, str, "float | dt.datetime | None", str]


@dataclass(slots=True)
class ParsedCSV:
    """The entries a CSV file yields, the rows it rejected, and how many data rows it had."""

    entries: list[Entry] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    rows: int = 0


# --- free text and spreadsheets ----------------------------------------------------------------


def protect(value: str) -> str:
    """Make a free-text value safe to open in a spreadsheet (see the module docstring)."""
    return "'" + value if _NEEDS_QUOTE.match(value) else value


def unprotect(value: str) -> str:
    """Undo :func:`protect`: drop one leading ``'`` put in front of a formula character."""
    return value[1:] if _QUOTED.match(value) else value


# --- export ------------------------------------------------------------------------------------


def _fields(entry: Entry) -> tuple[str, ...]:
    return (
        entry.number,
        str(entry.kind),
        "1" if entry.prefix else "0",
        protect(entry.label),
        entry.expires_at.astimezone(dt.UTC).isoformat() if entry.expires_at else "",
        protect(entry.note),
        protect(entry.source),
    )


def _writer(stream: TextIO, bom: bool) -> Callable[[Iterable[str]], object]:
    writer = csv.writer(stream)
    if bom:
        stream.write("\ufeff")
    writer.writerow(COLUMNS)
    return writer.writerow


def write_csv(entries: Iterable[Entry], stream: TextIO, *, bom: bool = False) -> int:
    """Write ``entries`` as CSV with a header row to ``stream``; returns how many rows.

    Open files with ``newline=""`` (the csv module writes its own CRLF line ends). ``bom`` puts
    a UTF-8 byte-order mark first, which Excel needs to read the file as UTF-8 and not Shift_JIS.
    """
    writerow = _writer(stream, bom)
    count = 0
    for entry in entries:
        writerow(_fields(entry))
        count += 1
    return count


async def write_csv_async(
    entries: AsyncIterable[Entry], stream: TextIO, *, bom: bool = False
) -> int:
    """:func:`write_csv` for entries that arrive a page at a time (a streamed export)."""
    writerow = _writer(stream, bom)
    count = 0
    async for entry in entries:
        writerow(_fields(entry))
        count += 1
    return count


# --- import ------------------------------------------------------------------------------------


class _Line(NamedTuple):
    """One physical line: its number, what the csv module is handed, why it is bad, its text."""

    number: int
    csv: str
    problem: str | None
    text: str


class _Runaway(Exception):
    """A quoted field ran on into lines that cannot be part of it: the quote is not closed."""


class _Lines:
    """Physical lines of a byte stream, decoded, with what was wrong with each bad one.

    Hands the csv module one text line per physical line, always, so that the line numbers stay
    physical even when a line had to be replaced. The lines handed out for the record being
    parsed are kept in ``record`` (the csv module never reads ahead), so that the lines an
    unclosed quote ran into can be handed out again (:meth:`replay`) and parsed on their own.

    The csv module asks for another line before a record ends only inside a quoted field. Such a
    continuation line that is a row of its own (``shape``: a full-width line with a number where
    the number goes), or that takes the record past :data:`MAX_RECORD_CHARS`, means the quote
    was never closed: :class:`_Runaway` is raised (the csv reader starts afresh after it).

    The stream is read a block of whole lines at a time (:data:`BLOCK_BYTES`, and the rest of
    its last line). A block that is valid UTF-8 with no NUL byte and no over-long line is kept
    as text (``text``, read up to ``pos``; ``number`` lines handed out so far), which
    :func:`iter_rows` scans for plain rows itself; any other block is read line by line as
    :meth:`_read` has it, each bad line marked.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._bad: Iterator[_Line] | None = None  # the lines of a block that is not plain text
        self._first = True
        self.text = ""
        self.pos = 0
        self.number = 0
        self._again: deque[_Line] = deque()
        self._chars = 0
        self.record: list[_Line] = []
        self.shape: tuple[int, int] | None = None  # (width, index of number) from the header

    def replay(self, lines: Iterable[_Line]) -> None:
        """Hand these lines out again, in order, before reading on."""
        self._again.extendleft(reversed(list(lines)))

    def plain_text(self) -> bool:
        """True if the next line to hand out is in ``text`` (reading a block if need be), so
        that the caller may scan ``text`` from ``pos`` itself."""
        if self._again or self._bad is not None:
            return False
        if self.pos < len(self.text):
            return True
        return self._fill() and self._bad is None

    def __iter__(self) -> Iterator[str]:
        return self

    def take(self) -> _Line | None:
        """The next line to parse, outside the csv module (None at the end of the stream)."""
        if self._again:
            return self._again.popleft()
        return self._next()

    def __next__(self) -> str:
        if self._again:
            line = self._again.popleft()
        else:
            fresh = self._next()
            if fresh is None:
                raise StopIteration
            line = fresh
        record = self.record
        if not record:
            self._chars = len(line.text)
        else:
            if self.shape and line.problem is None and _looks_like_row(line.text, *self.shape):
                self._again.appendleft(line)
                raise _Runaway(
                    f"a quote is not closed (it runs into line {line.number}, a row of its own)"
                )
            self._chars += len(line.text)
            if self._chars > MAX_RECORD_CHARS:
                record.append(line)
                raise _Runaway(
                    f"a quote is not closed (the row runs past {MAX_RECORD_CHARS:,} characters"
                    f" at line {line.number})"
                )
        record.append(line)
        return line.csv

    def _next(self) -> _Line | None:
        while True:
            if self._bad is not None:
                line = next(self._bad, None)
                if line is not None:
                    return line
                self._bad = None
            text, pos = self.text, self.pos
            if pos < len(text):
                end = text.find("\n", pos) + 1 or len(text)
                self.pos = end
                self.number += 1
                piece = text[pos:end]
                return _Line(self.number, piece, None, piece)
            if not self._fill():
                return None

    def _fill(self) -> bool:
        """Read the next block; False at the end of the stream."""
        stream = self._stream
        raw = stream.read(BLOCK_BYTES)
        if not raw:
            return False
        tail = b""
        if not raw.endswith(b"\n"):
            tail = stream.readline(MAX_LINE_BYTES + 1)
            raw += tail
        if self._first:
            self._first = False
            if raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
        self.text, self.pos = "", 0
        # A block whose last line was cut at the limit, or that may hold an over-long line,
        # or that is not plain UTF-8, is read line by line.
        plain = (
            len(tail) <= MAX_LINE_BYTES
            and (len(raw) < MAX_LINE_BYTES or max(map(len, raw.split(b"\n"))) < MAX_LINE_BYTES)
            and b"\x00" not in raw
        )
        if plain:
            try:
                self.text = raw.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                return True
        self._bad = self._read(_Chain(raw, stream), self)
        return True

    @staticmethod
    def _read(chain: _Chain, lines: _Lines) -> Iterator[_Line]:
        """The lines of one block (and of the rest of its last line), each checked alone."""
        readline = chain.readline
        while not chain.done():
            raw = readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            lines.number += 1
            number = lines.number
            if len(raw) > MAX_LINE_BYTES:
                head = raw[:REJECT_TEXT_CHARS].decode("utf-8", "replace")
                # Skip the rest of the line a chunk at a time: memory stays bounded.
                while raw and not raw.endswith(b"\n"):
                    raw = readline(MAX_LINE_BYTES)
                # A blank line in its place: the record it belongs to is rejected anyway.
                yield _Line(number, "\n", f"line over {MAX_LINE_BYTES:,} bytes", head)
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield _Line(number, "\n", _not_utf8(raw, number), raw.decode("utf-8", "replace"))
                continue
            if "\x00" in text:
                yield _Line(number, "\n", "contains a NUL byte", text.replace("\x00", "\\x00"))
                continue
            yield _Line(number, text, None, text)


class _Chain:
    """A block already read, then the stream it came from: ``readline`` runs on across both."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head = io.BytesIO(head)
        self._size = len(head)
        self._stream = stream

    def done(self) -> bool:
        """True once the block is used up (the line that ended it read to its end)."""
        return self._head.tell() >= self._size

    def readline(self, limit: int) -> bytes:
        piece = self._head.readline(limit)
        if len(piece) < limit and not piece.endswith(b"\n"):
            piece += self._stream.readline(limit - len(piece))
        return piece


# Complete E.164 text, as numbers.looks_e164 has it, without the newline its "$" allows.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# A field that could be a phone number or a prefix rule (what the number column holds).
_NUMBER_LIKE = re.compile(r"\s*\+?[0-9][0-9 ().\-]*\s*")


def _looks_like_row(text: str, width: int, number_index: int) -> bool:
    """True if ``text`` on its own is a full-width record with a number in the number column."""
    try:
        fields = next(csv.reader([text]), [])
    except csv.Error:
        return False
    return len(fields) == width and bool(_NUMBER_LIKE.fullmatch(fields[number_index]))


def _plain(text: str, limit: int) -> list[str] | None:
    """The fields of a line with no quote and no CR but at its end, as the csv module reads
    them; None for any other line (and for one that could hold a field over ``limit``)."""
    if '"' in text:
        return None
    body = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    if "\r" in body or len(body) > limit:
        return None
    return body.split(",") if body else []


def _not_utf8(raw: bytes, line: int) -> str:
    try:
        raw.decode("cp932")
    except UnicodeDecodeError:
        hint = ""
    else:
        hint = ", looks like Shift_JIS"
    return f"not UTF-8 (line {line}{hint}); save the file as UTF-8"


def _open(source: str | os.PathLike[str] | IO[bytes] | TextIO, stack: ExitStack) -> IO[bytes]:
    if isinstance(source, str | os.PathLike):
        try:
            return stack.enter_context(open(source, "rb"))
        except OSError as exc:
            raise InputError(f"cannot read {os.fspath(source)}: {exc.strerror or exc}") from exc
    if isinstance(source, io.TextIOBase):
        buffer = getattr(source, "buffer", None)
        if buffer is None:
            raise InputError("read_csv needs a binary stream (or a text stream with a .buffer)")
        return buffer  # type: ignore[no-any-return]  # TextIOWrapper.buffer is a binary stream
    return source  # type: ignore[return-value]  # IO[bytes] (TextIO without TextIOBase is rare)


def _header(fields: list[str], default_kind: ListKind | None) -> dict[str, int]:
    names = [name.strip().lower() for name in fields]
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        raise InputError(
            f"CSV header (line 1): unknown column {unknown[0]!r}; the columns are"
            f" {', '.join(COLUMNS)}"
        )
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"CSV header (line 1): column {name!r} appears twice")
        seen.add(name)
    if "number" not in seen:
        raise InputError("CSV header (line 1): no 'number' column")
    if "kind" not in seen and default_kind is None:
        raise InputError("CSV header (line 1): no 'kind' column and no default kind given")
    return {name: index for index, name in enumerate(names)}


def _number(text: str, region: str, prefix: bool) -> str:
    """The list key for ``text``; E.164 input skips straight to the validity check.

    :func:`~screener.validity.is_valid_e164` gives phonenumbers' answer without its parse (most
    of the time per row on a million-row import); anything it does not accept gets the full
    parse, which also words the reason. A trailing newline (which
    :func:`~screener.numbers.looks_e164` lets through) is not E.164 here: the parse drops it.
    """
    if not prefix and _E164.fullmatch(text) and is_valid_e164(text):
        return text
    return parse_list_number(text, region, prefix=prefix)


@lru_cache(maxsize=4096)
def _expiry(text: str) -> dt.datetime | None:
    # Cached: a big file repeats a few expiry dates (a ValueError is not cached).
    if not text:
        return None
    try:
        return parse_instant(text).astimezone(dt.UTC)
    except ValueError:
        raise ValueError(f"bad expiry {text!r} (use an ISO date such as 2026-12-31)") from None


def _expiry_seconds(text: str) -> float | None:
    """:func:`_expiry` as the seconds since the epoch that the store keeps."""
    at = _expiry(text)
    return None if at is None else at.timestamp()


# The fast path keeps what this many expiry texts gave; a value that is not a time.
_EXPIRIES_KEPT = 4096
_NOT_A_TIME = dt.datetime.min.replace(tzinfo=dt.UTC)  # never the result of _expiry


def iter_rows(
    path_or_stream: str | os.PathLike[str] | IO[bytes] | TextIO,
    *,
    region: str,
    default_kind: ListKind | None,
    source: str = SOURCE_MANUAL,
    now: dt.datetime,
    broad: bool = False,
) -> Iterator[Row | Reject]:
    """Parse a list CSV row by row, yielding ``(line, Entry)`` or a :class:`Reject` per row.

    Streams in constant memory (one block of lines at a time). A key that appears twice is NOT
    caught here, as that needs every key seen so far: :func:`iter_csv` keeps them in memory,
    :meth:`screener.store.Store.stage_import` on disk.

    A prefix rule that :func:`~screener.numbers.broad_prefix` finds too broad (a whole country
    code, or over 10 % of the home plan) is rejected unless ``broad`` is true (``--force``).

    An unclosed quote never swallows the rows after it: its record is rejected at its first line
    (see :class:`_Lines`) and the lines after that one are parsed again as rows of their own.
    """
    for item in _parse(path_or_stream, region, default_kind, source, broad, now, as_time=True):
        if isinstance(item, Reject):
            yield item
            continue
        line, kind, number, prefix, label, src, expires, note = item
        yield (
            line,
            Entry(
                kind=ListKind(kind),
                number=number,
                prefix=bool(prefix),
                label=label,
                source=src,
                created_at=now,
                expires_at=expires,  # type: ignore[arg-type]  # as_time: a datetime or None
                note=note,
            ),
        )


def iter_staged(
    path_or_stream: str | os.PathLike[str] | IO[bytes] | TextIO,
    *,
    region: str,
    default_kind: ListKind | None,
    source: str = SOURCE_MANUAL,
    now: dt.datetime,
    broad: bool = False,
) -> Iterator[Staged | Reject]:
    """:func:`iter_rows`, each good row as the plain tuple :class:`Staged` describes.

    No :class:`~screener.policy.Entry` is built: on a big file that is a tenth of the time.
    """
    return _parse(path_or_stream, region, default_kind, source, broad, now, as_time=False)


def _fast_row(header: dict[str, int], kinds: tuple[str, ...]) -> re.Pattern[str]:
    """A pattern for one whole plain line in the columns of ``header``, each field of the
    simple form the fast path of :func:`_parse` handles; other lines do not match.

    Group ``i + 1`` is column ``i``; the last group is always empty (for missing columns).
    """
    free = f'[^,"\\r\\n]{{0,{MAX_FIELD_CHARS}}}'
    text = f"((?!'){free})"
    fields = {
        "number": "(\\+[1-9][0-9]{6,14})",
        "kind": f"({'|'.join(kinds)})",
        "prefix": "(0?)",
        "expires": f"({free})",
    }
    by_index = sorted((index, name) for name, index in header.items())
    row = ",".join(fields.get(name, text) for _, name in by_index)
    return re.compile(f"^{row}(?:\\r?\\n|\\Z)()", re.MULTILINE)


def _parse(
    path_or_stream: str | os.PathLike[str] | IO[bytes] | TextIO,
    region: str,
    default_kind: ListKind | None,
    source: str,
    broad: bool,
    now: dt.datetime,
    *,
    as_time: bool,
) -> Iterator[Staged | Reject]:
    """The rows of :func:`iter_rows` as tuples, the expiry a datetime (``as_time``) or seconds.

    Most rows of a big file are one line of simple fields (E.164 number, ``allow``/``block``,
    no prefix flag, no quotes): those are matched a block at a time by one pattern
    (:func:`_fast_row`), and only a row that the pattern takes but that is not then a valid
    entry goes through :func:`_row`. Every other line is read as before, by the csv module.
    """
    expiry = _expiry if as_time else _expiry_seconds
    with ExitStack() as stack:
        lines = _Lines(_open(path_or_stream, stack))
        reader = csv.reader(lines, strict=True)
        record = lines.record
        take = lines.take
        limit = csv.field_size_limit()
        header: dict[str, int] | None = None
        # Set from the header: short rows are padded with empty fields, and a missing column
        # reads the last pad.
        pick: Callable[[list[str]], tuple[str, ...]] = operator.itemgetter(0)
        fast: re.Pattern[str] | None = None
        groups: tuple[int, ...] = ()
        width = 0
        default = str(default_kind) if default_kind is not None else ""
        # Expiry text -> what expiry() makes of it (_NOT_A_TIME if it raised).
        expiries: dict[str, dt.datetime | float | None] = {}
        while True:
            fields: list[str] | None = None
            error = ""
            if header is not None:
                while fast is not None and lines.plain_text():
                    text, pos, number = lines.text, lines.pos, lines.number
                    match = fast.match(text, pos)
                    while match is not None:
                        pos = match.end()
                        number += 1
                        kind, _, key, label, note, src, expires = match.group(*groups)
                        try:
                            at = expiries[expires]
                        except KeyError:
                            if len(expiries) > _EXPIRIES_KEPT:
                                expiries.clear()
                            try:
                                at = expiries[expires] = expiry(expires.strip())
                            except ValueError:
                                at = _NOT_A_TIME  # _row words the reason
                        if at is not _NOT_A_TIME and (kind or default) and is_valid_e164(key):
                            yield (number, kind or default, key, 0, label, src or source, at, note)
                        else:
                            row = list(match.group(*range(1, width + 1)))
                            result = _row(
                                row, header, pick, region, default_kind, source, now, broad
                            )
                            if isinstance(result, str):
                                yield _reject(number, result, match.group(0))
                            else:
                                yield _staged(number, result, as_time)
                        match = fast.match(text, pos)
                    lines.pos, lines.number = pos, number
                    if pos < len(text):
                        break  # the line at pos is not a plain row of simple fields
                # Most other rows are one plain line too: split it here, without the csv
                # module's round trip through _Lines; anything else goes back to be read the
                # full way.
                line = take()
                if line is None:
                    break
                plain = _plain(line.text, limit) if line.problem is None else None
                if plain is not None:
                    if not plain:
                        continue  # a blank line
                    result = _row(plain, header, pick, region, default_kind, source, now, broad)
                    if isinstance(result, str):
                        yield _reject(line.number, result, line.text)
                    else:
                        yield _staged(line.number, result, as_time)
                    continue
                lines.replay((line,))
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                error = _csv_error(exc)
            except _Runaway as exc:
                error = str(exc)
            if not record:
                break  # nothing was left to read
            first = record[0]
            swallowed = record[1:] if len(record) > 1 else ()
            problem = next((line.problem for line in record if line.problem is not None), None)
            record.clear()
            if header is None:
                if problem is not None or fields is None:
                    raise InputError(f"CSV header (line 1): {problem or error}")
                header = _header(fields, default_kind)
                width = len(header)
                lines.shape = (width, header["number"])
                pick = operator.itemgetter(*(header.get(name, width) for name in _PICKED))
                kinds = ("allow", "block", "") if default_kind is not None else ("allow", "block")
                fast = _fast_row(header, kinds)
                groups = tuple(header.get(name, width) + 1 for name in _PICKED)
                continue
            if fields is None:
                if swallowed:
                    # Only the first line is the bad row; the others get their own chance.
                    lines.replay(swallowed)
                    problem = first.problem
                yield _reject(first.number, problem or error, first.text)
                continue
            if fields == [] and problem is None:
                continue  # a blank line
            if problem is not None:
                yield _reject(first.number, problem, first.text)
                continue
            result = _row(fields, header, pick, region, default_kind, source, now, broad)
            if isinstance(result, str):
                yield _reject(first.number, result, first.text)
                continue
            yield _staged(first.number, result, as_time)
        if header is None:
            raise InputError("the CSV file is empty: it needs a header row")


def _staged(line: int, entry: Entry, as_time: bool) -> Staged:
    at = entry.expires_at
    expires: dt.datetime | float | None = at if as_time or at is None else at.timestamp()
    return (
        line,
        str(entry.kind),
        entry.number,
        1 if entry.prefix else 0,
        entry.label,
        entry.source,
        expires,
        entry.note,
    )


def iter_csv(
    path_or_stream: str | os.PathLike[str] | IO[bytes] | TextIO,
    *,
    region: str,
    default_kind: ListKind | None,
    source: str = SOURCE_MANUAL,
    now: dt.datetime,
    broad: bool = False,
) -> Iterator[Entry | Reject]:
    """:func:`iter_rows`, with a key that appears again rejected (naming the line of the first).

    Memory grows with the keys seen (about 100 bytes each), so this is for files of up to a few
    hundred thousand rows; ``screener list import`` streams :func:`iter_rows` instead.
    """
    first: dict[str, int] = {}
    for item in iter_rows(
        path_or_stream,
        region=region,
        default_kind=default_kind,
        source=source,
        now=now,
        broad=broad,
    ):
        if isinstance(item, Reject):
            yield item
            continue
        line, entry = item
        # A str key, not a tuple: a million tuples would keep the garbage collector busy.
        seen = first.setdefault(f"{entry.number}/{int(entry.prefix)}", line)
        if seen != line:
            yield Reject(line, duplicate_reason(seen), entry.number)
            continue
        yield entry


def duplicate_reason(first: int) -> str:
    """Why a row is rejected whose number and prefix flag the row on line ``first`` has."""
    return f"duplicate of line {first} (same number and prefix)"


def read_csv(
    path_or_stream: str | os.PathLike[str] | IO[bytes] | TextIO,
    *,
    region: str,
    default_kind: ListKind | None,
    source: str = SOURCE_MANUAL,
    now: dt.datetime,
    broad: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ParsedCSV:
    """Parse a whole list CSV into entries and rejects, all in memory (see :func:`iter_csv`).

    ``on_progress`` is called with the number of rows read so far, every 10,000 rows.
    """
    parsed = ParsedCSV()
    for count, item in enumerate(
        iter_csv(
            path_or_stream,
            region=region,
            default_kind=default_kind,
            source=source,
            now=now,
            broad=broad,
        ),
        start=1,
    ):
        if isinstance(item, Reject):
            parsed.rejects.append(item)
        else:
            parsed.entries.append(item)
        if on_progress is not None and count % 10_000 == 0:
            on_progress(count)
    parsed.rows = len(parsed.entries) + len(parsed.rejects)
    return parsed


def _csv_error(exc: csv.Error) -> str:
    text = str(exc)
    if "field limit" in text:
        # csv.field_size_limit() is process-wide state, so we leave it alone: its default
        # (128 KiB) is far above any field we accept, and a field that reaches it (a runaway
        # quote, say) is rejected like any other over-long field.
        return f"a field is over {MAX_FIELD_CHARS:,} characters (or a quote is not closed)"
    if "unexpected end of data" in text:
        return "a quote is not closed (it runs to the end of the file)"
    return f"not valid CSV: {text}"


def _reject(line: int, reason: str, text: str) -> Reject:
    return Reject(line, reason, text.rstrip("\r\n")[:REJECT_TEXT_CHARS])


def _row(
    fields: list[str],
    header: dict[str, int],
    pick: Callable[[list[str]], tuple[str, ...]],
    region: str,
    default_kind: ListKind | None,
    source: str,
    now: dt.datetime,
    broad: bool,
) -> Entry | str:
    """The entry a data row describes, or the reason it cannot be one."""
    width = len(header)
    if len(fields) > width:
        return f"too many columns ({len(fields)}; the header has {width})"
    if max(map(len, fields), default=0) > MAX_FIELD_CHARS:
        name = next(
            n for n, i in header.items() if i < len(fields) and len(fields[i]) > MAX_FIELD_CHARS
        )
        return f"{name} is over {MAX_FIELD_CHARS:,} characters"
    padded = fields + [""] * (width + 1 - len(fields))
    kind_raw, prefix_raw, number_raw, label, note, source_raw, expires_raw = pick(padded)
    kind_text = kind_raw.strip().lower()
    if kind_text == "allow":
        kind = ListKind.ALLOW
    elif kind_text == "block":
        kind = ListKind.BLOCK
    elif kind_text:
        return f"unknown kind {kind_raw!r} (allow or block)"
    elif default_kind is None:
        return "no kind (allow or block)"
    else:
        kind = default_kind
    prefix = _PREFIX_VALUES.get(prefix_raw.strip().lower())
    if prefix is None:
        return f"bad prefix value {prefix_raw!r} (1/0, yes/no, true/false or empty)"
    try:
        number = _number(number_raw, region, prefix)
    except ValueError as exc:
        return f"bad number: {exc}"
    if prefix and not broad:
        too_broad = broad_prefix(number, region)
        if too_broad is not None:
            return f"{too_broad} (import with --force to accept it)"
    try:
        expires = _expiry(expires_raw.strip()) if expires_raw else None
    except ValueError as exc:
        return str(exc)
    # unprotect() only changes a value that begins with its quote.
    return Entry(
        kind=kind,
        number=number,
        prefix=prefix,
        label=unprotect(label) if label[:1] == "'" else label,
        source=(unprotect(source_raw) if source_raw[:1] == "'" else source_raw) or source,
        created_at=now,
        expires_at=expires,
        note=unprotect(note) if note[:1] == "'" else note,
    )


__all__ = [
    "COLUMNS",
    "MAX_FIELD_CHARS",
    "MAX_LINE_BYTES",
    "MAX_RECORD_CHARS",
    "ParsedCSV",
    "Reject",
    "Row",
    "duplicate_reason",
    "iter_csv",
    "iter_rows",
    "protect",
    "read_csv",
    "unprotect",
    "write_csv",
    "write_csv_async",
]
