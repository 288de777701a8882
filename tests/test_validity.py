"""The precompiled validity check gives phonenumbers' own ``is_valid_number`` answer."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from screener.validity import is_valid_e164, valid_national

CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def reference(code: int, national: str) -> bool:
    """phonenumbers' answer for the PhoneNumber the import used to build from these digits."""
    number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
    if national.startswith("0"):
        number.italian_leading_zero = True
        number.number_of_leading_zeros = len(national) - len(national.lstrip("0"))
    return bool(phonenumbers.is_valid_number(number))


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("+81312345678", True),  # JP fixed line
        ("+819012345678", True),  # JP mobile
        ("+81120123456", True),  # JP toll free
        ("+8131234567", False),  # JP, a digit short
        ("+81012345678", False),  # JP, trunk 0 kept
        ("+12015550123", True),  # +1 shared by many regions: US
        ("+14165550123", True),  # +1: CA
        ("+11235550123", False),  # +1: area codes never begin with 1
        ("+442071838750", True),  # GB
        ("+447624123456", True),  # +44 shared: IM mobile
        ("+390612345678", True),  # IT: the leading zero is part of the number
        ("+39000000", False),  # IT: 0...0 (phonenumbers reads one zero more)
        ("+77012345678", True),  # +7 shared by RU and KZ: KZ
        ("+74951234567", True),  # RU
        ("+80012345678", True),  # +800, a non-geographic code
        ("+9991234567", False),  # no country code 999, 99 or 9
        ("+2112345678", False),  # country code 211 (SS), too short
    ],
)
def test_table(text: str, valid: bool) -> None:
    """Known numbers of single- and shared-code countries get phonenumbers' answer."""
    assert is_valid_e164(text) is valid
    assert reference(*_split(text)) is valid


@pytest.mark.parametrize(
    "text",
    [
        "+810000000000",  # JP: the digits are all zeros (phonenumbers reads one zero more)
        "+8100000000",
        "+33000000000",  # FR, one region
        "+4900000000",
        "+819000000000",  # JP mobile-shaped, ends in zeros: not all zeros
        "+81120000000",
        "+390000000000",  # IT and VA share +39
    ],
)
def test_zeros_agree_with_phonenumbers(text: str) -> None:
    """The whole-text pattern of a one-region code never answers for a number of zeros."""
    assert is_valid_e164(text) is reference(*_split(text))


def _split(text: str) -> tuple[int, str]:
    for size in (1, 2, 3):
        code = int(text[1 : 1 + size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return code, text[1 + size :]
    return 0, text[1:]


def test_example_numbers_and_their_neighbours() -> None:
    """Some regions' example numbers, and changes of them, agree with phonenumbers (the slow
    tests below cover every region)."""
    rng = random.Random(9)
    checked = 0
    for region in ("JP", "US", "CA", "GB", "IM", "IT", "RU", "KZ"):
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
            example_number = phonenumbers.example_number_for_type(region, kind)
            if example_number is None:
                continue
            code = example_number.country_code
            nsn = phonenumbers.national_significant_number(example_number)
            variants = {nsn, nsn[:-1], nsn + "5"}
            spot = rng.randrange(len(nsn))
            variants.add(nsn[:spot] + str(rng.randrange(10)) + nsn[spot + 1 :])
            for digits in variants:
                if digits:
                    assert valid_national(code, digits) == reference(code, digits), (
                        region,
                        digits,
                    )
                    checked += 1
    assert checked > 40


@pytest.mark.slow
@settings(
    max_examples=5_000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(code=st.sampled_from(CODES), national=st.text("0123456789", min_size=1, max_size=15))
@example(code=39, national="0000")
@example(code=1, national="8005550123")
def test_random_digits_agree_with_phonenumbers(code: int, national: str) -> None:
    """Random digit strings under every country code: the same answer as phonenumbers, from
    the national digits and from the E.164 text (its whole-text pattern first)."""
    result = reference(code, national)
    assert valid_national(code, national) == result
    text = f"+{code}{national}"
    if 7 <= len(text) - 1 <= 15:
        assert is_valid_e164(text) == result


@pytest.mark.slow
def test_every_type_of_every_region_and_random_mutations() -> None:
    """Every example number of every type and region (non-geographic too), each mutated 30
    times (a digit changed, dropped or added), agrees with phonenumbers."""
    rng = random.Random(10)
    checked = valid = 0
    examples = [
        phonenumbers.example_number_for_type(region, kind)
        for region in sorted(phonenumbers.SUPPORTED_REGIONS)
        for kind in range(12)
    ]
    examples += [
        phonenumbers.example_number_for_non_geo_entity(code)
        for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
    ]
    for number in examples:
        if number is None:
            continue
        nsn = phonenumbers.national_significant_number(number)
        for attempt in range(30):
            digits = list(nsn)
            spot = rng.randrange(len(digits))
            change = attempt % 3
            if change == 0:
                digits[spot] = str(rng.randrange(10))
            elif change == 1 and len(digits) > 1:
                del digits[spot]
            else:
                digits.insert(spot, str(rng.randrange(10)))
            text = "".join(digits) if attempt else nsn
            result = reference(number.country_code, text)
            assert valid_national(number.country_code, text) == result, (number, text)
            e164 = f"+{number.country_code}{text}"
            if 7 <= len(e164) - 1 <= 15:
                assert is_valid_e164(e164) == result, (number, e164)
            checked += 1
            valid += result
    # Both answers occur often: the test is not passing on one side only.
    assert checked > 20_000
    assert valid > 5_000
    assert checked - valid > 5_000
