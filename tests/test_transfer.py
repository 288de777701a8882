"""Tests for screener.transfer: list CSV import and export."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from screener.errors import InputError
from screener.policy import SOURCE_LEARNED, SOURCE_MANUAL, Entry, ListKind
from screener.transfer import (
    COLUMNS,
    MAX_LINE_BYTES,
    MAX_RECORD_CHARS,
    ParsedCSV,
    Reject,
    iter_csv,
    protect,
    read_csv,
    unprotect,
    write_csv,
)

NOW = dt.datetime(2026, 5, 1, 9, 30, tzinfo=dt.UTC)
HEADER = "number,kind,prefix,label,expires,note,source\n"


def parse(data: bytes | str, *, default_kind: ListKind | None = None) -> ParsedCSV:
    raw = data.encode() if isinstance(data, str) else data
    return read_csv(io.BytesIO(raw), region="JP", default_kind=default_kind, now=NOW)


def only_reject(data: bytes | str, **kw: ListKind | None) -> Reject:
    parsed = parse(data, **kw)
    assert len(parsed.rejects) == 1, parsed.rejects
    return parsed.rejects[0]


def export(entries: list[Entry]) -> str:
    out = io.StringIO(newline="")
    write_csv(entries, out)
    return out.getvalue()


def test_good_rows_become_entries() -> None:
    """Valid rows give entries: numbers normalized, prefixes, labels, expiry and source."""
    parsed = parse(
        HEADER + "03-1234-5678,allow,,Tanaka,,,\n"
        "0120,BLOCK,yes,Telemarketers,2026-12-31,free dial,\n"
        "+81312345679,block,0,,2026-06-01T09:00:00+09:00,,learned\n"
    )
    assert parsed.rejects == [] and parsed.rows == 3
    first, second, third = parsed.entries
    assert first == Entry(ListKind.ALLOW, "+81312345678", label="Tanaka", created_at=NOW)
    assert (second.number, second.prefix, second.kind) == ("+81120", True, ListKind.BLOCK)
    assert second.expires_at == dt.datetime(2026, 12, 31, tzinfo=dt.UTC)
    assert second.note == "free dial" and second.source == SOURCE_MANUAL
    assert third.expires_at == dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    assert third.source == SOURCE_LEARNED


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        ("hello,allow,,,,,\n", 2, "bad number"),
        ("0312345678,maybe,,,,,\n", 2, "unknown kind 'maybe'"),
        ("0312345678,,,,,,\n", 2, "no kind"),
        ("0312345678,allow,perhaps,,,,\n", 2, "bad prefix value 'perhaps'"),
        ("0312345678,allow,,,31/12/2026,,\n", 2, "bad expiry '31/12/2026'"),
        ("0312345678,allow,,,,,,extra\n", 2, "too many columns (8; the header has 7)"),
        ("0312345678,allow,,," + "x" * 1001 + ",\n", 2, "expires is over 1,000 characters"),
        ("0312345678,allow,," + "x" * 1001 + ",,,\n", 2, "label is over 1,000 characters"),
        ('0312345678,allow,,"open"x,,,\n', 2, "not valid CSV"),
        ("+81312345678,allow,,,,,\n\n03-1234-5678,block,,,,,\n", 4, "duplicate of line 3"),
        ("0312345678,allow,,a\x00b,,,\n", 2, "NUL byte"),
        ("+81999,allow,,,,,\n", 2, "not a valid phone number"),
        ("99,allow,1,,,,\n", 2, None),  # a prefix rule: +8199, accepted
    ],
)
def test_row_rejects(body: str, line: int, reason: str | None) -> None:
    """Each bad row is rejected with its physical line number and the reason."""
    data = HEADER + "0612345678,allow,,fine,,,\n" + body
    parsed = parse(data)
    if reason is None:
        assert parsed.rejects == []
        return
    (reject,) = parsed.rejects
    assert reject.line == line + 1
    assert reason in reject.reason
    assert len(reject.text) <= 80
    assert parsed.entries[0].number == "+81612345678"


def test_reject_text_is_truncated() -> None:
    """A reject carries at most 80 characters of its line, without the line end."""
    reject = only_reject(HEADER + "bad,allow,," + "y" * 500 + ",,,\r\n")
    assert reject.text == ("bad,allow,," + "y" * 500)[:80]


def test_line_numbers_count_physical_lines() -> None:
    """A quoted note over several lines keeps later rejects on their physical line numbers."""
    data = HEADER + '0312345678,allow,,,,"one\ntwo\nthree",\nnope,allow,,,,,\n'
    parsed = parse(data)
    assert parsed.entries[0].note == "one\ntwo\nthree"
    assert [(r.line, r.text) for r in parsed.rejects] == [(5, "nope,allow,,,,,")]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # A stray quote further down closes the field: the rows between used to vanish into it.
        (
            '0312345678,allow,,"Tanaka,,,\n0312345679,allow,,,,,\n0312345670,block,,x",,,\n',
            "a quote is not closed (it runs into line 3, a row of its own)",
        ),
        # Never closed: the rest of the file used to be one rejected row.
        (
            '0312345678,allow,,"Tanaka,,,\n0312345679,allow,,,,,\n0312345670,block,,x,,,\n',
            "a quote is not closed (it runs into line 3, a row of its own)",
        ),
        # Nothing after it looks like a row, and the file ends inside the quote.
        (
            '0312345678,allow,,"Tanaka,,,\n'
            + "not a row\n" * 3
            + "0312345679,allow,,,,,\n0312345670,block,,x,,,\n",
            "a quote is not closed (it runs into line 6, a row of its own)",
        ),
    ],
)
def test_unclosed_quote_is_rejected_and_swallows_nothing(body: str, reason: str) -> None:
    """An unclosed quote rejects its own row, by line; every row after it is read on its own."""
    parsed = parse(HEADER + body)
    assert (parsed.rejects[0].line, parsed.rejects[0].reason) == (2, reason)
    assert parsed.rejects[0].text == '0312345678,allow,,"Tanaka,,,'
    assert {"+81312345679", "+81312345670"} <= {e.number for e in parsed.entries}


def test_unclosed_quote_at_the_end_of_the_file() -> None:
    """A quote opened on the last row and never closed rejects that row, naming why."""
    parsed = parse(HEADER + '0312345679,allow,,,,,\n0312345678,allow,,"Tanaka,,,\nmore\n')
    assert [e.number for e in parsed.entries] == ["+81312345679"]
    assert (parsed.rejects[0].line, parsed.rejects[0].reason) == (
        3,
        "a quote is not closed (it runs to the end of the file)",
    )


def test_unclosed_quote_runs_out_at_the_record_limit() -> None:
    """Lines that are not rows are swallowed only up to the longest record that can be valid."""
    filler = "words, words\n" * 1000  # 13,000 characters: past MAX_RECORD_CHARS
    parsed = parse(HEADER + '0312345678,allow,,"Tanaka,,,\n' + filler + "0312345679,allow,,,,,\n")
    first = parsed.rejects[0]
    assert (first.line, first.reason.split(" at line")[0]) == (
        2,
        f"a quote is not closed (the row runs past {MAX_RECORD_CHARS:,} characters",
    )
    assert [e.number for e in parsed.entries] == ["+81312345679"]


def test_duplicate_keys_keep_the_first() -> None:
    """A key seen again is rejected naming the first line; the same number as prefix is not."""
    parsed = parse(
        HEADER + "0312345678,allow,,first,,,\n"
        "0312345678,allow,1,a prefix rule,,,\n"
        "+81 3-1234-5678,block,,second,,,\n"
    )
    assert [e.label for e in parsed.entries] == ["first", "a prefix rule"]
    assert [(r.line, r.reason) for r in parsed.rejects] == [
        (4, "duplicate of line 2 (same number and prefix)")
    ]


def test_default_kind_and_minimal_header() -> None:
    """With a default kind, a file of numbers alone is enough; columns can come in any order."""
    parsed = parse("Number\n0312345678\n0312345679\n", default_kind=ListKind.BLOCK)
    assert [(e.number, e.kind) for e in parsed.entries] == [
        ("+81312345678", ListKind.BLOCK),
        ("+81312345679", ListKind.BLOCK),
    ]
    parsed = parse("kind,number\nallow,0312345678\n", default_kind=ListKind.BLOCK)
    assert parsed.entries[0].kind is ListKind.ALLOW


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("number,kind,colour\n", "unknown column 'colour'"),
        ("kind,label\n", "no 'number' column"),
        ("number,label\n", "no 'kind' column"),
        ("number,kind,number\n", "appears twice"),
    ],
)
def test_bad_header_raises_input_error(header: str, message: str) -> None:
    """An unusable header stops the import with an InputError naming the problem."""
    with pytest.raises(InputError, match=message):
        parse(header + "0312345678,allow\n")


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n\n"])
def test_empty_file_raises_input_error(data: bytes) -> None:
    """A file without a header row (empty, a BOM alone, blank lines) raises InputError."""
    with pytest.raises(InputError, match=r"empty|header"):
        parse(data)


def test_bom_is_tolerated() -> None:
    """A UTF-8 byte-order mark before the header is ignored."""
    parsed = parse(b"\xef\xbb\xbf" + HEADER.encode() + "0312345678,allow,,田中,,,\n".encode())
    assert parsed.rejects == []
    assert parsed.entries[0].label == "田中"


def test_shift_jis_lines_are_rejected_clearly() -> None:
    """Lines in Shift_JIS are rejected as not UTF-8 with their line number; ASCII lines pass."""
    data = (
        HEADER.encode()
        + "0312345678,allow,,田中商事,,,\n".encode("shift_jis")
        + b"0312345679,allow,,ascii,,,\n"
        + "0312345670,block,,迷惑電話,,,\n".encode("shift_jis")
    )
    parsed = parse(data)
    assert [e.number for e in parsed.entries] == ["+81312345679"]
    assert [r.line for r in parsed.rejects] == [2, 4]
    assert parsed.rejects[0].reason == (
        "not UTF-8 (line 2, looks like Shift_JIS); save the file as UTF-8"
    )


def test_shift_jis_header_raises() -> None:
    """A header that is not UTF-8 stops the import with a clear InputError."""
    with pytest.raises(InputError, match=r"not UTF-8 \(line 1.*save the file as UTF-8"):
        parse("番号,kind\n".encode("shift_jis"))


def test_nul_byte_rejects_only_its_row() -> None:
    """A NUL byte rejects its row and the rows around it still import."""
    parsed = parse(HEADER.encode() + b"0312345678,allow,,a\x00,,,\n0312345679,allow,,,,,\n")
    assert [r.line for r in parsed.rejects] == [2]
    assert "\x00" not in parsed.rejects[0].text
    assert [e.number for e in parsed.entries] == ["+81312345679"]


def test_ten_megabyte_line_is_rejected_cleanly(tmp_path: Path) -> None:
    """A 10 MB line is rejected as too long and parsing carries on with the next line."""
    path = tmp_path / "big.csv"
    with path.open("wb") as handle:
        handle.write(HEADER.encode())
        handle.write(b"0312345678,allow,," + b"z" * (10 * 1024 * 1024) + b",,,\n")
        handle.write(b"0312345679,allow,,,,,\n")
    parsed = read_csv(path, region="JP", default_kind=None, now=NOW)
    assert [(r.line, r.reason) for r in parsed.rejects] == [
        (2, f"line over {MAX_LINE_BYTES:,} bytes")
    ]
    assert parsed.rejects[0].text.startswith("0312345678,allow,,zzz")
    assert [e.number for e in parsed.entries] == ["+81312345679"]


def test_runaway_field_is_rejected() -> None:
    """A field larger than the csv module's limit (an unclosed quote) is rejected, not raised."""
    data = HEADER + '0312345678,allow,,"' + "w" * 200_000 + ",,,\n0312345679,allow,,,,,\n"
    parsed = parse(data)
    assert parsed.rejects[0].line == 2
    assert "over 1,000 characters" in parsed.rejects[0].reason


