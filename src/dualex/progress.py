"""Progress bars that stay quiet where nobody watches (tests, pipes, CI logs)."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm


def progress_enabled(progress: bool | None) -> bool:
    """``None`` means: show a bar only on an interactive terminal and never under pytest."""
    if progress is not None:
        return bool(progress)
    if "PYTEST_CURRENT_TEST" in os.environ or os.environ.get("DUALEX_PROGRESS", "") == "0":
        return False
    return sys.stderr.isatty()


def bar(total: int | None, desc: str, progress: bool | None = None, **kw: Any) -> tqdm:
    """A tqdm bar, disabled according to `progress_enabled`."""
    return tqdm(total=total, desc=desc, disable=not progress_enabled(progress), leave=False, **kw)
