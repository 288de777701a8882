"""phonenumbers' parse, validity and number type for plain digit strings, precompiled.

``numbers.normalize`` hands phonenumbers a string of digits, with or without a leading ``+``,
and asks four things: ``parse(digits, region)``, ``is_valid_number``, ``format_number(E164)``
and ``number_type`` (plus ``region_code_for_number`` for a foreign number). In pure Python that
is about three bare SQLite point lookups' worth of time per new caller, most of it in
``parse``'s generality: extension and RFC 3966 handling, alpha numbers, recompiling pattern
strings through a cache, a dozen calls per type check.

Here the same metadata (phonenumbers' own, read once per region and per number length) answers
the same questions for the two shapes carriers send: ``+`` and a known country code, and a
national number in the office's region that neither starts with the international prefix
(``010`` in JP) nor with the region's own country code (``81...`` without a ``+``, which
phonenumbers may read either way). Every step of phonenumbers' algorithm for those shapes is
kept as it is, including the national-prefix rules (JP's ``0``, and its transform rule for
``000[2569]...``) and the number-length test that decides whether the prefix is dropped.
Whatever else (too short, too long, an IDD, a ``+0``, a country code phonenumbers does not
know, a region it does not have) returns None, and the caller asks phonenumbers itself.

The two paths are compared on tables and on generated digit strings in
``tests/test_fastnumbers.py``: the point is phonenumbers' answer for every input, fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType

from screener.validity import _allows

# phonenumbers' limits on a national significant number, and on a country code.
_MIN_NSN = 2
_MAX_NSN = 17
_MAX_CC = 3
# Shorter or longer digit strings go to phonenumbers (whose errors say what is wrong).
_MIN_DIGITS = 3
_MAX_DIGITS = 20

_NON_GEO = phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY

# _number_type_helper's order after the general description (fixed line and mobile last).
_TYPES = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)

_Pattern = re.Pattern[str]


def _matcher(desc: object, length: int) -> _Pattern | None:
    """``desc``'s pattern, compiled, if a national number of ``length`` digits may match it
    (the same test as the import's validity check, :func:`screener.validity._allows`)."""
    pattern = _allows(desc, length)
    return re.compile(pattern) if pattern is not None else None


@dataclass(frozen=True, slots=True)
class _Length:
    """One region's type patterns for national numbers of one length, in phonenumbers' order."""

    general: _Pattern | None
    types: tuple[tuple[int, _Pattern], ...]
    fixed: _Pattern | None
    mobile: _Pattern | None


class _Plan:
    """One region's metadata, compiled: parsing rules and, per length, the type patterns."""

    def __init__(self, meta: PhoneMetadata) -> None:
        self.meta = meta
        self.code = int(meta.country_code or 0)
        self.code_text = str(self.code)
        idd = meta.international_prefix
        self.idd = re.compile(idd) if idd is not None else None
        parsing = meta.national_prefix_for_parsing
        self.national_prefix = re.compile(parsing) if parsing else None
        self.transform = meta.national_prefix_transform_rule or None
        general = meta.general_desc
        pattern = getattr(general, "national_number_pattern", None) if general else None
        self.general = re.compile(pattern) if pattern else None
        self.general_lengths: tuple[int, ...] | None = (
            tuple(general.possible_length or ()) if general is not None else None
        )
        self.local_lengths = tuple(getattr(general, "possible_length_local_only", ()) or ())
        self.leading = re.compile(meta.leading_digits) if meta.leading_digits is not None else None
        self.same_mobile = bool(meta.same_mobile_and_fixed_line_pattern)
        self._lengths: dict[int, _Length] = {}

    def _general_fits(self, number: str) -> bool:
        """phonenumbers' ``_match_national_number(number, general_desc, False)``."""
        return self.general is not None and self.general.fullmatch(number) is not None

    def strip_national_prefix(self, number: str) -> str | None:
        """``_maybe_strip_national_prefix_carrier_code``'s number; None where it would fail."""
        if not number or self.national_prefix is None:
            return number
        match = self.national_prefix.match(number)
        if match is None:
            return number
        viable = self._general_fits(number)
        groups = match.groups()
        if self.transform is None or (groups and groups[-1] is None):
            rest = number[match.end() :]
            return number if viable and not self._general_fits(rest) else rest
        if not groups:
            return None  # phonenumbers would index an empty tuple: let it say what it does
        transformed = self.national_prefix.sub(self.transform, number, count=1)
        return number if viable and not self._general_fits(transformed) else transformed

    def keeps_stripped(self, number: str) -> bool | None:
        """Whether ``parse`` keeps the prefix-stripped number: ``_test_number_length`` says
        neither TOO_SHORT nor IS_POSSIBLE_LOCAL_ONLY nor INVALID_LENGTH. None: unknown."""
        lengths = self.general_lengths
        if lengths is None:
            return False  # no general description: INVALID_LENGTH
        if not lengths:
            return None
        actual = len(number)
        if actual in self.local_lengths:
            return False
        if lengths[0] == actual:
            return True
        if lengths[0] > actual:
            return False
        if lengths[-1] < actual:
            return True  # TOO_LONG
        return actual in lengths[1:]

    def _for_length(self, length: int) -> _Length:
        plan = self._lengths.get(length)
        if plan is None:
            meta = self.meta
            types = tuple(
                (kind, pattern)
                for name, kind in _TYPES
                if (pattern := _matcher(getattr(meta, name), length)) is not None
            )
            plan = self._lengths[length] = _Length(
                _matcher(meta.general_desc, length),
                types,
                _matcher(meta.fixed_line, length),
                _matcher(meta.mobile, length),
            )
        return plan

    def number_type(self, nsn: str) -> int:
        """phonenumbers' ``_number_type_helper(nsn, metadata)``."""
        plan = self._for_length(len(nsn))
        if plan.general is None or plan.general.fullmatch(nsn) is None:
            return PhoneNumberType.UNKNOWN
        for kind, pattern in plan.types:
            if pattern.fullmatch(nsn) is not None:
                return kind
        if plan.fixed is not None and plan.fixed.fullmatch(nsn) is not None:
            if self.same_mobile or (plan.mobile is not None and plan.mobile.fullmatch(nsn)):
                return PhoneNumberType.FIXED_LINE_OR_MOBILE
            return PhoneNumberType.FIXED_LINE
        if not self.same_mobile and plan.mobile is not None and plan.mobile.fullmatch(nsn):
            return PhoneNumberType.MOBILE
        return PhoneNumberType.UNKNOWN


_PLANS: dict[tuple[str, int], _Plan | None] = {}


def _plan(region: str, code: int = 0) -> _Plan | None:
    """The compiled plan of ``region`` (``001`` with ``code``: a non-geographic code's)."""
    key = (region, code if region == _NON_GEO else 0)
    try:
        return _PLANS[key]
    except KeyError:
        pass
    if region == _NON_GEO:
        meta = PhoneMetadata.metadata_for_nongeo_region(code, None)
    else:
        meta = PhoneMetadata.metadata_for_region(region, None)
    plan = _PLANS[key] = _Plan(meta) if meta is not None else None
    return plan


def _country_code(body: str) -> tuple[int, str] | None:
    """``_extract_country_code``: the first one to three digits phonenumbers knows as a code."""
    for size in range(1, min(len(body), _MAX_CC) + 1):
        code = int(body[:size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return code, body[size:]
    return None


def parse(digits: str, region: str) -> tuple[int, str] | None:
    """(country code, national significant number) of ``phonenumbers.parse(digits, region)``.

    ``digits`` is ASCII digits with an optional leading ``+``; ``region`` upper case. None
    where this module cannot vouch for phonenumbers' answer (it may raise, or read the digits
    by a rule not kept here): ask phonenumbers.
    """
    plus = digits.startswith("+")
    body = digits[1:] if plus else digits
    if not _MIN_DIGITS <= len(body) <= _MAX_DIGITS or not body.isascii() or not body.isdigit():
        return None
    if region not in phonenumbers.SUPPORTED_REGIONS:
        return None
    home = _plan(region)
    if home is None:
        return None
    if plus:
        if body[0] == "0":
            return None  # no country code starts with 0: phonenumbers retries without the +
        split = _country_code(body)
        if split is None:
            return None
        code, national = split
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]
        main = regions[0]
        plan = home if main == region else _plan(main.upper(), code)
        if plan is None:
            return None
    else:
        if home.idd is not None and home.idd.match(body):
            return None  # an international prefix: phonenumbers reads a country code after it
        if body.startswith(home.code_text):
            return None  # the region's own code without a +: phonenumbers may strip it
        code, national, plan = home.code, body, home
    if len(national) < _MIN_NSN:
        return None
    stripped = plan.strip_national_prefix(national)
    if stripped is None:
        return None
    keep = plan.keeps_stripped(stripped)
    if keep is None:
        return None
    if keep:
        national = stripped
    if not _MIN_NSN <= len(national) <= _MAX_NSN:
        return None
    return code, national


def classify(code: int, nsn: str) -> tuple[str | None, int]:
    """(``region_code_for_number``, ``number_type``) of the number ``+<code><nsn>``, as
    phonenumbers gives them; the number is valid when the region is not None and the type is
    not UNKNOWN (``is_valid_number``)."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code)
    if not regions:
        return None, PhoneNumberType.UNKNOWN
    if len(regions) == 1:
        region = regions[0]
        plan = _plan(region.upper(), code)
        if plan is None or (region != _NON_GEO and plan.code != code):
            return region, PhoneNumberType.UNKNOWN
        return region, plan.number_type(nsn)
    # region_code_for_number over several regions: the first whose leading digits match, or
    # (without leading digits) whose plan the number fits.
    for region in regions:
        plan = _plan(region.upper(), code)
        if plan is None:
            continue
        if plan.leading is not None:
            if plan.leading.match(nsn):
                if plan.code != code:
                    return region, PhoneNumberType.UNKNOWN
                return region, plan.number_type(nsn)
        else:
            kind = plan.number_type(nsn)
            if kind != PhoneNumberType.UNKNOWN:
                return region, kind if plan.code == code else PhoneNumberType.UNKNOWN
    return None, PhoneNumberType.UNKNOWN


def home_code(region: str) -> int:
    """``phonenumbers.country_code_for_region(region)``: 0 for a region it does not know."""
    code = _HOME_CODES.get(region)
    if code is None:
        plan = _plan(region) if region in phonenumbers.SUPPORTED_REGIONS else None
        code = _HOME_CODES[region] = plan.code if plan is not None else 0
    return code


_HOME_CODES: dict[str, int] = {}


__all__ = ["classify", "home_code", "parse"]
