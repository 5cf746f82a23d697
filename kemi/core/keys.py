"""How places a call can go to are named (see `divert.kemi.core.model`).

Built by the sync worker and the portal tools, parsed by nobody on the call
path: the adapter only compares and looks keys up.
"""

SUBSCRIBER_PREFIX = "sub:"
VOICEMAIL_PREFIX = "vm:"


def subscriber_key(username: str, domain: str) -> str:
    return f"{SUBSCRIBER_PREFIX}{username}@{domain}"


def voicemail_key(mailbox: str) -> str:
    return f"{VOICEMAIL_PREFIX}{mailbox}"


def is_number(key: str) -> bool:
    return key.startswith("+")


def voicemail_uri(template: str, mailbox: str) -> str:
    """A tenant's voicemail URI for `mailbox`: an E.164 number, or a
    subscriber's ``user@domain`` of which the tenant's server needs only the
    user."""
    return template.format(mailbox=mailbox.partition("@")[0])
