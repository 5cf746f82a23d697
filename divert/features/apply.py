"""Carrying out a feature code against the portal, with the portal's own
validation (number, destination policy, loops): a refused code changes
nothing and says why."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, select

from divert.errors import DivertError
from divert.features.codes import parse
from divert.portal import forwards as portal_forwards
from schema.tables import forwards, subscribers, tenants


@dataclass(frozen=True, slots=True)
class Answer:
    """The final reply the phone gets."""

    code: int
    reason: str


ACTIVATED = 480  # the call ends here; the reason phrase says what happened
REFUSED = 403
UNKNOWN = 404


def carry_out(connection: Connection, aor: str, dialled: str) -> Answer:
    """Apply `dialled` for the subscriber `aor` (user@domain), in the caller's
    transaction; a refusal raises nothing and writes nothing."""
    username, _, domain = aor.partition("@")
    row = connection.execute(
        select(subscribers.c.id, tenants.c.name, tenants.c.code_profile)
        .join(tenants, tenants.c.id == subscribers.c.tenant_id)
        .where(subscribers.c.username == username, tenants.c.domain == domain)
    ).first()
    if row is None:
        return Answer(REFUSED, "Forwarding Refused: unknown subscriber")
    request = parse(dialled, row.code_profile)
    if request is None:
        return Answer(UNKNOWN, f"Unknown Feature Code {dialled[:20]}")
    owned = forwards.c.subscriber_id == row.id
    code = request.code
    if code.action == "cancel-all":
        connection.execute(delete(forwards).where(owned))
        return Answer(ACTIVATED, "All Forwarding Cancelled")
    connection.execute(delete(forwards).where(owned, forwards.c.condition == code.condition))
    if code.action == "cancel":
        return Answer(ACTIVATED, f"Forwarding Cancelled ({code.condition})")
    assert code.condition is not None and request.number is not None
    owner = portal_forwards.owner_of_subscriber(connection, row.name, username)
    try:
        _, label = portal_forwards.add(connection, owner, code.condition, request.number)
    except DivertError as error:
        raise Refused(str(error)) from None
    return Answer(ACTIVATED, f"Forwarding Activated ({code.condition}) to {label}")


class Refused(Exception):
    """The code was understood but its change is not allowed; roll back."""

    def answer(self) -> Answer:
        return Answer(REFUSED, f"Forwarding Refused: {self}")
