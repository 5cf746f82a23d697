"""Phone numbers: normalising to E.164 and the forward-destination policy.

Runs in the portal tools and the sync worker only: parsing costs 10-25 us per
number, far too much for the SIP request path, which sees E.164 keys only.
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

from divert.errors import DivertError


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


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """Where forwards may send calls, so that forwarding is no toll-fraud hole.

    `allowed_countries` are country calling codes (empty: all);
    `denied_prefixes` are E.164 prefixes never allowed.  Premium-rate and
    shared-cost numbers are always refused.
    """

    allowed_countries: frozenset[int] = frozenset()
    denied_prefixes: tuple[str, ...] = ()

    def check(self, e164: str) -> None:
        """Raise DivertError if a forward may not send calls to `e164`."""
        parsed = phonenumbers.parse(e164, None)
        if self.allowed_countries and parsed.country_code not in self.allowed_countries:
            allowed = ", ".join(f"+{c}" for c in sorted(self.allowed_countries))
            raise DivertError(
                f"forwarding to {e164} is not allowed: country +{parsed.country_code} "
                f"is not among the allowed ({allowed})"
            )
        for prefix in self.denied_prefixes:
            if e164.startswith(prefix):
                raise DivertError(f"forwarding to {e164} is not allowed: prefix {prefix} is denied")
        kind = phonenumbers.number_type(parsed)
        if kind in (
            phonenumbers.PhoneNumberType.PREMIUM_RATE,
            phonenumbers.PhoneNumberType.SHARED_COST,
        ):
            label = (
                "premium-rate"
                if kind == phonenumbers.PhoneNumberType.PREMIUM_RATE
                else "shared-cost"
            )
            raise DivertError(f"forwarding to {e164} is not allowed: it is a {label} number")
