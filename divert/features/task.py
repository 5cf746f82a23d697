"""Feature codes carried out in Kamailio's async workers.

Kamailio carries the SIP: a SIP worker authenticates the subscriber,
suspends the code's INVITE transaction and hands the code to an async
worker (`divert.kemi.adapter`), where blocking work is allowed.  There
`FeatureCodes.begin()` does the work without committing it: the change in
the portal (in an open transaction), or, when the portal cannot be reached
in `PORTAL_LIMIT` seconds, a check of the code against this node's store
by the portal's rules (`divert.features.local`) and the code appended to
the node's queue (`divert.features.queue`).  The adapter then resumes the
transaction; in the resumed route `Pending.commit()` commits and the phone
gets the answer.  When the transaction was cancelled (or timed out)
meanwhile, Kamailio does not resume it and `Pending.rollback()` undoes the
work: a code the phone gave up on changes nothing.

Answers (the reason phrase says what happened):

- ``480 Forwarding Activated (always) to +39...`` / ``... Cancelled``: done;
- ``403 Forwarding Refused: <why>``: a premium-rate number, a loop, an
  invalid number; nothing changed;
- ``404 Unknown Feature Code``;
- the same answers with ``(queued for the portal)`` for a code that waits
  in the queue, and ``480 Forwarding Queued`` when the node cannot check
  the code either (no store yet).  Codes dialled while others wait queue
  behind them, so none is lost and the order is kept.

After a change it wakes this node's sync worker (`divert.sync.wake`): the
worker recompiles from the portal, or writes a queued code's effect into
the store, so the next call routes by it at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from divert.db import open_portal, portal_url
from divert.features.apply import ACTIVATED, Answer, Refused, carry_out
from divert.features.delivery import deliver
from divert.features.local import LocalNode, NotOnNode
from divert.features.queue import FeatureQueue, delivering
from divert.sync import wake

log = logging.getLogger("divert.features")

PORTAL_LIMIT = 3  # seconds a connect or a statement may take before the code is queued
DELIVERY_BUDGET = 3.0  # seconds of queued codes delivered before a new code is queued behind
PORTAL_REST = 10.0  # seconds after a portal failure when codes are queued without trying it
QUEUED_BLIND = Answer(
    ACTIVATED, "Forwarding Queued: the portal is unavailable, it applies when back"
)


def _nothing() -> None:
    return None


@dataclass
class Pending:
    """A code carried out and not yet committed."""

    answer: Answer
    _commit: Callable[[], Answer | None] = field(default=lambda: None)
    _rollback: Callable[[], None] = field(default=_nothing)

    def commit(self) -> Answer:
        """Make the change final; the answer for the phone (a portal that
        fails at the commit has the code queued instead)."""
        return self._commit() or self.answer

    def rollback(self) -> None:
        self._rollback()


class FeatureCodes:
    """One per async worker; the portal engine is made lazily, after the fork."""

    def __init__(self, portal: str, state_dir: Path) -> None:
        self.portal = portal
        self.state_dir = state_dir
        self._engine: Engine | None = None
        self._queue: FeatureQueue | None = None
        self._portal_said = 0.0  # monotonic time before which portal faults go unlogged
        self._portal_rests_until = 0.0  # monotonic: codes go straight to the queue till then

    @classmethod
    def from_environment(cls, state_dir: str) -> FeatureCodes:
        return cls(portal_url(None), Path(state_dir))

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = open_portal(self.portal, limit=PORTAL_LIMIT, create=False)
        return self._engine

    @property
    def queue(self) -> FeatureQueue:
        if self._queue is None:
            self._queue = FeatureQueue(self.state_dir)
        return self._queue

    def begin(self, aor: str, dialled: str, now: float | None = None) -> Pending:
        """Carry out `dialled` for `aor` (user@domain), uncommitted.  Bounded:
        a portal that failed lately is not tried; queued codes are delivered
        for at most DELIVERY_BUDGET seconds, and while another process
        delivers them the new code queues behind at once."""
        when = time.time() if now is None else now
        if time.monotonic() < self._portal_rests_until:
            return self._queued(aor, dialled, when)
        with delivering(self.state_dir, wait=False) as held:
            if held:
                try:
                    deadline = time.monotonic() + DELIVERY_BUDGET
                    if self.queue.count() == 0 or deliver(self.queue, self.engine, deadline):
                        return self._in_portal(aor, dialled, when)
                except SQLAlchemyError as error:
                    self._portal_failed(error)
        return self._queued(aor, dialled, when)

    def close(self) -> None:
        if self._queue is not None:
            self._queue.close()
        if self._engine is not None:
            self._engine.dispose()

    def _in_portal(self, aor: str, dialled: str, now: float) -> Pending:
        connection = self.engine.connect()
        try:
            transaction = connection.begin()
            if connection.dialect.name == "postgresql":
                # the commit runs while tm holds the code's transaction: no
                # wait for a synchronous standby
                connection.exec_driver_sql("SET LOCAL synchronous_commit = local")
            answer = carry_out(connection, aor, dialled, now)
        except Refused as refused:
            connection.close()  # rolls back
            return self._said(aor, dialled, Pending(refused.answer()))
        except BaseException:
            connection.close()
            raise
        if answer.code != ACTIVATED:
            connection.close()
            return self._said(aor, dialled, Pending(answer))

        def commit() -> Answer:
            try:
                transaction.commit()
            except SQLAlchemyError as error:
                self._portal_failed(error)
                return self._queue_now(aor, dialled, now)
            finally:
                connection.close()
            self._said(aor, dialled, Pending(answer))
            wake.wake(self.state_dir)
            return answer

        return Pending(answer, commit, lambda: _close(connection))

    def _queued(self, aor: str, dialled: str, now: float) -> Pending:
        """The portal is down: check the code on this node and queue it."""
        answer, chosen = self._checked_here(aor, dialled, now)
        if answer.code != ACTIVATED:
            return self._said(aor, dialled, Pending(answer))
        self.queue.hold(aor, dialled, now, chosen)

        def commit() -> Answer:
            self.queue.commit()
            log.info("%s dialled %s: queued until the portal is back", aor, dialled)
            wake.wake(self.state_dir)
            return answer

        return Pending(answer, commit, self.queue.rollback)

    def _queue_now(self, aor: str, dialled: str, now: float) -> Answer:
        """The portal failed at the commit: queue the code at once."""
        pending = self._queued(aor, dialled, now)
        return pending.commit()

    def _checked_here(self, aor: str, dialled: str, now: float) -> tuple[Answer, str | None]:
        try:
            # opened for each code: the sync worker may have swapped in a rebuilt store
            local = LocalNode.open(self.state_dir)
            try:
                effect = local.effect(aor, dialled, now)
            finally:
                local.close()
        except NotOnNode as error:
            log.warning("cannot check %s of %s on this node: %s", dialled, aor, error)
            return QUEUED_BLIND, None
        if effect.answer.code != ACTIVATED:
            return effect.answer, None
        queued = Answer(ACTIVATED, f"{effect.answer.reason} (queued for the portal)")
        return queued, effect.chosen

    def _said(self, aor: str, dialled: str, pending: Pending) -> Pending:
        log.info("%s dialled %s: %d %s", aor, dialled, pending.answer.code, pending.answer.reason)
        return pending

    def _portal_failed(self, error: SQLAlchemyError) -> None:
        now = time.monotonic()
        if now >= self._portal_said:  # one line a minute, however many codes come
            log.warning("portal unavailable for feature codes: %s", type(error).__name__)
            self._portal_said = now + 60
        self._portal_rests_until = now + PORTAL_REST
        if self._engine is not None:
            self._engine.dispose()


def _close(connection: Connection) -> None:
    connection.close()  # an open transaction is rolled back
