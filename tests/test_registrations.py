"""divert.registrations: the file usrloc keeps its contacts in."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from divert import registrations
from divert.errors import DivertError


def test_the_file_gets_kamailios_own_tables_once(tmp_path: Path):
    made = registrations.ensure(tmp_path)
    assert made == tmp_path / "registrations.sqlite"
    with sqlite3.connect(made) as db:
        db.execute(
            "INSERT INTO location (ruid, username, domain, contact) VALUES ('r', 'a', 'd', 'c')"
        )
        versions = dict(db.execute("SELECT table_name, table_version FROM version"))
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert versions["location"] == 9  # what usrloc of Kamailio 5.6 checks
    registrations.ensure(tmp_path)  # again: kept as it is
    with sqlite3.connect(made) as db:
        assert db.execute("SELECT count(*) FROM location").fetchone()[0] == 1


def test_missing_kamailio_tables_are_one_clear_line(tmp_path: Path):
    with pytest.raises(DivertError, match="kamailio-sqlite-modules"):
        registrations.ensure(tmp_path, sql_dir=tmp_path / "nowhere")
