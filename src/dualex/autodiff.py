"""Context managers that make model tails safe for forward- and reverse-mode autodiff."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch


def _load_jvp_decompositions() -> None:
    """Import torch's forward-mode decompositions once, without their ``torch.jit.script`` FutureWarning.

    ``torch.func.jvp`` imports ``torch._decomp.decompositions_for_jvp`` on first use, which scripts a
    few functions with the deprecated ``torch.jit.script`` and warns on every dualex run; the warning
    is torch's own business, so it is silenced only for that import.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
        with contextlib.suppress(ImportError):  # a torch without the module has nothing to silence
            import torch._decomp.decompositions_for_jvp  # noqa: F401


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Route attention through differentiable reference code for the duration of the block.

    Fused scaled-dot-product kernels (flash, memory-efficient, cuDNN) and ``nn.MultiheadAttention``'s
    fast path do not implement forward-mode AD. Inside this block SDPA uses its math backend and the
    MHA fast path is off; outside, models keep their fast kernels.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    _load_jvp_decompositions()
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
