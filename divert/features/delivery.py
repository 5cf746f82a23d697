"""Delivering the node's queued feature codes to the portal, oldest first.

Called by an async worker before it carries out a new code (so the new
code does not overtake the queued ones) and by the sync worker after every
pass that reached the portal (so the queue empties when the portal is back
even if nobody dials).  Both hold the queue's delivery lock meanwhile.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from divert.features.apply import ACTIVATED, Answer, Refused, carry_out
from divert.features.queue import FeatureQueue, Queued

log = logging.getLogger("divert.features")


def deliver(queue: FeatureQueue, engine: Engine) -> bool:
    """Deliver every queued code that the portal takes; True when the queue
    is empty.  A code the portal refuses leaves the queue, logged with the
    reason.  A portal error (SQLAlchemyError) is raised after the codes
    delivered before it have left the queue."""
    delivered = 0
    try:
        for row in queue.pending():
            answer = _deliver(row, engine)
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