def test_missing_file_raises_input_error(tmp_path: Path) -> None:
    """A CSV path that cannot be read raises InputError naming it."""
    with pytest.raises(InputError, match=r"missing\.csv"):
        read_csv(tmp_path / "missing.csv", region="JP", default_kind=None, now=NOW)


def test_iter_csv_streams_entries_and_rejects() -> None:
    """iter_csv yields entries and rejects in file order."""
    items = list(
        iter_csv(
            io.BytesIO((HEADER + "0312345678,allow,,,,,\nbad,allow,,,,,\n").encode()),
            region="JP",
            default_kind=None,
            now=NOW,
        )
    )
    assert [type(item) for item in items] == [Entry, Reject]


# --- export ------------------------------------------------------------------------------------


def test_export_quotes_formula_text_but_not_numbers() -> None:
    """Free text that a spreadsheet would run gets a leading quote; the E.164 number does not."""
    entries = [
        Entry(
            ListKind.BLOCK,
            "+81120",
            prefix=True,
            label="=HYPERLINK(1)",
            note="@SUM(A1)",
            created_at=NOW,
            expires_at=dt.datetime(2027, 1, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=9))),
        ),
        Entry(ListKind.ALLOW, "+81312345678", label="-5", note="\tx", created_at=NOW),
        Entry(ListKind.ALLOW, "+81312345679", label="plain 'text'", created_at=NOW),
    ]
    text = export(entries)
    lines = text.split("\r\n")
    assert lines[0] == ",".join(COLUMNS)
    assert lines[1] == "+81120,block,1,'=HYPERLINK(1),2027-01-01T00:00:00+00:00,'@SUM(A1),manual"
    assert lines[2] == "+81312345678,allow,0,'-5,,'\tx,manual"
    assert lines[3] == "+81312345679,allow,0,plain 'text',,,manual"


