"""The KEMI functions of Debian's Kamailio 5.6 with this project's modules,
as `kamcmd app_python.api_list` lists them (``tests/kemi_api.txt``).

The adapter's unit tests answer only these (a misspelled KSR call fails
there, not in production), and `tests/e2e/test_kemi_api.py` checks the
list against the running Kamailio, so it cannot drift from the real one.
"""

from __future__ import annotations

import re
from pathlib import Path

LISTING = Path(__file__).with_name("kemi_api.txt")


def parse(listing: str) -> set[str]:
    """``module.name`` (or ``name`` for KSR's own) of each method listed."""
    found = set()
    for module, name in re.findall(r"module: ([^\n]*)\n\s*name: ([^\n]*)", listing):
        module, name = module.strip(), name.strip()
        found.add(f"{module}.{name}" if module else name)
    return found


def known() -> set[str]:
    return set(LISTING.read_text().split())
