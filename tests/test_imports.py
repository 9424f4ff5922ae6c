"""Start-up: importing dualex (and listing its methods, metrics, games, CLI) loads no heavy optional library."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("transformers", "scipy", "pandas", "matplotlib", "pyarrow", "sklearn", "open_clip", "sentence_transformers")


def test_import_dualex_loads_only_what_it_needs() -> None:
    code = (
        "import sys, dualex, dualex.cli, dualex.evaluation.run, dualex.metrics, dualex.games, dualex.methods\n"
        "dualex.methods.list_methods()\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""  # each is imported by the command that needs it, when it needs it
