"""`float_model`: the float32 twin some baselines run in (to be replaced by the adapter contract's float copy).

The other shared pieces of the methods live in `dualex.methods.common`.
"""

from __future__ import annotations

import copy

import torch

from dualex.models.base import DualEncoder


def float_model(model: DualEncoder, fp32: bool) -> DualEncoder:
    """``model`` itself, or for fp16/bf16 weights with ``fp32`` a float32 twin (the same adapter over a copy)."""
    if not fp32 or model.dtype not in (torch.float16, torch.bfloat16):
        return model
    twin = copy.copy(model)
    # `_module` is every built-in adapter's field for its torch module; the contract has no setter.
    twin._module = copy.deepcopy(model.module).float()  # type: ignore[attr-defined]
    return twin
