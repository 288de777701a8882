"""Today's faster import reads every file exactly as the import before it did (issue 9).

tests/transfer_reference.py is the import as it was; both parse the same bytes and must give
the same entries, the same rejects, line numbers and reasons, in the same order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from screener import transfer
from screener.errors import InputError
from screener.policy import Entry, ListKind
from screener.transfer import MAX_LINE_BYTES, Reject, iter_rows, iter_staged
from tests import transfer_reference

NOW = dt.datetime(2026, 5, 1, 9, 30, tzinfo=dt.UTC)
HEADER = b"number,kind,prefix,label,expires,note,source\n"

Parsed = list[tuple[int, Entry] | Reject] | str


def both(data: bytes, kind: ListKind | None = None, broad: bool = False) -> tuple[Parsed, Parsed]:
    """What the reference and today's import make of ``data`` (an InputError as its text)."""
    results: list[Parsed] = []
    for parse in (transfer_reference.iter_rows, iter_rows):
        try:
            rows = list(
                parse(
                    io.BytesIO(data),
                    region="JP",
                    default_kind=kind,
                    source="import:test",
                    now=NOW,
                    broad=broad,
                )
            )
        except InputError as exc:
            results.append(f"InputError: {exc}")
            continue
        results.append([_plain(item) for item in rows])
    return results[0], results[1]


def _plain(item: object) -> tuple[int, Entry] | Reject:
    # The two modules' Reject classes are different classes with the same fields.
    if isinstance(item, tuple):
        line, entry = item
        # The one intended difference: the reference kept the newline of a number field that
        # ends in one (a quoted field over two lines) in the stored number.
        return line, dataclasses.replace(entry, number=entry.number.rstrip("\n"))
    return Reject(item.line, item.reason, item.text)  # type: ignore[attr-defined]


MIXED = (
    HEADER
    + "\n".join(
        [
            "+81312345678,allow,0,Tanaka Shoji,,,manual",
            "03-1234-5679,block,,Suzuki,2026-12-31,a note,",
            "+819012345678,BLOCK,no,'=SUM(A1),,'@note,'+src",
            '"+81312345670","allow","0","Quoted, with a comma",,,',
            '+81312345671,allow,0,"a label over',
            'two lines",,,',
            "",
            "+81312345672,allow,0,CRLF row,,,\r",
            "0120,block,1,Free dial,,,",
            "0,block,1,Everything,,,",
            "+1,block,yes,A whole country,,,",
            "+81312345673,maybe,0,,,,",
            "+81312345674,allow,2,,,,",
            "12,allow,0,,,,",
            "+81012345678,allow,0,trunk zero kept,,,",
            "+8131234567,allow,0,a digit short,,,",
            "+39000000,allow,0,zeros,,,",
            "+12015550123,allow,0,US,,,",
            "+447624123456,allow,0,IM,,,",
            "+81312345675,allow,0,,31/12/2026,,",
            "+81312345676,allow,0,,,,,extra",
            "+81312345677,allow,0," + "x" * 1001 + ",,,",
            '+81312345679,allow,0,"unclosed quote,,,',
            "+81312345680,allow,0,after the unclosed quote,,,",
            "+81312345681,allow,0,CR\rinside,,,",
            '+81312345682,allow,0,a "stray" quote,,,',
            "+81312345683\x00,allow,0,,,,",
            "+81312345684,allow",
            "+81312345685",
            "+81312345686,allow,0,,2030-12-31T09:00:00+09:00,,",
            "+81312345687,allow,0,,2026-02-30,,",
            '"+81312345688\n",allow,0,number with a newline,,,',
            "+81312345678,block,0,a repeat (not caught here),,,",
            ",allow,0,no number,,,",
            "+81312345689,,0,no kind,,,",
            "+81312345690,allow,0,Last row without a newline,,,",
        ]
    ).encode()
)


def test_mixed_file_parses_as_before() -> None:
    """A file with good rows and every kind of bad row: rows, rejects and reasons as before."""
    reference, today = both(MIXED + b"\n" + "Ｔａｎａｋａ,allow\n".encode())
    assert isinstance(today, list)
    assert today == reference
    rejects = [item for item in today if isinstance(item, Reject)]
    assert len(rejects) > 15 and len(today) - len(rejects) > 10


@pytest.mark.parametrize(
    "data",
    [
        MIXED.replace(b"\n", b"\r\n"),
        b"\xef\xbb\xbf" + MIXED,
        HEADER + "+81312345678,allow,0,Shift_JIS \u7530\u4e2d,,,\n".encode("cp932"),
        HEADER + b"+81312345678,allow,0," + b"y" * (MAX_LINE_BYTES + 10) + b"\n+81312345679,allow",
        HEADER + b"+81312345678,allow,0," + b"z" * 140_000 + b",,,\n+81312345679,allow",
        HEADER + b'+81312345678,allow,0,"' + b"q" * 140_000 + b'",,,\n+81312345679,allow',
        HEADER + b'+81312345678,allow,0,"runs to the end',
        HEADER + b"\n\n\r\n",
        b"number\n+81312345678\n0312345679\n",
        b"kind,number\nblock,+81312345678\n",
        b"number,oops\n",
        b'"number\n',
        b"",
    ],
)
def test_edge_files_parse_as_before(data: bytes) -> None:
    """Line ends, a byte-order mark, Shift_JIS, huge lines and fields, bad headers: as before."""
    for kind in (None, ListKind.BLOCK):
        reference, today = both(data, kind=kind)
        assert today == reference


