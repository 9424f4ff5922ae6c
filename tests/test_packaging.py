"""Package metadata: what setuptools reads from pyproject.toml without deprecation warnings."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_string():
    """A ``license = {text = ...}`` table makes setuptools ≥ 77 warn (three times per install)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    assert not any(c.startswith("License ::") for c in meta["project"].get("classifiers", []))
    needs = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    assert needs == ["setuptools>=77"]