def test_export_then_import_round_trips() -> None:
    """What write_csv exports, read_csv imports back to the same entries."""
    entries = [
        Entry(ListKind.BLOCK, "+81120", prefix=True, label="=1+1", note="a\nb, \"c\"",
              created_at=NOW, expires_at=NOW),
        Entry(ListKind.ALLOW, "+81312345678", label="'=already quoted", source=SOURCE_LEARNED,
              created_at=NOW),
        Entry(ListKind.ALLOW, "+442079460000", label="ロンドン\r\n", created_at=NOW),
    ]  # fmt: skip
    parsed = parse(export(entries))
    assert parsed.rejects == []
    assert parsed.entries == entries


def test_export_bom() -> None:
    """bom=True starts the file with a UTF-8 byte-order mark for Excel; import accepts it."""
    out = io.StringIO(newline="")
    write_csv([Entry(ListKind.ALLOW, "+81312345678", created_at=NOW)], out, bom=True)
    assert out.getvalue().startswith("\ufeffnumber,")
    assert len(parse(out.getvalue()).entries) == 1


@given(st.text(max_size=50))
def test_protect_unprotect_round_trip(text: str) -> None:
    """unprotect undoes protect for any text, and protected text never starts a formula."""
    protected = protect(text)
    assert unprotect(protected) == text
    assert not protected or protected[0] not in "=+-@\t\r"


_NO_NUL = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


@given(
    st.text(_NO_NUL, max_size=40),
    st.text(_NO_NUL, max_size=40),
)
def test_free_text_round_trips_through_csv(label: str, note: str) -> None:
    """Any label and note (bar NUL) survive export and import unchanged."""
    entry = Entry(ListKind.ALLOW, "+81312345678", label=label, note=note, created_at=NOW)
    parsed = parse(export([entry]))
    assert parsed.rejects == []
    assert parsed.entries == [entry]
