"""What import-linter cannot see: the store's SQL is in the store layer only
(`kemi/store/`: format, reader, writer, view), so the store's tables can
change in one place."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("divert", "kemi", "sync", "schema")
STORE_LAYER = ROOT / "kemi" / "store"
# tables only the store has (the portal's are forwards, trunks, ...)
STORE_ONLY = re.compile(
    r"\b(?:FROM|INTO|UPDATE|JOIN)\s+(?:forward_tables|trunk_addresses|meta|rejected|changes)\b",
    re.IGNORECASE,
)


def sources() -> list[Path]:
    found = []
    for top in SOURCES:
        for path in (ROOT / top).rglob("*.py"):
            if not any(part.is_symlink() for part in [path, *path.parents]):
                found.append(path)
    return found


def test_store_sql_is_in_the_store_layer_only():
    outside = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in sources()
        if STORE_LAYER not in path.parents
        for match in STORE_ONLY.finditer(path.read_text())
    ]
    assert outside == []


def test_the_check_finds_store_sql():
    inside = [path for path in sources() if STORE_LAYER in path.parents]
    assert sum(len(STORE_ONLY.findall(path.read_text())) for path in inside) > 10
    assert STORE_ONLY.search('db.execute("SELECT data FROM forward_tables WHERE key = ?")')
