"""Fixtures of the viewer tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from viewer_data import write_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run-like directory: item0 explained by two methods, item1 (another caption) by one."""
    return write_run(tmp_path / "run")
