"""The precompiled parse (screener/fastnumbers.py) gives phonenumbers' answer, fast.

``normalize`` takes the fast path for the caller-ID shapes carriers send and phonenumbers for
anything else; ``normalize_reference`` is phonenumbers alone. Both must give the same Caller
for every input: tables of the shapes that matter, generated digit strings over regions with
unusual rules (transform rules, Italian leading zeros, shared country codes), and in the slow
suite a seeded sweep over every region phonenumbers has.
"""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screener import fastnumbers
from screener.numbers import Caller, Category, _classify, normalize, normalize_reference


@pytest.mark.parametrize(
    ("raw", "e164", "category"),
    [
        ("0312345678", "+81312345678", Category.FIXED_LINE),
        ("09012345678", "+819012345678", Category.MOBILE),
        ("0120123456", "+81120123456", Category.TOLL_FREE),
        ("0570123456", "+81570123456", Category.SHARED_COST),
        ("05012345678", "+815012345678", Category.VOIP),
        ("0990123456", "+81990123456", Category.PREMIUM_RATE),
        ("+81312345678", "+81312345678", Category.FIXED_LINE),
        ("+81 0312345678", "+81312345678", Category.FIXED_LINE),  # national prefix after +81
        ("sip:0312345678@pbx.example", "+81312345678", Category.FIXED_LINE),
        ("+1 212 555 0100", "+12125550100", Category.INTERNATIONAL),
        ("+800 1234 5678", "+80012345678", Category.INTERNATIONAL),  # non-geographic
        ("+39 06 1234 5678", "+390612345678", Category.INTERNATIONAL),  # Italian leading zero
        ("0200123456", None, Category.INVALID),
        ("0002512345", None, Category.INVALID),  # JP's transform rule for 000[2569]...
    ],
)
def test_fast_path_answers_like_phonenumbers(
    raw: str, e164: str | None, category: Category
) -> None:
    """The shapes carriers send take the fast path and get phonenumbers' Caller."""
    digits = "".join(c for c in raw.removeprefix("sip:").split("@")[0] if c in "+0123456789")
    assert fastnumbers.parse(digits, "JP") is not None  # the fast path did answer
    caller = normalize(raw, "JP")
    assert (caller.e164, caller.category) == (e164, category)
    assert caller == normalize_reference(raw, "JP")


@pytest.mark.parametrize(
    "digits",
    [
        "81312345678",  # the home country code without +: phonenumbers may strip it
        "0101212550100",  # JP's international prefix
        "+0312345678",  # no country code starts with 0: phonenumbers retries without the +
        "+999123456",  # not a country code
        "12",  # too short
        "+81",  # too short after the country code
        "0" * 25,  # too long
    ],
)
def test_other_shapes_go_to_phonenumbers(digits: str) -> None:
    """Shapes whose reading depends on rules not kept here are left to phonenumbers."""
    assert fastnumbers.parse(digits, "JP") is None
    assert normalize(digits, "JP") == normalize_reference(digits, "JP")


def test_a_region_phonenumbers_lacks_goes_to_phonenumbers() -> None:
    """An unknown region is phonenumbers' to answer (with its own error)."""
    assert fastnumbers.parse("0312345678", "XX") is None
    assert fastnumbers.home_code("XX") == 0
    assert normalize("0312345678", "XX") == normalize_reference("0312345678", "XX")


# The office's region, and one whose country code many regions share (US, CA, ...); the slow
# sweep below covers every region (compiling all their patterns takes seconds).
_REGIONS = ("JP", "US")
_CODES = ("81", "1", "800", "999")


def _digits(max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=0, max_size=max_size)


_SHAPES = st.one_of(
    st.builds(lambda rest: "0" + rest, _digits(13)),  # national with a trunk prefix
    st.builds(lambda code, rest: f"+{code}{rest}", st.sampled_from(_CODES), _digits(14)),
    _digits(18),
)


@settings(max_examples=40, derandomize=True, deadline=None)
@given(digits=_SHAPES, region=st.sampled_from(_REGIONS))
def test_fast_and_reference_agree_on_generated_digits(digits: str, region: str) -> None:
    """For any digit string, in JP or in the US, both paths give the same Caller."""
    assert _classify(digits, region, fast=True) == _classify(digits, region, fast=False)


def test_the_reference_is_phonenumbers_alone() -> None:
    """normalize_reference does not touch the fast path (it is what the fast path is tested
    against), and answers as phonenumbers does."""
    number = phonenumbers.parse("+81312345678", "JP")
    assert phonenumbers.is_valid_number(number)
    assert normalize_reference("+81312345678") == Caller(
        "+81312345678", "+81312345678", Category.FIXED_LINE, "fixed line"
    )


@pytest.mark.slow
def test_fast_and_reference_agree_in_every_region() -> None:
    """A seeded sweep: random digit strings of every shape in every region phonenumbers has."""
    rng = random.Random(16)
    codes = [str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE]

    def digits(low: int, high: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(low, high)))

    shapes = (
        lambda: "0" + digits(1, 14),
        lambda: "+" + digits(1, 17),
        lambda: "+" + rng.choice(codes) + digits(3, 13),
        lambda: digits(1, 18),
    )
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    for region in ["JP"] * 10 + regions:
        for _ in range(300 if region == "JP" else 60):
            raw = rng.choice(shapes)()
            assert _classify(raw, region, fast=True) == _classify(raw, region, fast=False), (
                raw,
                region,
            )


@pytest.mark.slow
def test_number_types_are_phonenumbers_in_every_region() -> None:
    """Every example number phonenumbers has, of every type in every region, and the same with
    its last digit changed: the same region and number type as phonenumbers gives (random
    digits, above, are rarely valid numbers of a type)."""
    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in range(phonenumbers.PhoneNumberType.UNKNOWN):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            nsn = phonenumbers.national_significant_number(example)
            for variant in {nsn, nsn[:-1] + str((int(nsn[-1]) + 1) % 10)}:
                number = phonenumbers.parse(f"+{example.country_code}{variant}")
                want = (
                    phonenumbers.region_code_for_number(number),
                    phonenumbers.number_type(number),
                )
                assert fastnumbers.classify(example.country_code, variant) == want, (
                    region,
                    variant,
                )
                checked += 1
    assert checked > 2000
