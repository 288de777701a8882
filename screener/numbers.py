"""Caller-ID normalization: whatever Asterisk hands us, to an E.164 number and a category.

Pure: no I/O, no clock. ``normalize(raw, region)`` never raises for any input string.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumberType

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
    if "<" in text and ">" in text:
        text = text[text.index("<") + 1 : text.rindex(">")]
    match = _URI.match(text.strip())
    if match:
        return match.group(1)
    return text


def normalize(raw: str, region: str = "JP") -> Caller:
    """Normalize a raw caller ID to a :class:`Caller`; never raises."""
    return _normalize(raw, region.upper())


@lru_cache(maxsize=65536)
def _normalize(raw: str, region: str) -> Caller:
    if len(raw) > MAX_RAW_LENGTH:
        return Caller(raw, None, Category.INVALID, f"too long ({len(raw)} characters)")
    # NFKC folds full-width digits and plus signs (０１２０, ＋８１) into ASCII.
    text = unicodedata.normalize("NFKC", raw).strip()
    text = _unwrap(text).strip()
    reason = NO_NUMBER_REASONS.get(text.lower())
    if reason is not None:
        return Caller(raw, None, Category.WITHHELD, reason)
    digits = text.translate(_SEPARATORS)
    if not _DIALLABLE.match(digits):
        return Caller(raw, None, Category.INVALID, "not a phone number")
    try:
        number = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException as exc:
        return Caller(raw, None, Category.INVALID, f"not a phone number ({exc})")
    if not phonenumbers.is_valid_number(number):
        return Caller(raw, None, Category.INVALID, "not a valid number in any numbering plan")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    home_code = phonenumbers.country_code_for_region(region)
    if number.country_code != home_code:
        where = phonenumbers.region_code_for_number(number) or f"+{number.country_code}"
        return Caller(raw, e164, Category.INTERNATIONAL, f"international ({where})")
    category = _TYPE_CATEGORY.get(phonenumbers.number_type(number), Category.OTHER)
    return Caller(raw, e164, category, category.value.replace("_", " "))


def is_valid_region(region: str) -> bool:
    """True if ``region`` is a two-letter region phonenumbers knows (``JP``, ``US``, ...)."""
    return region.upper() in phonenumbers.SUPPORTED_REGIONS


def parse_list_number(text: str, region: str, *, prefix: bool) -> str:
    """Turn a number typed by an admin into the E.164 form (or E.164 prefix) a list entry keys on.

    Raises ValueError with a reason the CLI can show. A prefix rule such as ``0120`` becomes
    ``+81120``: the national trunk prefix is dropped and the country code put in front.
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
    if digits.startswith("+"):
        candidate = digits
    else:
        code = phonenumbers.country_code_for_region(region)
        if code == 0:
            raise ValueError(f"unknown region {region!r}")
        national = digits
        # Japan and most others dial a leading 0 at home that is not part of the E.164 number.
        if national.startswith("0") and not national.startswith("00"):
            national = national[1:]
        candidate = f"+{code}{national}"
    if not re.fullmatch(r"\+[1-9][0-9]{0,14}", candidate):
        raise ValueError(f"{text!r} is not a valid number prefix")
    return candidate


def looks_e164(text: str) -> bool:
    """True if ``text`` is already a syntactically complete E.164 number."""
    return bool(_E164.match(text))
