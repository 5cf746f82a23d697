"""Where Kamailio keeps its registrations: ``<state-dir>/registrations.sqlite``.

usrloc keeps contacts in shared memory, lost with Kamailio.  The node gives
it a SQLite file under its state folder (Debian's ``db_sqlite`` module),
made with Kamailio's own table definitions, so the schema always matches
the installed Kamailio.  Why a local file and not the portal's PostgreSQL:
a node must start and take registrations while the portal is down, and a
phone's registration belongs to the node it registered at (issue 17 shares
them between nodes over SIP, not through the portal).

usrloc writes back (``db_mode`` 2, kamailio.cfg): SIP workers change memory
only, and one timer flushes every few seconds, because db_sqlite sets no
busy timeout and several workers writing one file would fail each other.
A clean stop flushes everything; a crash of Kamailio's main process loses
at most the last flush interval of changes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from divert.errors import DivertError

REGISTRATIONS_FILE = "registrations.sqlite"
KAMAILIO_SQL = Path("/usr/share/kamailio/db_sqlite")
SCRIPTS = ("standard-create.sql", "usrloc-create.sql")


def path(state_dir: Path) -> Path:
    return state_dir / REGISTRATIONS_FILE


def ensure(state_dir: Path, sql_dir: Path = KAMAILIO_SQL) -> Path:
    """The registrations file, made on first use; its path."""
    file = path(state_dir)
    scripts = [sql_dir / name for name in SCRIPTS]
    missing = [str(script) for script in scripts if not script.is_file()]
    try:
        db = sqlite3.connect(file, isolation_level=None)
    except sqlite3.Error as error:
        raise DivertError(f"cannot open {file}: {error}") from None
    try:
        made = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'location'"
        ).fetchone()
        if made:
            return file
        if missing:
            raise DivertError(
                f"Kamailio's SQLite tables are missing ({', '.join(missing)}): "
                "run 'make deps' (Debian package kamailio-sqlite-modules)"
            )
        db.execute("PRAGMA journal_mode = WAL")  # kept by the file: Kamailio's readers too
        body = "".join(script.read_text() for script in scripts)
        db.executescript(f"BEGIN;\n{body}\nCOMMIT;")  # all tables, or none
    except sqlite3.Error as error:
        raise DivertError(f"cannot prepare {file}: {error}") from None
    finally:
        db.close()
    return file
