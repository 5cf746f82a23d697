"""make bench's node without divert's checks (bench/bare_node.py) is made
from the shipped kamailio.cfg: a change there that its edits no longer
match must fail here, not half an hour into `make bench`."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "kamailio-cfg" / "kamailio.cfg"


def bare_node() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bare_node", ROOT / "bench" / "bare_node.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_check_is_removed_from_the_shipped_configuration() -> None:
    module = bare_node()
    text = CONFIG.read_text()
    bare = module.bare_config(text)
    for name, old, _new in module.EDITS:
        assert old in text, name
        assert old not in bare, name
    # what the wire-equivalent also does stays: the Route a trunk preloads
    # is dropped, every dialog is signed and checked
    assert 'remove_hf("Route")' in bare
    assert "route(SIGNED_BY_US)" in bare and 'record_route(";sig=$var(sig)")' in bare
    assert "pcre_match_group" not in bare.split("request_route {", 1)[1].split("route[PLAN]", 1)[0]
    assert 'modparam("uac", "restore_mode", "none")' in bare


def test_a_configuration_the_edits_do_not_match_is_refused_by_name() -> None:
    module = bare_node()
    text = CONFIG.read_text().replace('is_myself("$route_uri")', 'is_myself("$ru")')
    expected = "'the Route names this node' is in kamailio.cfg 0 times"
    with pytest.raises(SystemExit, match=re.escape(expected)):
        module.bare_config(text)
