"""The script Kamailio's app_python3 loads (kamailio.cfg: DIVERT_ENTRY).

Kamailio embeds /usr/bin/python3's libpython, not divert's virtual
environment: put the environment's site-packages and the folder that holds
the `divert` package on the path before anything else is imported.
`divert run` passes the environment in DIVERT_VENV.  This file is
``divert/kemi/entry.py`` in both layouts: installed (the folder is
site-packages) and in a checkout (the folder is the checkout, where
``divert/kemi`` links to ``kemi/``), so the folder is always two above it.
"""

import locale
import os
import site
import sys

_HOLDER = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_VENV = os.environ.get("DIVERT_VENV", "")
if _VENV:
    site.addsitedir(
        os.path.join(
            _VENV,
            "lib",
            f"python{sys.version_info.major}.{sys.version_info.minor}",
            "site-packages",
        )
    )
if _HOLDER not in sys.path:
    sys.path.insert(0, _HOLDER)

from divert.kemi.adapter import FeatureCodes, Router  # noqa: E402


def feature_codes() -> FeatureCodes:
    """Made in an async worker when the first code comes: only those
    processes load the portal's database drivers, never a SIP worker."""
    from divert.features.task import FeatureCodes as PortalFeatureCodes

    return PortalFeatureCodes.from_environment(os.environ.get("DIVERT_STATE_DIR", "var"))


def mod_init() -> Router:
    """Called once in Kamailio's main process; workers inherit the object.

    Python's start set the process's LC_CTYPE from the environment (mostly a
    UTF-8 locale), and glibc's regular expressions then read multibyte
    characters: kamailio.cfg's `=~` (those not in regex-groups), several
    times slower than in the C locale.  Back to C before Kamailio compiles
    them: they only ever accept ASCII, and Python fixed its own encodings
    when it started."""
    locale.setlocale(locale.LC_CTYPE, "C")
    return Router.from_environment(feature_codes)
