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
    """``module.name`` or ``name`` of every call ``KSR.[module.]name(...)``,
    with ``getattr(KSR, "async")`` for a module named by a Python keyword."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            parts = []
            target: ast.expr = node.func
            while True:
                if isinstance(target, ast.Attribute):
                    parts.append(target.attr)
                    target = target.value
                elif _getattr_of_ksr(target):
                    assert isinstance(target, ast.Call)
                    name = target.args[1]
                    assert isinstance(name, ast.Constant)
                    parts.append(str(name.value))
                    target = target.args[0]
                else:
                    break
            if isinstance(target, ast.Name) and target.id == "KSR":
                found.add(".".join(reversed(parts)))
    return found


def _getattr_of_ksr(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and len(node.args) == 2
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == "KSR"
        and isinstance(node.args[1], ast.Constant)
    )


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
    source = "KSR.tm.t_relayy()\nKSR.seturi('x')\nother.tm.t_relay()\ngetattr(KSR, 'async').tsk()"
    assert called_in(source) == {"tm.t_relayy", "seturi", "async.tsk"}
