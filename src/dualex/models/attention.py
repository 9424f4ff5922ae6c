"""Attention internals an adapter exposes to attention-based methods (part of the `DualEncoder` contract).

Two views of a tower's self-attention layers, both implemented by each adapter from its own modules:

* **Recording** (`DualEncoder.record_attention`): while the tower runs its own forward (any attention
  kernel), each attention layer is recorded as an `AttentionSite`: the inputs the queries and the
  keys/values are projected from (after the block's norm), the additive mask, and the layer's output
  after its output projection, which stays in the autograd graph. Probabilities
  ``A = softmax(q kᵀ · scale + mask)`` and the exact gradient ``∂f/∂A = (∂f/∂O) Vᵀ`` (a head's output
  is ``O = A V``) are recomputed from the layer's weights. Used by GAME, Grad-ECLIP and rollout.
* **Blocks** (`DualEncoder.attention_blocks`): each pre-norm block as pure functions of the residual
  stream (`AttentionBlock`), so that a method can run a block with *modified* attention probabilities
  (MaskCLIP's identity attention, CLIP Surgery's value–value attention) or keep the probabilities in
  the autograd graph and differentiate with respect to them (LeGrad). Running every block with its own
  probabilities from ``hidden(side, inputs, 0)`` and then ``tail(side, inputs, h, n_layers)`` (the head
  alone) reproduces ``encode`` to float rounding (tested per adapter).

Shapes: R rows, H heads, T (key) positions, Tq query positions, d = head width, W = hidden width.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor, nn

from dualex.errors import UnsupportedModelError


@dataclass
class AttentionSite:
    """One attention layer as it ran on R rows.

    Attributes:
        x_query: ``(R, Tq, W)`` what the queries were projected from (detached).
        x_key: ``(R, T, W)`` what the keys and values were projected from (detached).
        mask: Additive mask broadcastable to ``(R, H, Tq, T)``, or None.
        output: ``(R, Tq, W')`` the layer's output after the output projection (in the graph).
        weights: ``(q_w, q_b, k_w, k_b, v_w, v_b)`` projection weights ``(H·d, W)`` and biases (or None).
        out_weight: ``(W', H·d)`` output projection weight.
        n_heads: Number of heads H.
        scale: Factor applied to ``q kᵀ``.
        q_norm: Applied to the projected queries ``(R, H, Tq, d)`` before the dot product (query norm,
            cosine attention's normalisation and per-head scale), or None.
        k_norm: The same for the keys.
    """

    x_query: Tensor
    x_key: Tensor
    mask: Tensor | None
    output: Tensor
    weights: tuple[Tensor, Tensor | None, Tensor, Tensor | None, Tensor, Tensor | None]
    out_weight: Tensor
    n_heads: int
    scale: float
    q_norm: Callable[[Tensor], Tensor] | None = None
    k_norm: Callable[[Tensor], Tensor] | None = None

    def _heads(self, t: Tensor) -> Tensor:
        R, T, E = t.shape
        return t.reshape(R, T, self.n_heads, E // self.n_heads).transpose(1, 2)

    def _project(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return self._heads(torch.nn.functional.linear(x.float(), w.float(), None if b is None else b.float()))

    def queries(self) -> Tensor:
        """``(R, H, Tq, d)`` float32, as they enter the dot product (after `q_norm`)."""
        q = self._project(self.x_query, self.weights[0], self.weights[1])
        return q if self.q_norm is None else self.q_norm(q).float()

    def keys(self) -> Tensor:
        """``(R, H, T, d)`` float32, as they enter the dot product (after `k_norm`)."""
        k = self._project(self.x_key, self.weights[2], self.weights[3])
        return k if self.k_norm is None else self.k_norm(k).float()

    def values(self) -> Tensor:
        """``(R, H, T, d)`` float32 (bias included, so ``O = A V`` holds exactly)."""
        return self._project(self.x_key, self.weights[4], self.weights[5])

    def allowed(self) -> Tensor:
        """``(R or 1, H or 1, Tq, T)`` bool: keys the mask lets each query see."""
        if self.mask is None:
            return torch.ones(
                1, 1, self.x_query.shape[1], self.x_key.shape[1], dtype=torch.bool, device=self.x_query.device
            )
        m = self.mask
        return m > torch.finfo(m.dtype).min / 2

    def logits(self) -> Tensor:
        """Pre-softmax attention scores ``q kᵀ · scale + mask``, ``(R, H, Tq, T)`` float32."""
        s = torch.matmul(self.queries() * self.scale, self.keys().transpose(-1, -2))
        if self.mask is not None:
            s = s + self.mask.float().clamp_min(torch.finfo(torch.float32).min)
        return s

    def probs(self) -> Tensor:
        """Attention probabilities ``(R, H, Tq, T)`` float32."""
        return self.logits().softmax(dim=-1)

    def head_output_grad(self, grad_output: Tensor) -> Tensor:
        """Gradient with respect to each head's output ``O = A V`` from that of `output`, ``(R, H, Tq, d)``."""
        return self._heads(torch.matmul(grad_output.float(), self.out_weight.float()))

    def probs_grad(self, grad_output: Tensor) -> Tensor:
        """Exact gradient with respect to the attention probabilities, ``(R, H, Tq, T)``: ``(∂f/∂O) Vᵀ``."""
        return torch.matmul(self.head_output_grad(grad_output), self.values().transpose(-1, -2))


@dataclass
class Recording:
    """Attention sites of one tower, in forward order; ``pool`` is an attention-pooling head, if any."""

    blocks: list[AttentionSite] = field(default_factory=list)
    pool: AttentionSite | None = None


def additive_from(mask: Tensor | None, R: int, H: int) -> Tensor | None:
    """An attention mask as ``(R or 1, 1 or H, Tq, T)`` additive floats (bool masks: True = attend)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, torch.finfo(torch.float32).min)
    if mask.dim() == 2:  # (Tq, T)
        return mask[None, None]
    if mask.dim() == 3:  # (R·H, Tq, T) as nn.MultiheadAttention takes it
        return mask.reshape(-1, H, *mask.shape[-2:]) if mask.shape[0] == R * H else mask[:, None]
    return mask


def mha_weights(
    attn: nn.MultiheadAttention,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None, Tensor, Tensor | None]:
    """``(q_w, q_b, k_w, k_b, v_w, v_b)`` of an ``nn.MultiheadAttention`` (packed or separate weights)."""
    if attn._qkv_same_embed_dim:
        qw, kw, vw = attn.in_proj_weight.chunk(3)
    else:
        qw, kw, vw = attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight
    # torch annotates in_proj_bias as a Parameter; it is None for nn.MultiheadAttention(bias=False).
    bias = cast("Tensor | None", attn.in_proj_bias)
    if bias is not None:
        qb, kb, vb = bias.chunk(3)
        return qw, qb, kw, kb, vw, vb
    return qw, None, kw, None, vw, None


def mha_site(attn: nn.MultiheadAttention, xq: Tensor, xk: Tensor, mask: Tensor | None, out: Tensor) -> AttentionSite:
    """The `AttentionSite` of a batch-first ``nn.MultiheadAttention`` call (queries ``xq``, keys ``xk``)."""
    if not attn.batch_first:
        raise UnsupportedModelError("sequence-first nn.MultiheadAttention pooling heads are not supported")
    if attn.bias_k is not None or attn.add_zero_attn:
        raise UnsupportedModelError("attention with key/value biases or zero attention is not supported")
    H = int(attn.num_heads)
    return AttentionSite(
        x_query=xq.detach(),
        x_key=xk.detach(),
        mask=additive_from(mask, xq.shape[0], H),
        output=out,
        weights=mha_weights(attn),
        out_weight=attn.out_proj.weight,
        n_heads=H,
        scale=float(attn.head_dim) ** -0.5,
    )


def split_heads(t: Tensor, n_heads: int) -> Tensor:
    """``(R, T, H·d)`` -> ``(R, H, T, d)``."""
    R, T, E = t.shape
    return t.reshape(R, T, n_heads, E // n_heads).transpose(1, 2)


def merge_heads(t: Tensor) -> Tensor:
    """``(R, H, T, d)`` -> ``(R, T, H·d)``."""
    R, H, T, d = t.shape
    return t.transpose(1, 2).reshape(R, T, H * d)


class AttentionBlock(ABC):
    """A pre-norm transformer block ``x + attn(norm(x))``, then ``+ mlp(norm(x))``, as pure functions.

    Each adapter builds these from its blocks' own weights. The functions never modify their inputs
    and are differentiable. Running a block with its own probabilities is
    ``x1 = x + attention_branch(A @ v)`` with ``q, k, v = qkv(x)``, ``A = softmax(logits(q, k) + mask)``,
    then ``x2 = x1 + mlp_branch(x1)`` (`run`).
    """

    n_heads: int

    @abstractmethod
    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values ``(R, H, T, d)`` from the residual stream ``x`` ``(R, T, W)``.

        Queries and keys are returned as they enter the dot product (after any query/key norm).
        """

    @abstractmethod
    def logits(self, q: Tensor, k: Tensor) -> Tensor:
        """Scaled dot products ``(R, H, Tq, T)`` of queries and keys (no mask)."""

    @abstractmethod
    def attention_branch(self, o: Tensor) -> Tensor:
        """What the attention adds to the residual stream, ``(R, T, W)``, from head outputs ``o`` ``(R, H, T, d)``.

        Head merge, output projection and any inner norm or layer scale of the block.
        """

    @abstractmethod
    def mlp_branch(self, x: Tensor) -> Tensor:
        """What the MLP adds to the residual stream ``x`` ``(R, T, W)`` (norm, MLP, layer scale)."""

    def probs(self, q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
        """``softmax(logits(q, k) + mask)`` ``(R, H, Tq, T)``."""
        s = self.logits(q, k)
        if mask is not None:
            s = s + mask.to(s.dtype)
        return s.softmax(dim=-1)

    def run(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """The block's own forward: ``(x_out (R, T, W), A (R, H, T, T))``."""
        q, k, v = self.qkv(x)
        A = self.probs(q, k, mask)
        return self.finish(x, A, v), A

    def finish(self, x: Tensor, A: Tensor, v: Tensor) -> Tensor:
        """The block's output for given probabilities ``A`` and values ``v``: ``x1 + mlp_branch(x1)``."""
        x1 = x + self.attention_branch(torch.matmul(A.to(v.dtype), v))
        return x1 + self.mlp_branch(x1)


__all__ = [
    "AttentionBlock",
    "AttentionSite",
    "Recording",
    "additive_from",
    "merge_heads",
    "mha_site",
    "mha_weights",
    "split_heads",
]
