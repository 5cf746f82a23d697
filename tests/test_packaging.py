"""The wheel's package list in pyproject.toml names every package of the
checkout (a package left out installs, and then fails at its first import)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_of_divert_is_in_the_wheel():
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(settings["packages"])
    found = {
        ".".join(Path(folder).relative_to(ROOT).parts)
        for folder, _, files in os.walk(ROOT / "divert", followlinks=True)  # the linked ones too
        if "__init__.py" in files
    }
    assert found == listed
    assert settings["package-dir"]["divert.kemi"] == "kemi"
