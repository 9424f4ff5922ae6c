"""Recording attention internals during a tower's forward pass, for attention-based explanations.

Grad-ECLIP and GAME need, per attention layer, the queries, keys and values, the attention
probabilities and the gradient of the similarity with respect to them. Rather than switching models
to eager attention, dualex records at each attention layer

* the inputs the queries and the keys/values are projected from (after the block's layer norm),
* the additive attention mask the layer applied,
* the layer's output after its output projection, which stays in the autograd graph,

and recomputes everything else from the layer's own weights: ``q, k, v``, the probabilities
``A = softmax(q kᵀ · scale + mask)`` and, because a head's output is ``O = A V``, the exact gradient
``∂f/∂A = (∂f/∂O) Vᵀ`` with ``∂f/∂O`` read off the recorded output (``∂f/∂O = (∂f/∂O') W_o`` split by
head). This works with any attention kernel (SDPA, flash, written-out) and on every device.

Supported towers (others raise `UnsupportedModelError`):

* transformers CLIP and SigLIP/SigLIP-2 (``encoder.layers[i].self_attn``; SigLIP's image tower adds
  its multi-head attention pooling head, recorded as `Recording.pool`),
* open_clip ViT CLIP towers whose blocks use ``nn.MultiheadAttention`` (``ln_1`` / ``ls_1`` hooks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from dualex.errors import UnsupportedModelError
from dualex.models.base import SIDES, DualEncoder, Side, SideInputs, TextInputs

# ``(q_w, q_b, k_w, k_b, v_w, v_b)``: projection weights ``(H·d, W)`` and biases (None without bias).
ProjectionWeights = tuple[Tensor, Tensor | None, Tensor, Tensor | None, Tensor, Tensor | None]


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
    """

    x_query: Tensor
    x_key: Tensor
    mask: Tensor | None
    output: Tensor
    weights: ProjectionWeights
    out_weight: Tensor
    n_heads: int
    scale: float

    def _heads(self, t: Tensor) -> Tensor:
        R, T, E = t.shape
        return t.reshape(R, T, self.n_heads, E // self.n_heads).transpose(1, 2)

    def _project(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return self._heads(torch.nn.functional.linear(x.float(), w.float(), None if b is None else b.float()))

    def queries(self) -> Tensor:
        """``(R, H, Tq, d)`` float32."""
        return self._project(self.x_query, self.weights[0], self.weights[1])

    def keys(self) -> Tensor:
        """``(R, H, T, d)`` float32."""
        return self._project(self.x_key, self.weights[2], self.weights[3])

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


def _mask_from(mask: Tensor | None, R: int, H: int, Tq: int) -> Tensor | None:
    """An attention mask as ``(R or 1, 1 or H, Tq, T)`` additive floats."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, torch.finfo(torch.float32).min)
    if mask.dim() == 2:  # (Tq, T)
        return mask[None, None]
    if mask.dim() == 3:  # (R·H, Tq, T) as nn.MultiheadAttention takes it
        return mask.reshape(-1, H, *mask.shape[-2:]) if mask.shape[0] == R * H else mask[:, None]
    return mask


def _hf_layers(model: DualEncoder, side: Side) -> list[Any]:
    """The encoder layers of a transformers CLIP/SigLIP tower (transformers leaves them untyped)."""
    hf: Any = model.module
    tower = hf.text_model if side == "text" else hf.vision_model
    return list(tower.encoder.layers)


def _hf_hook(rec: Recording) -> Any:
    # `module` is a transformers CLIPAttention/SiglipAttention, whose attributes are untyped.
    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        x: Tensor = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        out = output[0] if isinstance(output, tuple) else output
        R, T, _ = x.shape
        rec.blocks.append(
            AttentionSite(
                x_query=x.detach(),
                x_key=x.detach(),
                mask=_mask_from(mask.detach() if mask is not None else None, R, module.num_heads, T),
                output=out,
                weights=(
                    module.q_proj.weight,
                    module.q_proj.bias,
                    module.k_proj.weight,
                    module.k_proj.bias,
                    module.v_proj.weight,
                    module.v_proj.bias,
                ),
                out_weight=module.out_proj.weight,
                n_heads=int(module.num_heads),
                scale=float(module.scale),
            )
        )

    return hook


def _mha_weights(attn: nn.MultiheadAttention) -> ProjectionWeights:
    if attn._qkv_same_embed_dim:
        qw, kw, vw = attn.in_proj_weight.chunk(3)
    else:
        qw, kw, vw = attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight
    # torch annotates in_proj_bias as a Parameter; it is None for nn.MultiheadAttention(bias=False).
    bias = cast("Tensor | None", attn.in_proj_bias)
    qb: Tensor | None
    kb: Tensor | None
    vb: Tensor | None
    if bias is not None:
        qb, kb, vb = bias.chunk(3)
    else:
        qb = kb = vb = None
    return qw, qb, kw, kb, vw, vb


def _mha_site(attn: nn.MultiheadAttention, xq: Tensor, xk: Tensor, mask: Tensor | None, out: Tensor) -> AttentionSite:
    if not attn.batch_first:
        raise UnsupportedModelError("sequence-first nn.MultiheadAttention pooling heads are not supported")
    if attn.bias_k is not None or attn.add_zero_attn:
        raise UnsupportedModelError("attention with key/value biases or zero attention is not supported")
    H = int(attn.num_heads)
    return AttentionSite(
        x_query=xq.detach(),
        x_key=xk.detach(),
        mask=_mask_from(mask, xq.shape[0], H, xq.shape[1]),
        output=out,
        weights=_mha_weights(attn),
        out_weight=attn.out_proj.weight,
        n_heads=H,
        scale=float(attn.head_dim) ** -0.5,
    )


def _pool_hook(rec: Recording) -> Any:
    def hook(module: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        q, k = args[0], args[1]
        mask = kwargs.get("attn_mask", args[5] if len(args) > 5 else None)
        rec.pool = _mha_site(module, q, k, mask, output[0])

    return hook


def _openclip_hooks(model: DualEncoder, side: Side, inputs: SideInputs, rec: Recording) -> list[Any]:
    from dualex.models.openclip import OpenClipEncoder

    assert isinstance(model, OpenClipEncoder)  # family(model) == "openclip"
    clip: Any = model.module  # open_clip ships no type information
    tower = model.text_tower.transformer if side == "text" else clip.visual.transformer
    handles: list[Any] = []
    for i, blk in enumerate(tower.resblocks):
        attn = getattr(blk, "attn", None)
        if not isinstance(attn, nn.MultiheadAttention) or not hasattr(blk, "ls_1") or not hasattr(blk, "ln_1"):
            raise UnsupportedModelError(
                f"{side} block {i} of {model.name} does not use nn.MultiheadAttention; attention-based methods "
                "support standard open_clip ViT blocks only"
            )
        state: dict[str, Tensor] = {}

        def save_input(
            module: nn.Module, args: tuple[Any, ...], output: Tensor, state: dict[str, Tensor] = state
        ) -> None:
            state["x"] = output

        def save_output(
            module: nn.Module,
            args: tuple[Any, ...],
            attn: nn.MultiheadAttention = attn,
            state: dict[str, Tensor] = state,
        ) -> None:
            x = state.pop("x")
            mask = None
            if side == "text":
                assert isinstance(inputs, TextInputs)
                mask = model._text_attention(inputs, x.shape[0], x.dtype)
            rec.blocks.append(_mha_site(attn, x, x, mask, args[0]))

        handles.append(blk.ln_1.register_forward_hook(save_input))
        handles.append(blk.ls_1.register_forward_pre_hook(save_output))
    return handles


def family(model: DualEncoder) -> str:
    """``"hf"`` or ``"openclip"`` for towers whose attention can be recorded, else raises."""
    from dualex.models.hf import HFDualEncoder

    if isinstance(model, HFDualEncoder) and hasattr(model.module, "text_model"):
        return "hf"
    try:
        from dualex.models.openclip import OpenClipEncoder
    except ImportError:  # open_clip not installed or adapter absent
        pass
    else:
        if isinstance(model, OpenClipEncoder):
            return "openclip"
    raise UnsupportedModelError(
        f"attention-based methods (GAME, Grad-ECLIP) support transformers CLIP/SigLIP and open_clip ViT models; "
        f"{model.name} is a {model.family!r} model. Use a gradient or perturbation method instead "
        "(method='ig', 'interaction_lime', 'fixlip')"
    )


@contextlib.contextmanager
def record_attention(model: DualEncoder, side: Side, inputs: SideInputs) -> Iterator[Recording]:
    """Record every attention layer of the ``side`` tower while the block runs (call its ``tail``)."""
    rec = Recording()
    fam = family(model)
    handles: list[Any] = []
    try:
        if fam == "hf":
            for layer in _hf_layers(model, side):
                handles.append(layer.self_attn.register_forward_hook(_hf_hook(rec), with_kwargs=True))
            hf: Any = model.module  # a transformers CLIP/SigLIP model, untyped submodules
            head = getattr(hf.vision_model, "head", None) if side == "image" else None
            if head is not None and isinstance(getattr(head, "attention", None), nn.MultiheadAttention):
                handles.append(head.attention.register_forward_hook(_pool_hook(rec), with_kwargs=True))
        else:
            handles.extend(_openclip_hooks(model, side, inputs, rec))
        yield rec
    finally:
        for h in handles:
            h.remove()


def query_position(model: DualEncoder, side: Side, inputs: SideInputs, rec: Recording, row: int = 0) -> int:
    """The position whose state becomes the embedding: EOS/last for text, CLS for CLIP images.

    Returns -1 when the image tower pools with an attention head (`Recording.pool`, query 0 of it).
    Raises `UnsupportedModelError` for mean-pooled towers, which have no single pooled position.
    """
    if side == "text":
        assert isinstance(inputs, TextInputs)
        return int(inputs.pool_index[row])
    if rec.pool is not None:
        return -1
    visual = getattr(model.module, "visual", None)
    if visual is not None and getattr(visual, "pool_type", "tok") != "tok":
        raise UnsupportedModelError(
            f"the image tower of {model.name} average-pools its tokens; this method needs a CLS-pooled tower"
        )
    if getattr(model, "n_prefix", getattr(inputs, "n_prefix", 0)) < 1:
        raise UnsupportedModelError(f"the image tower of {model.name} has no CLS token and no attention pool head")
    return 0


@dataclass
class RecordedPass:
    """One forward/backward pass of a pair with recorded attention.

    Attributes:
        recordings: Per recorded side, its `Recording`.
        grads: Per recorded side, the gradients of the similarity with respect to each block's output
            (same order as ``recordings[side].blocks``).
        pool_grad: Per recorded side, the gradient with respect to the pooling head's output, or None.
        value: The explained similarity of the pair.
    """

    recordings: dict[Side, Recording]
    grads: dict[Side, list[Tensor]]
    pool_grad: dict[Side, Tensor | None]
    value: float


def recorded_pass(
    model: DualEncoder, inputs: Mapping[Side, SideInputs], sides: tuple[Side, ...], units: str
) -> RecordedPass:
    """Run both towers on one pair (recording attention on ``sides``) and differentiate the similarity.

    Args:
        model: The dual encoder.
        inputs: One-row inputs per side.
        sides: Towers whose attention is recorded.
        units: ``"cosine"`` or ``"score"``.
    """
    from dualex.methods.common import similarity

    recs: dict[Side, Recording] = {}
    emb: dict[Side, Tensor] = {}
    for s in SIDES:
        with torch.no_grad():
            x0 = model.hidden(s, inputs[s], 0)
        if s in sides:
            x0 = x0.detach().requires_grad_(True)
            with torch.enable_grad(), record_attention(model, s, inputs[s]) as rec:
                emb[s] = model.tail(s, inputs[s], x0, 0)
            recs[s] = rec
        else:
            with torch.no_grad():
                emb[s] = model.tail(s, inputs[s], x0, 0)
    with torch.enable_grad():
        f = similarity(model, emb["text"], emb["image"], units).sum()
        sites = [
            (s, i, site) for s in sides for i, site in enumerate([*recs[s].blocks, recs[s].pool]) if site is not None
        ]
        if not sites:
            raise UnsupportedModelError(f"no attention layers were recorded in {model.name}")
        raw = torch.autograd.grad(f, [site.output for _, _, site in sites], allow_unused=True)
    grads: dict[Side, list[Tensor]] = {s: [] for s in sides}
    pool: dict[Side, Tensor | None] = {s: None for s in sides}
    for (s, i, site), g in zip(sites, raw, strict=True):
        g = torch.zeros_like(site.output) if g is None else g.detach()
        if i < len(recs[s].blocks):
            grads[s].append(g)
        else:
            pool[s] = g
    return RecordedPass(recs, grads, pool, float(f.detach()))
