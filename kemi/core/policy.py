"""The destination policy: where forwards and subscribers' own calls may go.

One rule set, two users: the portal and the sync worker check forwards when
they are saved and compiled, and the KEMI adapter checks every call a
subscriber sends out to the carriers.  Only the classification of a number
differs: the portal reads phonenumbers' metadata, Kamailio's workers the
copy of its patterns the sync worker puts in the store (`classify_by`
takes either), so that no SIP worker parses a phone number.

In order, a destination is refused when it:

1. is not a valid number of a known country;
2. is outside `allowed_countries` (country calling codes; empty: all);
3. starts with one of `denied_prefixes` (E.164 prefixes);
4. is a premium-rate or shared-cost number, always.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum


class NumberClass(Enum):
    VALID = "valid"
    INVALID = "invalid"
    PREMIUM_RATE = "premium-rate"
    SHARED_COST = "shared-cost"


E164 = re.compile(r"\+[1-9][0-9]{2,14}")
GROUPS = {
    "premium": NumberClass.PREMIUM_RATE,
    "shared": NumberClass.SHARED_COST,
    "valid": NumberClass.VALID,
}
"""Named groups of a country's pattern: premium-rate, shared-cost, then every
other kind of valid number, as alternatives in that order."""

PatternsOf = Callable[[int], Sequence[re.Pattern[str]] | None]
"""A country calling code's patterns, one per region; None: no such country."""


def classify_by(e164: str, patterns_of: PatternsOf) -> NumberClass | None:
    """What kind of number `e164` is by its country's patterns: INVALID when it
    is no E.164 number or its country is unknown, None when no pattern of its
    country matches it."""
    if not E164.fullmatch(e164):
        return NumberClass.INVALID
    digits = e164[1:]
    for length in (1, 2, 3):
        patterns = patterns_of(int(digits[:length]))
        if patterns is None:
            continue  # calling codes are prefix-free: at most one length is one
        national = digits[length:]
        for pattern in patterns:
            match = pattern.fullmatch(national)
            if match is not None:
                return GROUPS[str(match.lastgroup)]
        return None
    return NumberClass.INVALID


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """The operator's settings; premium-rate and shared-cost are always refused."""

    allowed_countries: frozenset[int] = frozenset()
    denied_prefixes: tuple[str, ...] = ()

    def why_not(self, e164: str, kind: NumberClass) -> str | None:
        """Why `e164` (of class `kind`) may not be reached, or None if it may."""
        if kind is NumberClass.INVALID:
            return "it is not a valid phone number"
        if self.allowed_countries and not any(
            e164[1:].startswith(str(code)) for code in self.allowed_countries
        ):
            allowed = ", ".join(f"+{c}" for c in sorted(self.allowed_countries))
            return f"its country is not among the allowed ({allowed})"
        for prefix in self.denied_prefixes:
            if e164.startswith(prefix):
                return f"prefix {prefix} is denied"
        if kind is not NumberClass.VALID:
            return f"it is a {kind.value} number"
        return None
