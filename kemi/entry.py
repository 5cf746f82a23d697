"""The script Kamailio's app_python3 loads (kamailio.cfg: DIVERT_ENTRY).

Kamailio embeds /usr/bin/python3's libpython, not the project's virtual
environment: put the environment's site-packages and the project root on
the path before anything else is imported.  `divert run` passes the
environment in DIVERT_VENV; the project root is this file's parent folder.
"""

import os
import site
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_VENV = os.environ.get("DIVERT_VENV", os.path.join(_ROOT, ".venv"))
_SITE = os.path.join(
    _VENV, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages"
)
site.addsitedir(_SITE)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from kemi.adapter import Router  # noqa: E402


def mod_init() -> Router:
    """Called once in Kamailio's main process; workers inherit the object."""
    return Router.from_environment()