# Block sizes that put block ends everywhere: inside quoted fields over several lines, right
# after a bad line, inside a multi-byte character, at the last line without a newline.
SMALL_BLOCKS = [1, 2, 7, 33, 64, 301]


@pytest.mark.parametrize("block", SMALL_BLOCKS)
@pytest.mark.parametrize("crlf", [False, True])
def test_any_block_size_parses_as_before(block: int, crlf: bool) -> None:
    """The stream is read a block at a time; where the blocks end changes nothing."""
    data = MIXED + b"\n" + "Ｔａｎａｋａ,allow\n".encode() + b"+81312345699,allow,0,\xff\xfe,,,\n"
    data += b"+81312345698,allow,0,after the bad bytes,,,\n"
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    with mock.patch.object(transfer, "BLOCK_BYTES", block):
        reference, today = both(data)
    assert today == reference


@pytest.mark.parametrize(
    "data",
    [
        HEADER + b"+81312345678,allow,0," + b"y" * (MAX_LINE_BYTES + 10) + b"\n+81312345679,allow",
        HEADER + b"+81312345678,allow,0,a,,,\n" * 3 + b"x" * (MAX_LINE_BYTES - 1) + b"\n1\n",
        HEADER + b"+81312345678,allow,0,a,,,\n" + b"x" * MAX_LINE_BYTES + b"\n1\n",
        b"\xef\xbb\xbf" + HEADER + b"+81312345678,allow,0,\x00,,,\n+81312345679,allow,0,,,,\n",
    ],
)
def test_long_lines_across_blocks_parse_as_before(data: bytes) -> None:
    """A line of about MAX_LINE_BYTES near a block's end: rejected, or read, as before."""
    with mock.patch.object(transfer, "BLOCK_BYTES", 64):
        reference, today = both(data)
    assert today == reference


def test_staged_rows_are_the_entries() -> None:
    """iter_staged gives each row as iter_rows does, as the store's plain tuple."""
    data = MIXED + b"\n+81312345697,allow,0,,2030-12-31T09:00:00.123456+09:00,,\n"
    rows = list(iter_rows(io.BytesIO(data), region="JP", default_kind=None, now=NOW))
    staged = list(iter_staged(io.BytesIO(data), region="JP", default_kind=None, now=NOW))
    assert len(rows) == len(staged)
    for row, tup in zip(rows, staged, strict=True):
        if isinstance(row, Reject):
            assert tup == row
            continue
        line, entry = row
        expires = entry.expires_at.timestamp() if entry.expires_at else None
        assert entry.created_at == NOW
        assert tup == (
            line,
            str(entry.kind),
            entry.number,
            int(entry.prefix),
            entry.label,
            entry.source,
            expires,
            entry.note,
        )
    assert sum(1 for t in staged if isinstance(t, tuple) and t[6] is not None) >= 3


def test_broad_prefixes_with_force_parse_as_before() -> None:
    """With ``--force`` the broad prefix rules are accepted by both alike."""
    reference, today = both(MIXED, broad=True)
    assert today == reference


# Pieces a generated row is made of: good and bad numbers, kinds, flags, quotes, line ends.
_FIELDS = st.sampled_from(
    [
        "+81312345678",
        "+819012345678",
        "0312345678",
        "0120",
        "+1",
        "+39000000",
        "12",
        "",
        "allow",
        "block",
        "BLOCK",
        "maybe",
        "0",
        "1",
        "yes",
        "2",
        "2026-12-31",
        "31/12/2026",
        "'=x",
        "a,b",
        '"',
        '"quoted"',
        '"two\nlines"',
        "\r",
        "\x00",
        "ｘ",
    ]
)
_ROWS = st.lists(st.lists(_FIELDS, min_size=0, max_size=9).map(",".join), max_size=12)


@pytest.mark.slow
@settings(
    max_examples=3000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    rows=_ROWS,
    crlf=st.booleans(),
    kind=st.sampled_from([None, ListKind.ALLOW]),
    block=st.sampled_from([*SMALL_BLOCKS, transfer.BLOCK_BYTES]),
)
def test_generated_files_parse_as_before(
    rows: list[str], crlf: bool, kind: ListKind | None, block: int
) -> None:
    """Files made of random good and bad pieces parse exactly as the reference parses them,
    whatever the size of the blocks the stream is read in."""
    end = "\r\n" if crlf else "\n"
    data = (HEADER.decode() + end.join(rows)).encode("utf-8", "surrogatepass")
    with mock.patch.object(transfer, "BLOCK_BYTES", block):
        reference, today = both(data, kind=kind)
    assert today == reference
