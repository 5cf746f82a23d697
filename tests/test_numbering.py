"""Normalising numbers and the destination policy."""

import random

import phonenumbers
import pytest

from divert.errors import DivertError
from divert.numbering import DestinationPolicy, NumberClass, classify, normalise


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("02 1234 5678", "IT", "+390212345678"),
        ("+39 02 1234 5678", "FR", "+390212345678"),
        ("0039 333 1234567", "FR", "+393331234567"),
        ("01 23 45 67 89", "FR", "+33123456789"),
        ("079 123 12 12", "CH", "+41791231212"),
    ],
)
def test_national_and_international_forms(raw, region, e164):
    assert normalise(raw, region) == e164


@pytest.mark.parametrize("raw", ["", "abc", "12", "+39 02", "+999 1234567"])
def test_invalid_numbers_are_refused(raw):
    with pytest.raises(DivertError):
        normalise(raw, "IT")


def test_policy_refuses_premium_rate_by_default():
    with pytest.raises(DivertError, match="premium-rate"):
        DestinationPolicy().check("+39899123456")
    DestinationPolicy().check("+393331234567")


def test_policy_allowed_countries_and_denied_prefixes():
    policy = DestinationPolicy(allowed_countries=frozenset({39, 41}), denied_prefixes=("+39333",))
    policy.check("+41791231212")
    with pytest.raises(DivertError, match=r"country is not among the allowed \(\+39, \+41\)"):
        policy.check("+33612345678")
    with pytest.raises(DivertError, match=r"prefix \+39333"):
        policy.check("+393331234567")


def _reference(e164: str) -> NumberClass:
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return NumberClass.INVALID
    canonical = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if not phonenumbers.is_valid_number(parsed) or canonical != e164:
        return NumberClass.INVALID  # e.g. "+4904..." is read as +494... by phonenumbers
    kind = phonenumbers.number_type(parsed)
    if kind == phonenumbers.PhoneNumberType.PREMIUM_RATE:
        return NumberClass.PREMIUM_RATE
    if kind == phonenumbers.PhoneNumberType.SHARED_COST:
        return NumberClass.SHARED_COST
    return NumberClass.VALID


def test_fast_classification_agrees_with_phonenumbers():
    rng = random.Random(20261122)
    samples = (
        [f"+39335{rng.randint(1_000_000, 9_999_999)}" for _ in range(2000)]
        + [f"+3902{rng.randint(10_000_000, 99_999_999)}" for _ in range(2000)]
        + [f"+39899{rng.randint(100_000, 999_999)}" for _ in range(500)]
        + [f"+44909{rng.randint(1_000_000, 9_999_999)}" for _ in range(500)]
        + [f"+33{rng.randint(100_000_000, 999_999_999)}" for _ in range(2000)]
        + [f"+1{rng.randint(2_000_000_000, 9_999_999_999)}" for _ in range(2000)]
        + [f"+{rng.randint(1, 999)}{rng.randint(10**5, 10**11)}" for _ in range(5000)]
    )
    disagreements = [n for n in samples if classify(n) is not _reference(n)]
    assert disagreements == []
