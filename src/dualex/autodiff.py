"""Context managers that make model tails safe for forward- and reverse-mode autodiff."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Route attention through differentiable reference code for the duration of the block.

    Fused scaled-dot-product kernels (flash, memory-efficient, cuDNN) and ``nn.MultiheadAttention``'s
    fast path do not implement forward-mode AD. Inside this block SDPA uses its math backend and the
    MHA fast path is off; outside, models keep their fast kernels.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mha = getattr(torch.backends, "mha", None)
    prev = mha.get_fastpath_enabled() if mha is not None else None
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        if mha is not None and prev is not None:
            mha.set_fastpath_enabled(prev)
