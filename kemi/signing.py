"""The node's secret, and what it signs.

A node proves to itself that it set a dialog up with one random key kept
in the state folder (``<state-dir>/node.key``, 32 bytes, mode 0600).  `divert run`
creates it on first start; nodes that should honour each other's dialogs
share it.

Dialogs: every Record-Route the node adds carries ``sig``, a keyed digest
of the Call-ID and the From-tag of the request that set the dialog up.  An
in-dialog request is relayed only when the node's own Route entry carries
the digest of its Call-ID and one of its two tags (the From-tag downstream,
the To-tag upstream), so only the dialog's own parties can use the node, and
nobody can aim a forged "in-dialog" request at a carrier.

Kamailio's native configuration computes the digest (``route[SIGNATURE]``
in kamailio.cfg), for its Record-Route and for every in-dialog request, so
no Python runs for either.  It has SHA-256, not BLAKE2b or HMAC: SHA-256 of
the key (in hex, given to Kamailio in DIVERT_NODE_KEY), the tag's length in
bytes (so that no two tag and Call-ID pairs read the same), the tag and the
Call-ID; then SHA-256 of the key and that inner digest, which keys the
result so it cannot be extended from a known one; 96 bits kept, in hex.
Why a signature and not Kamailio's `dialog` module: it costs no shared
memory or locking per call, survives a Kamailio restart (calls in progress
can still be hung up), and holds across nodes that share the key.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_FILE = "node.key"
NODE_KEY_ENV = "DIVERT_NODE_KEY"  # the key in hex, in Kamailio's environment
KEY_BYTES = 32


class NodeKeyError(Exception):
    """The node key is missing or unusable."""


def key_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / KEY_FILE


def ensure_key(state_dir: str | os.PathLike[str]) -> None:
    """Create the node key if there is none (atomically, readable by us only)."""
    path = key_path(state_dir)
    if path.exists():
        load_key(state_dir)  # refuse to start with an unusable one
        return
    temporary = path.with_name(f".{KEY_FILE}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(descriptor, secrets.token_bytes(KEY_BYTES))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)


def load_key(state_dir: str | os.PathLike[str]) -> bytes:
    path = key_path(state_dir)
    try:
        key = path.read_bytes()
    except OSError as error:
        raise NodeKeyError(f"cannot read the node key {path}: {error.strerror}") from None
    if len(key) != KEY_BYTES:
        raise NodeKeyError(
            f"the node key {path} has {len(key)} bytes, not {KEY_BYTES}: "
            "delete it and restart to make a new one"
        )
    return key
