"""Phone numbers: normalising to E.164 and the forward-destination policy.

Runs in the portal tools and the sync worker only: parsing costs 10-25 us per
number, far too much for the SIP request path, which sees E.164 keys only.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

import phonenumbers
from phonenumbers import PhoneMetadata

from divert.errors import DivertError
from divert.kemi.core.policy import DestinationPolicy as Rules
from divert.kemi.core.policy import NumberClass, classify_by

__all__ = ["DestinationPolicy", "NumberClass", "classify", "normalise", "number_plan"]


def normalise(raw: str, region: str) -> str:
    """`raw` in international or national form (read with `region`) as E.164."""
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as error:
        raise DivertError(f"{raw!r} is not a phone number ({_why(error)})") from None
    if not phonenumbers.is_valid_number(parsed):
        where = "" if text.startswith("+") else f" in region {region}"
        raise DivertError(
            f"{raw!r} is not a valid phone number{where}; "
            "give it in international form, e.g. +390212345678"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _why(error: phonenumbers.NumberParseException) -> str:
    return str(error).split(") ", 1)[-1] if ") " in str(error) else str(error)


_OTHER_TYPES = (
    "fixed_line",
    "mobile",
    "toll_free",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)


@cache
def _patterns(country_code: int) -> tuple[re.Pattern[str], ...] | None:
    """One pattern per region of `country_code`, from phonenumbers' metadata:
    premium-rate, then shared-cost, then every other number type, as named
    alternatives (`divert.kemi.core.policy.GROUPS`), so one `fullmatch` classifies a
    national number.  None: no country has this calling code."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if regions is None:
        return None
    found = []
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
        if metadata is None:
            continue
        alternatives = []
        for group, types in (
            ("premium", ("premium_rate",)),
            ("shared", ("shared_cost",)),
            ("valid", _OTHER_TYPES),
        ):
            sources = [
                getattr(getattr(metadata, t), "national_number_pattern", None) for t in types
            ]
            joined = "|".join(f"(?:{p})" for p in sources if p)
            if joined:
                alternatives.append(f"(?P<{group}>{joined})")
        if alternatives:
            found.append(re.compile("|".join(alternatives)))
    return tuple(found)


def number_plan() -> dict[int, tuple[str, ...]]:
    """Every country's patterns (about 80 KB), as the store keeps them for
    Kamailio's workers to classify numbers without phonenumbers."""
    plan = {}
    for code in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE):
        patterns = _patterns(code)
        if patterns is not None:
            plan[code] = tuple(pattern.pattern for pattern in patterns)
    return plan


@lru_cache(maxsize=65_536)
def classify(e164: str) -> NumberClass:
    """What kind of number an E.164 string is, in a few microseconds.

    Matches phonenumbers' metadata patterns directly instead of parsing (40 us
    per number), so the sync worker can re-check a million destinations in
    seconds.  Where the short path finds no match it asks phonenumbers in
    full, so a number phonenumbers accepts is never refused here.
    """
    found = classify_by(e164, _patterns)
    return found if found is not None else _classify_fully(e164)


def _classify_fully(e164: str) -> NumberClass:
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return NumberClass.INVALID
    if not phonenumbers.is_valid_number(parsed):
        return NumberClass.INVALID
    if phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) != e164:
        return NumberClass.INVALID
    kind = phonenumbers.number_type(parsed)
    if kind == phonenumbers.PhoneNumberType.PREMIUM_RATE:
        return NumberClass.PREMIUM_RATE
    if kind == phonenumbers.PhoneNumberType.SHARED_COST:
        return NumberClass.SHARED_COST
    return NumberClass.VALID


class DestinationPolicy(Rules):
    """Where forwards may send calls, so that forwarding is no toll-fraud hole
    (the rules: `divert.kemi.core.policy`), with numbers classified by phonenumbers."""

    __slots__ = ()

    def refusal(self, e164: str) -> str | None:
        """Why a forward may not send calls to `e164`, or None if it may."""
        kind = classify(e164)
        if kind is NumberClass.INVALID:
            return f"{e164} is not a valid E.164 number"
        why = self.why_not(e164, kind)
        return None if why is None else f"forwarding to {e164} is not allowed: {why}"

    def check(self, e164: str) -> None:
        """Raise DivertError if a forward may not send calls to `e164`."""
        reason = self.refusal(e164)
        if reason is not None:
            raise DivertError(reason)
