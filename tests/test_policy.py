"""The destination policy's rules (`divert.kemi.core.policy`), apart from how
numbers are classified (tests/test_numbering.py compares that with
phonenumbers)."""

from __future__ import annotations

import re

import pytest

from divert.kemi.core.policy import DestinationPolicy, NumberClass, classify_by

ITALY = (re.compile(r"(?P<premium>89\d{4,7})|(?P<shared>84\d{6})|(?P<valid>0\d{6,10}|3\d{8,9})"),)


def italy_only(code: int) -> tuple[re.Pattern[str], ...] | None:
    return ITALY if code == 39 else None


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        ("+390212345678", NumberClass.VALID),
        ("+39899123456", NumberClass.PREMIUM_RATE),
        ("+3984012345", NumberClass.SHARED_COST),
        ("+398401234567", None),  # no pattern of its country claims it
        ("+33612345678", NumberClass.INVALID),  # a country the patterns do not know
        ("0212345678", NumberClass.INVALID),
        ("+39", NumberClass.INVALID),
    ],
)
def test_classify_by_the_countrys_patterns(number: str, kind: NumberClass | None):
    assert classify_by(number, italy_only) is kind


@pytest.mark.parametrize(
    ("number", "kind", "why"),
    [
        ("+390212345678", NumberClass.VALID, None),
        ("+390212345678", NumberClass.INVALID, "it is not a valid phone number"),
        ("+41441234567", NumberClass.VALID, "its country is not among the allowed (+39, +44)"),
        ("+39899123456", NumberClass.PREMIUM_RATE, "prefix +39899 is denied"),
        ("+39892123456", NumberClass.PREMIUM_RATE, "it is a premium-rate number"),
        ("+39840123456", NumberClass.SHARED_COST, "it is a shared-cost number"),
    ],
)
def test_the_rules_in_order(number: str, kind: NumberClass, why: str | None):
    policy = DestinationPolicy(frozenset({39, 44}), ("+39899",))
    assert policy.why_not(number, kind) == why


def test_premium_rate_is_refused_with_no_settings_at_all():
    assert DestinationPolicy().why_not("+39899123456", NumberClass.PREMIUM_RATE) == (
        "it is a premium-rate number"
    )
