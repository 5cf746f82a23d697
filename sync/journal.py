"""Following the portal's change journal without missing a change.

SQLite has one writer at a time, so journal ids are committed in order and
"everything after the last id applied" is exact.

PostgreSQL hands out journal ids when rows are inserted, not when their
transactions commit: id 101 can be visible while id 100's transaction is
still open, so "after the last id" would skip 100 for good.  Instead the
position is a transaction watermark: the worker takes the journal rows of
transactions older than its horizon (all of them have finished, and no later
transaction can write with an older id), applies them, and moves the
watermark to that horizon.  A change from a transaction still open when a
batch is read waits for the next batch; none is lost.

The horizon is the oldest transaction of the portal's database still open
in the worker's snapshot, not the snapshot's xmin: transaction ids are
shared by the whole PostgreSQL cluster, and an open transaction of another
database (another application's, a migration, a test's) would otherwise
hold every change back until it ended.  A transaction is known to be of
another database only while it is running (pg_stat_activity,
pg_prepared_xacts, readable by any role); one that ended meanwhile counts
as the portal's, so the rule errs towards waiting, never towards skipping.
A role that may not read pg_stat_activity (SELECT revoked from PUBLIC) gets
the snapshot's xmin instead: nothing is skipped, and an open transaction
that has written, anywhere in the cluster, holds the portal's changes back
until it ends (one warning says so).

Applying is idempotent (keys are recompiled from the portal as it is), so
seeing a row twice, as the first batch after a full sync may, is harmless.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, text

from divert.schema.tables import change_journal

log = logging.getLogger("divert.sync")


@dataclass(frozen=True, slots=True)
class Change:
    id: int
    table: str
    op: str
    row_id: int
    old_row: dict[str, Any] | None


def current_position(connection: Connection) -> str:
    """The position a snapshot read in this transaction corresponds to."""
    if connection.dialect.name == "postgresql":
        return f"xmin:{_horizon(connection)}"
    last = connection.scalar(select(func.coalesce(func.max(change_journal.c.id), 0)))
    return f"id:{last}"


def read_batch(
    connection: Connection, position: str, limit: int = 20_000
) -> tuple[Sequence[Change], str, bool]:
    """Journal rows after `position`: (changes, new position, more waiting)."""
    kind, _, value = position.partition(":")
    if connection.dialect.name == "postgresql":
        if kind != "xmin":
            raise ValueError(f"journal position {position!r} is not a PostgreSQL position")
        watermark = int(value)
        horizon = _horizon(connection)
        rows = connection.execute(
            select(change_journal)
            .where(change_journal.c.tx >= watermark, change_journal.c.tx < horizon)
            .order_by(change_journal.c.tx, change_journal.c.id)
        ).all()
        return [_change(r) for r in rows], f"xmin:{max(horizon, watermark)}", False
    if kind != "id":
        raise ValueError(f"journal position {position!r} is not a SQLite position")
    rows = connection.execute(
        select(change_journal)
        .where(change_journal.c.id > int(value))
        .order_by(change_journal.c.id)
        .limit(limit)
    ).all()
    last = rows[-1].id if rows else int(value)
    return [_change(r) for r in rows], f"id:{last}", len(rows) == limit


def pending(connection: Connection, position: str) -> tuple[int, float | None]:
    """(journal rows not yet applied, age in seconds of the oldest of them)."""
    kind, _, value = position.partition(":")
    column = change_journal.c.tx if kind == "xmin" else change_journal.c.id
    condition = column >= int(value) if kind == "xmin" else column > int(value)
    count, oldest = connection.execute(
        select(func.count(), func.min(change_journal.c.changed_at)).where(condition)
    ).one()
    if not count or oldest is None:
        return 0, None
    now = connection.scalar(select(func.now()))
    return int(count), _seconds_between(oldest, now)


def _seconds_between(earlier: Any, later: Any) -> float:
    if isinstance(earlier, str):  # SQLite: text timestamps in UTC
        earlier = datetime.fromisoformat(earlier)
        later = datetime.fromisoformat(str(later))
    if earlier.tzinfo is None and later.tzinfo is not None:
        later = later.replace(tzinfo=None)
    return max(0.0, float((later - earlier).total_seconds()))


_HORIZON = text(
    """
    WITH snap AS MATERIALIZED (SELECT pg_current_snapshot() AS s),
    elsewhere AS (
        SELECT backend_xid::text::bigint AS xid FROM pg_catalog.pg_stat_activity
        WHERE backend_xid IS NOT NULL AND datid IS NOT NULL
          AND datid <> (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
        UNION ALL
        SELECT transaction::text::bigint FROM pg_catalog.pg_prepared_xacts
        WHERE database <> current_database()
    )
    SELECT coalesce(
        (SELECT min(x::text::bigint) FROM snap, pg_snapshot_xip(snap.s) AS x
         WHERE NOT EXISTS (
             SELECT 1 FROM elsewhere WHERE elsewhere.xid = x::text::bigint % 4294967296)),
        (SELECT pg_snapshot_xmax(s)::text::bigint FROM snap))
    """
)
# the rights _HORIZON needs (all PUBLIC's unless an administrator revoked
# them), each missing one named as its GRANT would name it
_MISSING = text(
    """
    SELECT array_remove(ARRAY[
        CASE WHEN NOT has_table_privilege('pg_catalog.pg_stat_activity', 'SELECT')
             THEN 'SELECT ON pg_stat_activity' END,
        CASE WHEN NOT has_table_privilege('pg_catalog.pg_prepared_xacts', 'SELECT')
             THEN 'SELECT ON pg_prepared_xacts' END,
        CASE WHEN NOT has_table_privilege('pg_catalog.pg_database', 'SELECT')
             THEN 'SELECT ON pg_database' END,
        CASE WHEN NOT has_function_privilege('pg_catalog.pg_stat_clear_snapshot()', 'EXECUTE')
             THEN 'EXECUTE ON FUNCTION pg_stat_clear_snapshot()' END
    ], NULL)
    """
)
_XMIN = text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
_missing_said: tuple[str, ...] = ()


def _horizon(connection: Connection) -> int:
    """The oldest transaction id that may still write this portal's journal:
    the snapshot's oldest open transaction that is not another database's
    (snapshots hold 64-bit ids, pg_stat_activity 32-bit ones), or the
    snapshot's xmax when none is open.

    PostgreSQL keeps what pg_stat_activity showed until the transaction
    ends: it is cleared first, so that it is read after the statement's
    snapshot.  A backend's database and its transaction id are read from
    its slot at slightly different moments; read after the snapshot, a
    slot taken over meanwhile can only pair another backend's database
    with an id the snapshot does not hold as open, never relabel one it
    does.  (A hot standby's snapshot lists no open transactions: the
    portal must be the primary, which the node writes to anyway.)

    A role without the rights those reads need gets the snapshot's xmin:
    every transaction of the cluster that was open and had written holds
    changes back (the module's docstring).  The rights are asked first, with
    functions that cannot fail: a query refused would leave an error in
    the server's log at every poll."""
    missing = connection.scalar(_MISSING)
    _say_rights(tuple(missing or ()))
    if missing:
        return int(connection.scalar(_XMIN))
    connection.execute(text("SELECT pg_catalog.pg_stat_clear_snapshot()"))
    return int(connection.scalar(_HORIZON))


def _say_rights(missing: tuple[str, ...]) -> None:
    """One line when the rights the horizon needs go missing, one when they
    are back (per process)."""
    global _missing_said
    if missing == _missing_said:
        return
    if missing:
        log.warning(
            "the portal's role lacks %s: an open transaction that has written, in any "
            "database of the PostgreSQL cluster, now holds portal changes back until it "
            "ends; GRANT it to the role in the portal database to lift this",
            ", ".join(missing),
        )
    elif _missing_said:
        log.info(
            "the portal's role has the rights it lacked again (pg_stat_activity and the "
            "like): other databases' transactions no longer hold portal changes back"
        )
    _missing_said = missing


def _change(row: Any) -> Change:
    return Change(
        row.id, row.table_name, row.op, row.row_id, json.loads(row.old_row) if row.old_row else None
    )
