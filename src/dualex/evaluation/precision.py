"""``--dtype``: the model parameter dtypes a run may ask for, by name."""

from __future__ import annotations

from typing import Any

from dualex.errors import InputError

#: ``--dtype`` names -> canonical torch dtype names.
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16"}  # fmt: skip


def canonical_dtype(name: str | None) -> str | None:
    """The canonical name of a dtype name (None: None).

    Raises:
        InputError: an unknown name.
    """
    if name is None:
        return None
    key = str(name).strip().lower()
    if key not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(sorted(DTYPES))}, got {name!r}")
    return DTYPES[key]


def parse_dtype(name: str | None) -> Any:
    """The torch dtype of a dtype name (None: None, the model's own)."""
    canon = canonical_dtype(name)
    if canon is None:
        return None
    import torch

    return getattr(torch, canon)
