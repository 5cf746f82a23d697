"""What a forwarding feature code does to a subscriber's compiled tables.

The portal's own effect (`divert.features.apply.carry_out`) rewrites the
subscriber's forward rows; the sync worker then recompiles every key that
carries them.  While the portal is down the node has only the compiled
tables, so the same effect is applied to them directly:

- the subscriber's own table (``sub:<user>@<domain>``) holds exactly the
  subscriber's forwards, so its rules' origins say which rules of each
  number table came from the subscriber (a number's own forwards have other
  origins and are never touched, as on the portal);
- ``set`` drops the subscriber's rules of that condition and appends the new
  one; ``cancel`` drops them; ``cancel-all`` drops every one.

Applying a code twice gives what applying it once gives, so the sync worker
can replay a subscriber's queued codes on whatever the store holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from divert.kemi.core.model import Condition, Destination, ForwardTable, Rule, Scope


def with_code(
    tables: Sequence[ForwardTable],
    subscriber_key: str,
    action: str,
    condition: str | None,
    destination: Destination | None,
    origin: str,
) -> list[ForwardTable]:
    """`tables` (all of one subscriber's, including `subscriber_key`'s) as they
    are after the code; KeyError when the subscriber's own table is missing."""
    own = {table.key: table for table in tables}[subscriber_key]
    theirs = {rule.origin for rule in own.rules}
    if action == "cancel-all":
        rules: tuple[Rule, ...] = ()
    else:
        rules = tuple(rule for rule in own.rules if rule.condition != condition)
        if action == "set":
            assert condition is not None and destination is not None
            rules += (Rule(Condition(condition), Scope.ANY, destination, origin),)
    return [
        replace(table, rules=tuple(r for r in table.rules if r.origin not in theirs) + rules)
        for table in tables
    ]
