"""The `divert` commands: one module per command group, in `GROUPS` order.

Each module's `register(groups)` adds its sub-parser and sets `handler` on
each action: a `Handler`, ``(Context, Namespace) -> int | None``.  A module
imports only what its options need at the top (argparse and the core's
vocabulary); what a command needs to run (SQLAlchemy, the portal, the node)
it imports when it runs, so that `divert --help` loads none of it.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from divert.commands.context import Context

Handler = Callable[["Context", argparse.Namespace], "int | None"]
# where a group adds its parser: the subcommands of `divert`'s own parser class
Groups: TypeAlias = "argparse._SubParsersAction[Any]"

GROUPS = (
    "db",
    "tenant",
    "trunk",
    "subscriber",
    "number",
    "forward",
    "policy",
    "schedule",
    "sync",
    "run",
    "explain",
    "token",
    "api",
)


def register_all(groups: Groups) -> None:
    for name in GROUPS:
        importlib.import_module(f"divert.commands.{name}").register(groups)
