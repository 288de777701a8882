"""Caller-ID normalization: whatever Asterisk hands us, to an E.164 number and a category.

Pure: no I/O, no clock. ``normalize(raw, region)`` never raises for any input string.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType

from screener import fastnumbers

# A caller ID longer than this is not a phone number; we do not hand it to the parser.
MAX_RAW_LENGTH = 256


class Category(enum.StrEnum):
    """What kind of caller a number is, from the office's point of view."""

    WITHHELD = "withheld"
    INVALID = "invalid"
    TOLL_FREE = "toll_free"
    PREMIUM_RATE = "premium_rate"
    SHARED_COST = "shared_cost"
    VOIP = "voip"
    MOBILE = "mobile"
    FIXED_LINE = "fixed_line"
    INTERNATIONAL = "international"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Caller:
    """A normalized caller: the raw value kept verbatim, the E.164 form if valid, a category."""

    raw: str
    e164: str | None
    category: Category
    detail: str

    @property
    def display(self) -> str:
        """The best short form for a human: E.164 if known, else the detail."""
        return self.e164 or self.detail


# Japanese carriers send a one-letter reason instead of a number (and SIP sends "anonymous").
NO_NUMBER_REASONS: dict[str, str] = {
    "": "no caller ID",
    "p": "withheld by the caller (非通知, P)",
    "o": "out of area (表示圏外, O)",
    "c": "payphone (公衆電話, C)",
    "s": "not available from the network (S)",
    "anonymous": "withheld by the caller (anonymous)",
    "restricted": "withheld by the caller (restricted)",
    "private": "withheld by the caller (private)",
    "withheld": "withheld by the caller",
    "unknown": "no caller ID (unknown)",
    "<unknown>": "no caller ID (unknown)",
    "unavailable": "not available from the network",
    "anonymous.invalid": "withheld by the caller (anonymous)",
}

_TYPE_CATEGORY: dict[int, Category] = {
    PhoneNumberType.TOLL_FREE: Category.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE: Category.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST: Category.SHARED_COST,
    # libphonenumber files Japan's 0570 navi-dial as a "universal access number": callers share
    # the cost, which is what the office cares about.
    PhoneNumberType.UAN: Category.SHARED_COST,
    PhoneNumberType.VOIP: Category.VOIP,
    PhoneNumberType.MOBILE: Category.MOBILE,
    PhoneNumberType.FIXED_LINE: Category.FIXED_LINE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE: Category.FIXED_LINE,
}

