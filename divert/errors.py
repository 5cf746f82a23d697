"""Errors the operator sees: one line, and the exit code the CLI returns."""


class DivertError(Exception):
    """Bad input or a refused change: the message says what and what to do."""

    exit_code = 2


class PortalUnavailable(DivertError):
    """The portal database cannot be reached or is not migrated."""

    exit_code = 1


class NotFound(DivertError):
    """A tenant, trunk, subscriber, number, forward or schedule that the
    portal does not have (the API's 404; the CLI's exit 2, like bad input)."""
