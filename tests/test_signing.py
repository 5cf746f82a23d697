"""The node key and what it signs (`divert.kemi.signing`)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from divert.kemi.signing import (
    KEY_BYTES,
    NodeKeyError,
    ensure_key,
    key_path,
    load_key,
)


def test_the_key_is_made_once_readable_by_its_owner_only(tmp_path: Path):
    ensure_key(tmp_path)
    key = load_key(tmp_path)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(key_path(tmp_path).stat().st_mode) == 0o600
    ensure_key(tmp_path)  # a restart keeps it: dialogs in progress stay valid
    assert load_key(tmp_path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]


def test_a_missing_or_damaged_key_is_one_clear_error(tmp_path: Path):
    with pytest.raises(NodeKeyError, match="cannot read the node key"):
        load_key(tmp_path)
    key_path(tmp_path).write_bytes(b"short")
    with pytest.raises(NodeKeyError, match="has 5 bytes, not 32: delete it and restart"):
        ensure_key(tmp_path)
