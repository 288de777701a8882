"""Caller-ID normalization, table-tested: every format Asterisk may hand us."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from screener.numbers import (
    Category,
    Coverage,
    broad_prefix,
    looks_e164,
    normalize,
    normalize_prefix,
    parse_list_number,
    prefix_coverage,
)

C = Category

CASES = [
    # raw, region, e164, category
    ("0120-121-852", "JP", "+81120121852", C.TOLL_FREE),
    ("0120121852", "JP", "+81120121852", C.TOLL_FREE),
    ("+81 120 121 852", "JP", "+81120121852", C.TOLL_FREE),
    ("０１２０１２１８５２", "JP", "+81120121852", C.TOLL_FREE),
    ("０１２０－１２１－８５２", "JP", "+81120121852", C.TOLL_FREE),
    ("＋８１１２０１２１８５２", "JP", "+81120121852", C.TOLL_FREE),
    ("0800-123-4567", "JP", "+818001234567", C.TOLL_FREE),
    ("0570-000-123", "JP", "+81570000123", C.SHARED_COST),
    ("0990-123-456", "JP", "+81990123456", C.PREMIUM_RATE),
    ("050-1234-5678", "JP", "+815012345678", C.VOIP),
    ("090-1234-5678", "JP", "+819012345678", C.MOBILE),
    ("080-1234-5678", "JP", "+818012345678", C.MOBILE),
    ("070-1234-5678", "JP", "+817012345678", C.MOBILE),
    ("03-1234-5678", "JP", "+81312345678", C.FIXED_LINE),
    ("(06) 6123-4567", "JP", "+81661234567", C.FIXED_LINE),
    ("020-1234-5678", "JP", "+812012345678", C.OTHER),  # pager
    ("010 1 212 555 0100", "JP", "+12125550100", C.INTERNATIONAL),
    ("+1 212 555 0100", "JP", "+12125550100", C.INTERNATIONAL),
    ("+44 20 7946 0958", "JP", "+442079460958", C.INTERNATIONAL),
    ("sip:0312345678@10.0.0.1", "JP", "+81312345678", C.FIXED_LINE),
    ("sip:+81312345678@10.0.0.1;user=phone", "JP", "+81312345678", C.FIXED_LINE),
    ('"Tanaka" <sip:09012345678@pbx.example>', "JP", "+819012345678", C.MOBILE),
    ('"<Tanaka>" <sip:09012345678@pbx.example>', "JP", "+819012345678", C.MOBILE),
    ('"a<b" <0312345678>', "JP", "+81312345678", C.FIXED_LINE),
    ("Sato <tel:+81312345678>", "JP", "+81312345678", C.FIXED_LINE),
    ("<0312345678", "JP", None, C.INVALID),
    ("tel:+81-3-1234-5678", "JP", "+81312345678", C.FIXED_LINE),
    ("anonymous", "JP", None, C.WITHHELD),
    ("Anonymous", "JP", None, C.WITHHELD),
    ("sip:anonymous@anonymous.invalid", "JP", None, C.WITHHELD),
    ("", "JP", None, C.WITHHELD),
    ("   ", "JP", None, C.WITHHELD),
    ("<unknown>", "JP", None, C.WITHHELD),
    ("P", "JP", None, C.WITHHELD),
    ("O", "JP", None, C.WITHHELD),
    ("C", "JP", None, C.WITHHELD),
    ("S", "JP", None, C.WITHHELD),
    ("hello world", "JP", None, C.INVALID),
    ("0120-12", "JP", None, C.INVALID),
    ("12345", "JP", None, C.INVALID),
    ("03-1234-5678\r\nAction: Originate", "JP", None, C.INVALID),
    ("'; DROP TABLE entries; --", "JP", None, C.INVALID),
    ("9" * 300, "JP", None, C.INVALID),
    # Another home region: a Japanese number is now international, a US one at home.
    ("+81 120 121 852", "US", "+81120121852", C.INTERNATIONAL),
    ("(212) 555-0100", "US", "+12125550100", C.FIXED_LINE),
]


@pytest.mark.parametrize(("raw", "region", "e164", "category"), CASES)
def test_normalize_table(raw: str, region: str, e164: str | None, category: Category) -> None:
    """Each raw caller-ID form normalizes to the expected E.164 number and category."""
    caller = normalize(raw, region)
    assert (caller.e164, caller.category) == (e164, category)
    assert caller.raw == raw


@pytest.mark.parametrize(
    ("raw", "words"),
    [("P", "非通知"), ("O", "表示圏外"), ("C", "公衆電話"), ("", "no caller ID")],
)
def test_withheld_reasons_are_explained(raw: str, words: str) -> None:
    """Japanese no-number reason codes keep their meaning in the detail text."""
    assert words in normalize(raw).detail


@given(st.text(max_size=400))
def test_normalize_never_raises(raw: str) -> None:
    """Any string at all normalizes to a Caller; the raw value is kept verbatim."""
    caller = normalize(raw)
    assert caller.raw == raw
    assert caller.e164 is None or looks_e164(caller.e164)


@pytest.mark.parametrize(
    ("text", "prefix", "expected"),
    [
        ("0120-121-852", False, "+81120121852"),
        ("0120", True, "+81120"),
        ("+81120", True, "+81120"),
        ("０１２０", True, "+81120"),
        ("03", True, "+813"),
        ("+1", True, "+1"),
    ],
)
def test_parse_list_number(text: str, prefix: bool, expected: str) -> None:
    """Admin input becomes the E.164 number or prefix the list is keyed on."""
    assert parse_list_number(text, "JP", prefix=prefix) == expected


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ("abc", False),
        ("0120-12", False),
        ("", True),
        ("+0", True),
        ("12a", True),
        ("+" + "1" * 16, True),
    ],
)
def test_parse_list_number_rejects(text: str, prefix: bool) -> None:
    """Unusable admin input raises ValueError naming the input."""
    with pytest.raises(ValueError, match="not a"):
        parse_list_number(text, "JP", prefix=prefix)


@pytest.mark.parametrize(
    ("digits", "region", "expected"),
    [
        # JP: international prefix 010, national prefix 0.
        ("0120", "JP", "+81120"),
        ("03", "JP", "+813"),
        ("0", "JP", "+81"),
        ("0101800", "JP", "+1800"),
        ("01044", "JP", "+44"),
        ("+1800", "JP", "+1800"),
        ("90", "JP", "+8190"),  # typed without the trunk 0: already national
        # US: international prefix 011, national prefix 1.
        ("1212", "US", "+1212"),
        ("212", "US", "+1212"),
        ("1800", "US", "+1800"),
        ("01181", "US", "+81"),
        ("011813", "US", "+813"),
        # GB: international prefix 00, national prefix 0.
        ("020", "GB", "+4420"),
        ("07", "GB", "+447"),
        ("0081120", "GB", "+81120"),
        ("00", "GB", None),
        ("010", "JP", None),
        ("011", "US", None),
    ],
)
def test_normalize_prefix(digits: str, region: str, expected: str | None) -> None:
    """A dialled prefix is read with the region's own international and national prefixes."""
    if expected is None:
        with pytest.raises(ValueError, match="international prefix alone"):
            normalize_prefix(digits, region)
    else:
        assert normalize_prefix(digits, region) == expected


