"""Every KSR function the adapter calls exists in the real Kamailio (issue 13).

The unit tests' KSR stub answers only the functions of
``tests/kemi_api.txt``; this checks that list against the running
Kamailio's `app_python.api_list`, and every ``KSR.…(`` call in ``kemi/``
against the running Kamailio itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests import kemi_api
from tests.e2e.conftest import DivertNode

KEMI = Path(__file__).resolve().parents[2] / "kemi"


def called_in(source: str) -> set[str]:
    """``module.name`` or ``name`` of every call ``KSR.[module.]name(...)``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            parts = []
            target: ast.expr = node.func
            while isinstance(target, ast.Attribute):
                parts.append(target.attr)
                target = target.value
            if isinstance(target, ast.Name) and target.id == "KSR":
                found.add(".".join(reversed(parts)))
    return found


def test_the_listed_api_is_the_running_kamailios(node: DivertNode):
    running = kemi_api.parse(node.kamcmd("app_python.api_list"))
    assert len(running) > 400
    assert kemi_api.known() == running, "refresh tests/kemi_api.txt from app_python.api_list"


def test_every_ksr_call_of_the_adapter_exists(node: DivertNode):
    running = kemi_api.parse(node.kamcmd("app_python.api_list"))
    used = set().union(*(called_in(path.read_text()) for path in KEMI.rglob("*.py")))
    assert len(used) > 30  # the parser finds the adapter's calls
    assert used - running == set()


def test_a_misspelled_call_is_found():
    assert called_in("KSR.tm.t_relayy()\nKSR.seturi('x')\nother.tm.t_relay()") == {
        "tm.t_relayy",
        "seturi",
    }
