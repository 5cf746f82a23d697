"""`divert sync status`: what the store holds and how far behind it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from divert.db import open_portal
from divert.errors import DivertError
from divert.kemi.store.format import (
    META_EPOCH,
    META_FULL_SYNC_AT,
    META_LAST_ERROR,
    META_POSITION,
    META_SYNCED_AT,
    STORE_FILE,
)
from divert.kemi.store.view import COUNTED, StoreView
from divert.sync.journal import pending


@dataclass(frozen=True, slots=True)
class Status:
    store: Path
    meta: dict[str, str]
    tables: int
    subscribers: int
    trunks: int
    rejected: list[tuple[str, str, str, str]]
    pending: int | None
    lag: float | None
    portal_error: str | None


def read_status(state_dir: Path, portal_url: str | None) -> Status:
    path = state_dir / STORE_FILE
    if not path.is_file():
        raise DivertError(f"no store at {path}: run 'divert sync --once' (or 'divert sync') first")
    view = StoreView.open(state_dir)
    try:
        meta, counts, rejected = view.meta(), view.counts(), view.rejected()
    finally:
        view.close()
    waiting, lag, error = None, None, None
    position = meta.get(META_POSITION)
    if portal_url and position:
        engine = open_portal(portal_url, create=False)
        try:
            with engine.connect() as connection:
                waiting, lag = pending(connection, position)
        except SQLAlchemyError as failure:
            error = str(getattr(failure, "orig", failure)).strip().splitlines()[0]
        finally:
            engine.dispose()
    tables, subscribers, trunks = (counts[table] for table in COUNTED)
    return Status(path, meta, tables, subscribers, trunks, rejected, waiting, lag, error)


def as_text(status: Status) -> str:
    meta = status.meta
    lines = [
        f"store: {status.store} (epoch {meta.get(META_EPOCH, '?')})",
        f"portal: {meta.get('portal', 'never synced')}",
        f"journal position: {meta.get(META_POSITION, 'none')}",
        f"last synced: {meta.get(META_SYNCED_AT, 'never')} (last full sync: "
        f"{meta.get(META_FULL_SYNC_AT, 'never')})",
        f"holds: {status.tables} forward tables, {status.subscribers} subscribers, "
        f"{status.trunks} trunks",
    ]
    if status.portal_error:
        lines.append(f"lag: unknown, portal unreachable ({status.portal_error})")
    elif status.pending is not None:
        age = f", oldest {status.lag:.1f} s old" if status.lag is not None else ""
        lines.append(f"lag: {status.pending} journal row(s) not yet applied{age}")
    lines.append(f"last error: {meta.get(META_LAST_ERROR) or 'none'}")
    lines.append(f"rejected rows: {len(status.rejected)}")
    lines.extend(
        f"  {source}: {reason}"
        + (f" (key {key} keeps its last good version)" if _routing(key) else "")
        for source, reason, key, _ in status.rejected
    )
    return "\n".join(lines)


def _routing(key: str) -> bool:
    """A routing key (number, subscriber, mailbox), not a tenant's schedule."""
    return bool(key) and not key.startswith("tenant:")