@pytest.mark.parametrize(
    ("text", "region", "expected"),
    [
        ("010-1-800", "JP", "+1800"),
        ("1212", "US", "+1212"),
        ("1-212", "US", "+1212"),
        ("020", "GB", "+4420"),
        ("020 7946", "GB", "+44207946"),
    ],
)
def test_parse_list_number_prefix_by_region(text: str, region: str, expected: str) -> None:
    """The CLI's prefix rules use the same reading, separators and all."""
    assert parse_list_number(text, region, prefix=True) == expected


@pytest.mark.parametrize(
    ("prefix", "region", "broad"),
    [
        ("+81", "JP", "every number of country code +81 (JP)"),
        ("+8", "JP", "every number of country code +81 (JP), +82 (KR)"),
        ("+1", "JP", "every number of country code +1 (US"),
        ("+44", "JP", "every number of country code +44 (GB"),
        ("+819", "JP", "fixed-line and mobile numbers of JP"),
        ("+816", "JP", "fixed-line and mobile numbers of JP"),
        ("+8190", "JP", None),  # every 090 mobile: about 9 %, under the line
        ("+81120", "JP", None),
        ("+8150", "JP", None),
        ("+1800", "JP", None),  # foreign, and not a whole country code
        ("+12", "US", "fixed-line and mobile numbers of US"),
        ("+1212", "US", None),
        ("+447", "GB", "about 46% of the fixed-line and mobile numbers of GB"),
        ("+4420", "GB", None),
    ],
)
def test_broad_prefix(prefix: str, region: str, broad: str | None) -> None:
    """A whole country code, or over 10 % of the home plan, is too broad; narrower is not."""
    reason = broad_prefix(prefix, region)
    if broad is None:
        assert reason is None
    else:
        assert reason is not None and broad in reason and reason.startswith(f"prefix {prefix} ")


def test_prefix_coverage_share() -> None:
    """The share is the fraction of the home plan's numbers under the prefix."""
    assert prefix_coverage("+81", "JP").home_share == 1.0
    assert 0.15 < prefix_coverage("+819", "JP").home_share < 0.17
    assert 0.08 < prefix_coverage("+8190", "JP").home_share < 0.09
    assert prefix_coverage("+81120", "JP").home_share == 0.0  # toll free: not fixed or mobile
    assert prefix_coverage("+1800", "JP") == Coverage((), 0.0, "JP")
