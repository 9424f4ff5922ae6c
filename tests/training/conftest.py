"""Fixtures of the training tests: the analysis tests' ``toy`` helpers (tiny saved CLIP, toy COCO folder)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_HELPERS = Path(__file__).parents[1] / "analysis" / "conftest.py"
_spec = importlib.util.spec_from_file_location("_analysis_helpers", _HELPERS)
assert _spec is not None and _spec.loader is not None
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)

toy = _helpers.toy