_URI = re.compile(r"^(?:sips?|tel):([^@;>]*)", re.IGNORECASE)
_SEPARATORS = str.maketrans("", "", " \t-.()/\u30fc\u2010\u2011\u2012\u2013\u2014\u2212")
_DIALLABLE = re.compile(r"^\+?[0-9]+$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def _unwrap(text: str) -> str:
    """Take the user part out of a SIP/tel URI, with or without a display name and brackets."""
    if ":" not in text and ">" not in text:
        return text  # neither a URI nor an address in brackets: most caller IDs
    # The address is the last <...>: a quoted display name may hold brackets of its own.
    end = text.rfind(">")
    start = text.rfind("<", 0, end) if end != -1 else -1
    if start != -1:
        text = text[start + 1 : end]
    match = _URI.match(text.strip())
    if match:
        return match.group(1)
    return text


def normalize(raw: str, region: str = "JP") -> Caller:
    """Normalize a raw caller ID to a :class:`Caller`; never raises."""
    return _normalize(raw, region.upper())


def normalize_reference(raw: str, region: str = "JP") -> Caller:
    """:func:`normalize` by phonenumbers alone, uncached: the answer the fast path must give."""
    return _classify(raw, region.upper(), fast=False)


@lru_cache(maxsize=65536)
def _normalize(raw: str, region: str) -> Caller:
    return _classify(raw, region, fast=True)


def _classify(raw: str, region: str, *, fast: bool) -> Caller:
    if len(raw) > MAX_RAW_LENGTH:
        return Caller(raw, None, Category.INVALID, f"too long ({len(raw)} characters)")
    # NFKC folds full-width digits and plus signs (０１２０, ＋８１) into ASCII.
    text = unicodedata.normalize("NFKC", raw).strip()
    text = _unwrap(text).strip()
    reason = NO_NUMBER_REASONS.get(text.lower())
    if reason is not None:
        return Caller(raw, None, Category.WITHHELD, reason)
    # Most caller IDs are digits already (str.translate looks up every character).
    digits = text if text.isdigit() else text.translate(_SEPARATORS)
    if not _DIALLABLE.match(digits):
        return Caller(raw, None, Category.INVALID, "not a phone number")
    parsed = fastnumbers.parse(digits, region) if fast else None
    if parsed is not None:
        # phonenumbers' own metadata, precompiled (screener/fastnumbers.py): the same answer.
        code, national = parsed
        where, kind = fastnumbers.classify(code, national)
        if where is None or kind == PhoneNumberType.UNKNOWN:
            return Caller(raw, None, Category.INVALID, "not a valid number in any numbering plan")
        return _caller(raw, f"+{code}{national}", code, where, kind, fastnumbers.home_code(region))
    try:
        number = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException as exc:
        return Caller(raw, None, Category.INVALID, f"not a phone number ({exc})")
    if not phonenumbers.is_valid_number(number):
        return Caller(raw, None, Category.INVALID, "not a valid number in any numbering plan")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    code = int(number.country_code or 0)
    home_code = phonenumbers.country_code_for_region(region)
    where = phonenumbers.region_code_for_number(number) if code != home_code else None
    kind = phonenumbers.number_type(number) if code == home_code else PhoneNumberType.UNKNOWN
    return _caller(raw, e164, code, where, kind, home_code)


def _caller(raw: str, e164: str, code: int, where: str | None, kind: int, home: int) -> Caller:
    """The Caller of a valid number: foreign (from ``where``), or by its number type."""
    if code != home:
        return Caller(raw, e164, Category.INTERNATIONAL, f"international ({where or f'+{code}'})")
    category = _TYPE_CATEGORY.get(kind, Category.OTHER)
    return Caller(raw, e164, category, _DETAIL[category])


# A category's detail for a valid number ("fixed line"), made once: an enum's value is a
# descriptor, slow to read on every call.
_DETAIL = {category: category.value.replace("_", " ") for category in Category}


def is_valid_region(region: str) -> bool:
    """True if ``region`` is a two-letter region phonenumbers knows (``JP``, ``US``, ...)."""
    return region.upper() in phonenumbers.SUPPORTED_REGIONS


def parse_list_number(text: str, region: str, *, prefix: bool) -> str:
    """Turn a number typed by an admin into the E.164 form (or E.164 prefix) a list entry keys on.

    Raises ValueError with a reason the CLI can show. A prefix rule is read by
    :func:`normalize_prefix`: ``0120`` in JP becomes ``+81120``, ``010-1-800`` ``+1800``.
    """
    folded = unicodedata.normalize("NFKC", text).strip()
    digits = _unwrap(folded).translate(_SEPARATORS)
    if not digits or not _DIALLABLE.match(digits):
        raise ValueError(f"{text!r} is not a phone number")
    if not prefix:
        caller = normalize(digits, region)
        if caller.e164 is None:
            raise ValueError(f"{text!r} is not a valid phone number ({caller.detail})")
        return caller.e164
    try:
        candidate = normalize_prefix(digits, region)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid number prefix ({exc})") from None
    if not re.fullmatch(r"\+[1-9][0-9]{0,14}", candidate):
        raise ValueError(f"{text!r} is not a valid number prefix")
    return candidate


def normalize_prefix(digits: str, region: str) -> str:
    """The E.164 form of a dialled prefix (digits, or ``+`` and digits), by ``region``'s rules.

    What a caller in ``region`` would dial is read the way phonenumbers reads a whole number,
    from the region's own metadata: an international prefix (``010`` in JP, ``011`` in the US,
    ``00`` in GB) is followed by a country code; otherwise a national (trunk) prefix (``0``, or
    ``1`` in the US) is dropped, rewritten by the region's transform rule where it has one, and
    the region's country code put in front. Unlike for a whole number, nothing is checked
    against the numbering plan: a prefix is not a number yet. Raises ValueError.
    """
    if digits.startswith("+"):
        return digits
    meta = PhoneMetadata.metadata_for_region(region.upper())
    if meta is None or not meta.country_code:
        raise ValueError(f"unknown region {region!r}")
    idd = re.match(meta.international_prefix, digits) if meta.international_prefix else None
    # As phonenumbers does: a country code never starts with 0, so "0..." after it is national.
    if idd and idd.end() and not digits[idd.end() :].startswith("0"):
        rest = digits[idd.end() :]
        if not rest:
            raise ValueError("an international prefix alone; a country code must follow")
        return "+" + rest
    national = digits
    pattern = meta.national_prefix_for_parsing or meta.national_prefix
    trunk = re.match(pattern, digits) if pattern else None
    if trunk:
        rule = meta.national_prefix_transform_rule
        if rule and trunk.lastindex and trunk.group(trunk.lastindex) is not None:
            national = trunk.expand(rule) + digits[trunk.end() :]
        else:
            national = digits[trunk.end() :]
    return f"+{meta.country_code}{national}"


@dataclass(frozen=True, slots=True)
class Coverage:
    """What a prefix rule would match: whole country codes, and its share of the home plan."""

    countries: tuple[int, ...]
    home_share: float
    region: str

    def describe(self) -> str:
        """Say what is covered, for the error that asks for ``--force``."""
        if self.countries:
            names = ", ".join(f"+{code} ({_regions(code)})" for code in self.countries[:8])
            more = f" and {len(self.countries) - 8} more" if len(self.countries) > 8 else ""
            return f"every number of country code {names}{more}"
        return f"about {self.home_share:.0%} of the fixed-line and mobile numbers of {self.region}"


def _regions(code: int) -> str:
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    # "001" is phonenumbers' name for the non-geographic codes (+800 freephone, +882, ...).
    names = ["global" if r == phonenumbers.UNKNOWN_REGION or r == "001" else r for r in regions]
    return "/".join(names[:3]) + ("/..." if len(names) > 3 else "")


# A prefix rule broader than this (or a whole country code) needs the admin to insist.
BROAD_SHARE = 0.10


def prefix_coverage(prefix: str, region: str) -> Coverage:
    """What the E.164 prefix ``prefix`` covers: country codes it contains wholly, and the share
    of ``region``'s fixed-line and mobile numbers (as phonenumbers' metadata has them) under it."""
    digits = prefix.lstrip("+")
    countries = tuple(
        sorted(c for c in phonenumbers.COUNTRY_CODE_TO_REGION_CODE if str(c).startswith(digits))
    )
    home = str(phonenumbers.country_code_for_region(region.upper()))
    share = 0.0
    if countries:
        share = 1.0 if home.startswith(digits) else 0.0
    elif digits.startswith(home):
        share = _plan_share(region.upper(), digits[len(home) :])
    return Coverage(countries, share, region.upper())


def broad_prefix(prefix: str, region: str) -> str | None:
    """Why the prefix rule ``prefix`` is too broad to add without ``--force``; None if it is not."""
    digits = prefix.lstrip("+")
    home = str(phonenumbers.country_code_for_region(region.upper()))
    # Country codes have at most three digits: a longer prefix cannot hold a whole one.
    if len(digits) > 3 or not any(code.startswith(digits) for code in _country_codes()):
        if not digits.startswith(home):
            return None
        national = digits[len(home) :]
        # A longer prefix never covers more than a shorter one: stop at the first short enough
        # (cached: a file of prefix rules shares its first digits).
        for size in range(1, len(national) + 1):
            if _plan_share(region.upper(), national[:size]) <= BROAD_SHARE:
                return None
    return f"prefix {prefix} covers {prefix_coverage(prefix, region).describe()}"


@lru_cache(maxsize=1)
def _country_codes() -> tuple[str, ...]:
    return tuple(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


# --- counting a numbering plan -----------------------------------------------------------------
# libphonenumber's national number patterns use digits, \d, [...], (?:...), |, ? and {n,m} only:
# a small parser turns one into a tree, and a count over the tree says how many numbers of each
# length it allows, and how many of them begin with given digits.

_MAX_DIGITS = 17
_Node = tuple[Any, ...]


def _parse_pattern(pattern: str) -> _Node:
    pos = 0

    def alternatives() -> _Node:
        nonlocal pos
        options = [sequence()]
        while pos < len(pattern) and pattern[pos] == "|":
            pos += 1
            options.append(sequence())
        return ("alt", tuple(options))

    def sequence() -> _Node:
        nonlocal pos
        items: list[_Node] = []
        while pos < len(pattern) and pattern[pos] not in "|)":
            items.append(repeat(atom()))
        return ("seq", tuple(items))

    def atom() -> _Node:
        nonlocal pos
        char = pattern[pos]
        if char == "(":
            pos += 3 if pattern.startswith("(?:", pos) else 1
            inner = alternatives()
            pos += 1  # ")"
            return inner
        if char == "[":
            end = pattern.index("]", pos)
            body, pos = pattern[pos + 1 : end], end + 1
            digits: set[str] = set()
            i = 0
            while i < len(body):
                if body.startswith("\\d", i):
                    digits.update("0123456789")
                    i += 2
                elif i + 2 < len(body) and body[i + 1] == "-":
                    digits.update(str(d) for d in range(int(body[i]), int(body[i + 2]) + 1))
                    i += 3
                else:
                    digits.add(body[i])
                    i += 1
            return ("set", frozenset(digits))
        if pattern.startswith("\\d", pos):
            pos += 2
            return ("set", frozenset("0123456789"))
        if not char.isdigit():
            raise ValueError(f"unexpected {char!r} in a numbering-plan pattern")
        pos += 1
        return ("set", frozenset(char))

    def repeat(node: _Node) -> _Node:
        nonlocal pos
        if pos < len(pattern) and pattern[pos] == "?":
            pos += 1
            return ("rep", node, 0, 1)
        if pos < len(pattern) and pattern[pos] == "{":
            end = pattern.index("}", pos)
            low, _, high = pattern[pos + 1 : end].partition(",")
            pos = end + 1
            return ("rep", node, int(low), int(high) if high else int(low))
        return node

    tree = alternatives()
    if pos != len(pattern):
        raise ValueError(f"cannot read the numbering-plan pattern at {pos}")
    return tree


def _count(node: _Node, lead: str, memo: dict[tuple[int, str], dict[int, int]]) -> dict[int, int]:
    """For each length, how many strings ``node`` matches that agree with ``lead`` where both
    have a digit (overlapping alternatives count twice: an estimate, which is all we need)."""
    key = (id(node), lead)
    if key in memo:
        return memo[key]
    kind = node[0]
    result: dict[int, int] = {}
    if kind == "set":
        hits = (1 if lead[0] in node[1] else 0) if lead else len(node[1])
        result = {1: hits} if hits else {}
    elif kind == "alt":
        for option in node[1]:
            for length, n in _count(option, lead, memo).items():
                result[length] = result.get(length, 0) + n
    elif kind == "seq":
        result = {0: 1}
        for item in node[1]:
            result = _then(result, item, lead, memo)
    else:  # "rep": node, low, high: low to high copies of node, one after the other
        _, inner, low, high = node
        copies = {0: 1}
        result = dict(copies) if low == 0 else {}
        for count in range(1, min(high, _MAX_DIGITS) + 1):
            copies = _then(copies, inner, lead, memo)
            if count >= low:
                for length, n in copies.items():
                    result[length] = result.get(length, 0) + n
    memo[key] = result
    return result


def _then(
    before: dict[int, int], node: _Node, lead: str, memo: dict[tuple[int, str], dict[int, int]]
) -> dict[int, int]:
    """Counts by length of what ``before`` counted followed by a match of ``node``."""
    result: dict[int, int] = {}
    for done, n in before.items():
        for length, m in _count(node, lead[done:], memo).items():
            if done + length <= _MAX_DIGITS:
                result[done + length] = result.get(done + length, 0) + n * m
    return result


@lru_cache(maxsize=1024)
def _plan_share(region: str, national: str) -> float:
    """The share of ``region``'s fixed-line and mobile numbers that begin with ``national``.

    Those are the numbers ordinary callers have; toll-free and other service ranges are left
    out, or their long formats (17 digits in JP) would outnumber everything else.
    """
    meta = PhoneMetadata.metadata_for_region(region)
    if meta is None:
        return 0.0
    total = under = 0
    for desc in (meta.fixed_line, meta.mobile):
        if desc is None or not desc.national_number_pattern:
            continue
        tree = _parse_pattern(str(desc.national_number_pattern))
        lengths = set(desc.possible_length or ()) or set(range(_MAX_DIGITS + 1))
        memo: dict[tuple[int, str], dict[int, int]] = {}
        total += sum(n for length, n in _count(tree, "", memo).items() if length in lengths)
        under += sum(
            n
            for length, n in _count(tree, national, memo).items()
            if length in lengths and length >= len(national)
        )
    return under / total if total else 0.0


def looks_e164(text: str) -> bool:
    """True if ``text`` is already a syntactically complete E.164 number."""
    return bool(_E164.match(text))
