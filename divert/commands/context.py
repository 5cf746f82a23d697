"""What a command runs with: the portal, opened on first use.

`transaction()` is where most commands work: the portal's schema checked,
then one transaction that commits whole or not at all.  The long-running
commands (the node, the sync worker) use the other
methods: they ride out a portal outage instead of stopping on one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING

from divert.errors import PortalUnavailable

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine


def first_line(error: BaseException | None) -> str:
    return str(error).strip().splitlines()[0] if error and str(error).strip() else "unknown error"


class Context:
    def __init__(self, portal_option: str | None, create: bool = False) -> None:
        from divert.db import portal_url  # SQLAlchemy: loaded to run a command, not for --help

        self.url = portal_url(portal_option)
        self.create = create  # only `db upgrade` makes a SQLite portal file
        self._engine: Engine | None = None

    @cached_property
    def engine(self) -> Engine:
        from divert.db import open_portal

        self._engine = open_portal(self.url, create=self.create)
        return self._engine

    @property
    def shown(self) -> str:
        """The portal's URL without its password, for messages."""
        from sqlalchemy.engine import make_url

        return make_url(self.engine.url).render_as_string(hide_password=True)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        self.require_schema()
        with self.engine.begin() as connection:
            yield connection

    def reachable(self) -> bool:
        from sqlalchemy.exc import OperationalError

        try:
            with self.engine.connect():
                return True
        except OperationalError:
            return False

    def require_schema(self) -> None:
        from sqlalchemy.exc import ProgrammingError

        from divert.schema import migrate

        try:
            current = migrate.current_revision(self.engine)
        except ProgrammingError:
            current = None
        head = migrate.head_revision()
        if current != head:
            raise PortalUnavailable(
                f"portal {self.shown} is at schema {current or 'none'}, this divert needs "
                f"{head}; run 'divert db upgrade'"
            )

    def require_schema_if_reachable(self) -> None:
        """For processes that outlive portal outages (the sync worker): an
        outage as they start, for instance when `divert run` restarts one,
        must not stop them."""
        from sqlalchemy.exc import OperationalError

        from divert.sync.worker import PORTAL_DOWN_ENV

        try:
            self.require_schema()
        except OperationalError as error:
            if os.environ.get(PORTAL_DOWN_ENV) == "1":
                return  # `divert run` said it for the node
            print(
                f"divert: portal {self.shown} unreachable ({first_line(error.orig)}); "
                "starting anyway, retrying in the background",
                file=sys.stderr,
            )


def in_transaction(
    body: Callable[[Connection, argparse.Namespace], None],
) -> Callable[[Context, argparse.Namespace], int]:
    """A command that does all its work in one portal transaction."""

    def handler(context: Context, args: argparse.Namespace) -> int:
        with context.transaction() as connection:
            body(connection, args)
        return 0

    handler.__doc__ = body.__doc__
    return handler
