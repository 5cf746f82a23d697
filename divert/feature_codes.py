"""The feature codes of each profile, as a table (seeds 000 and 002).

=========  ===========  ================================================
profile    code         effect on the subscriber's own forwards
=========  ===========  ================================================
vpbx       ``*72<n>``   forward every call to <n> (unconditional)
vpbx       ``*73``      cancel every forward
vpbx       ``*90<n>``   forward to <n> when busy
vpbx       ``*91``      cancel the busy forward
vpbx       ``*52<n>``   forward to <n> when not reachable (not registered)
vpbx       ``*53``      cancel the not-reachable forward
vpbx       ``*20``      the next time mode now, until its period ends
vpbx       ``*11``      step a manual time mode through the tenant's modes,
                        then back to the schedule
carrier    ``*1<n>``    forward all of the phone's numbers to <n>
carrier    ``*2``       cancel every forward
any        ``*78``      away: the subscriber's not-present forwards apply
                        (the do-not-disturb code of many PBXs; seed 004)
any        ``*79``      present again
=========  ===========  ================================================

A tenant's profile is ``vpbx``, ``carrier`` or ``both``.  Codes that take a
number are matched by prefix, the rest exactly; longer codes are tried
first, so ``*72`` is never read as ``*7`` followed by digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["set", "cancel", "cancel-all", "next-mode", "toggle-mode", "away", "present"]


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    action: Action
    condition: str | None  # None: every condition (cancel-all), or a mode code
    takes_number: bool


VPBX = (
    Code("*72", "set", "always", True),
    Code("*73", "cancel-all", None, False),
    Code("*90", "set", "busy", True),
    Code("*91", "cancel", "busy", False),
    Code("*52", "set", "not-registered", True),
    Code("*53", "cancel", "not-registered", False),
    Code("*20", "next-mode", None, False),
    Code("*11", "toggle-mode", None, False),
)
CARRIER = (
    Code("*1", "set", "always", True),
    Code("*2", "cancel-all", None, False),
)
PRESENCE = (
    Code("*78", "away", None, False),
    Code("*79", "present", None, False),
)
PROFILES: dict[str, tuple[Code, ...]] = {
    "vpbx": VPBX + PRESENCE,
    "carrier": CARRIER + PRESENCE,
    "both": VPBX + CARRIER + PRESENCE,
}


@dataclass(frozen=True, slots=True)
class Request:
    """A dialled feature code: what to do, and the number typed after it."""

    code: Code
    number: str | None  # '' when a code that takes one was dialled without


def parse(dialled: str, profile: str) -> Request | None:
    """What `dialled` asks for under `profile`, or None if it is no code of it."""
    codes = sorted(PROFILES.get(profile, ()), key=lambda c: len(c.code), reverse=True)
    for code in codes:
        if code.takes_number and dialled.startswith(code.code):
            return Request(code, dialled[len(code.code) :])  # '' : the number is missing
        if not code.takes_number and dialled == code.code:
            return Request(code, None)
    return None
