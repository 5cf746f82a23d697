"""Errors the operator sees: one line, and the exit code the CLI returns."""


class DivertError(Exception):
    """Bad input or a refused change: the message says what and what to do."""

    exit_code = 2


class PortalUnavailable(DivertError):
    """The portal database cannot be reached or is not migrated."""

    exit_code = 1
