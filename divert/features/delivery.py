"""Delivering the node's queued feature codes to the portal, oldest first.

Called by an async worker before it carries out a new code (so the new
code does not overtake the queued ones) and by the sync worker after every
pass that reached the portal (so the queue empties when the portal is back
even if nobody dials).  Both hold the queue's delivery lock meanwhile.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine
from sqlalchemy.exc import (
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)

from divert.features.apply import ACTIVATED, Answer, Refused, carry_out
from divert.features.queue import FeatureQueue, Queued

log = logging.getLogger("divert.features")

PORTAL_GONE = (OperationalError, InterfaceError, ProgrammingError, InternalError)
"""The portal cannot be reached, or cannot take codes now (a schema being
migrated): delivery stops, the queue waits.  Any other error (bad data)
belongs to one code, which is set aside (`FeatureQueue.fail`)."""


def deliver(queue: FeatureQueue, engine: Engine, deadline: float | None = None) -> bool:
    """Deliver queued codes, oldest first, until the queue is empty (True)
    or `deadline` (monotonic) passes (False).  A code the portal refuses
    leaves the queue, logged with the reason; one it fails on with an error
    of its own is set aside, logged.  A lost portal (`PORTAL_GONE`) is
    raised after the codes delivered before it have left the queue."""
    delivered = 0
    try:
        for row in queue.pending():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            try:
                answer = _deliver(row, engine)
            except PORTAL_GONE:
                raise
            except (SQLAlchemyError, ValueError, LookupError) as error:
                log.error(
                    "queued code %s of %s failed in the portal (%s: %s); set aside",
                    row.dialled,
                    row.subscriber,
                    type(error).__name__,
                    str(error).strip().splitlines()[0] if str(error).strip() else "",
                )
                queue.fail(row, f"{type(error).__name__}: {error}")
                continue
            if answer.code == ACTIVATED:
                delivered += 1
            else:
                log.warning(
                    "queued code %s of %s refused: %s", row.dialled, row.subscriber, answer.reason
                )
            queue.remove(row.id)
    finally:
        if delivered:
            log.info("delivered %d queued feature code(s)", delivered)
    return queue.count() == 0


def _deliver(row: Queued, engine: Engine) -> Answer:
    try:
        with engine.begin() as connection:
            return carry_out(connection, row.subscriber, row.dialled, row.received_at, row.chosen)
    except Refused as refused:
        return refused.answer()
