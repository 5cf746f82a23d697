"""Normalising numbers and the destination policy."""

import pytest

from divert.errors import DivertError
from divert.numbering import DestinationPolicy, normalise


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
