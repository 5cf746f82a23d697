"""Refusing forwarding loops when a forward is saved.

A chain of unconditional forwards that comes back to where it started sends
every call round in circles until the diversion bound stops it: nobody ever
rings.  Such a chain is refused at save time, across tenants (through E.164
numbers) and through extensions.  Conditional forwards that point at each
other (A busy -> B, B busy -> A: colleagues covering for each other) are
legitimate; the call's history stops them at call time.  ``not-present``
forwards act on arrival too (whenever the subscriber is away, which can
change from the phone at any moment), so they count as unconditional here.

Two unconditional forwards only form a loop if they can be in force for the
same call: same kind of caller, overlapping time modes.  Expiry dates are
honoured; modes are compared by name (conservative across tenants).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from divert.kemi.core.decide import Lookup
from divert.kemi.core.model import Condition, DestKind

Modes = frozenset[str] | None  # None: every mode


def find_loop(
    lookup: Lookup, starts: Iterable[str], now: float
) -> tuple[tuple[str, ...], bool] | None:
    """A loop of unconditional forwards through one of `starts`, as
    (keys from start back to start, for internal callers), or None."""
    for start in starts:
        for internal in (False, True):
            path = _cycle_from(lookup, start, internal, now)
            if path is not None:
                return path, internal
    return None


def loop_refusal(path: tuple[str, ...], internal: bool, shown: Callable[[str], str] = str) -> str:
    """Why a forward closing the loop `path` is refused, in the portal's
    words; `shown` names each key (the API hides other tenants' numbers)."""
    callers = "internal" if internal else "external"
    hops = " -> ".join(shown(key) for key in path)
    return f"refused: this forward would close a loop for {callers} callers: {hops}"


def _cycle_from(lookup: Lookup, start: str, internal: bool, now: float) -> tuple[str, ...] | None:
    stack: list[tuple[str, tuple[str, ...], Modes]] = [(start, (start,), None)]
    seen: set[tuple[str, Modes]] = set()
    while stack:
        key, path, modes = stack.pop()
        table = lookup(key)
        if table is None:
            continue
        arrival = (
            *table.candidates(Condition.ALWAYS, internal),
            *table.candidates(Condition.NOT_PRESENT, internal),
        )
        for rule in arrival:
            if rule.expires_at is not None and now >= rule.expires_at:
                continue
            if rule.destination.kind is DestKind.REJECT:
                continue
            together = _overlap(modes, rule.modes)
            if together is not None and not together:
                continue
            onward = rule.destination.key
            if onward == start:
                return (*path, onward)
            if (onward, together) not in seen:
                seen.add((onward, together))
                stack.append((onward, (*path, onward), together))
    return None


def _overlap(modes: Modes, rule_modes: frozenset[str]) -> Modes:
    if not rule_modes:
        return modes
    return rule_modes if modes is None else modes & rule_modes
