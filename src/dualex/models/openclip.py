"""Adapter for open_clip ViT CLIP models: ``open_clip.CLIP`` and ``CustomTextCLIP`` with a native text tower.

Names: ``openclip:ARCH@TAG`` (a pretrained tag whose checkpoint is already in the local cache),
``openclip:ARCH@/path/to/open_clip_pytorch_model.bin`` (a checkpoint file) and ``openclip:ARCH@random``
(random initialisation, offline: only on this explicit request; ``openclip:ARCH`` and ``ARCH@`` name no
weights and are refused). dualex never downloads open_clip weights: an uncached tag raises
`ModelNotAvailableError` saying how to pass the file.

How the towers run. The adapter re-implements both forwards from the towers' public submodules so that
it can split at any block (``hidden`` = embeddings + blocks ``< layer``; ``tail`` = the rest + head).
Attention is written out (`dualex.models.parts.softmax_attention`) from each block's own weights
instead of calling ``nn.MultiheadAttention``: its fast path (``aten::_native_multi_head_attention``)
and the fused SDPA kernels have no forward-mode AD, so the written-out form is what makes ``tail`` safe
under ``torch.func.jvp``/``vjp``/``vmap`` with no context manager. Hidden states are batch-first
``(B, T, W)`` always (open_clip 3.3.0 towers are batch-first; since the blocks are never called, a
sequence-first ``transformer.batch_first = False`` tower gives the same states). Embeddings agree with
``model.encode_image/encode_text(normalize=False)`` to float rounding.

Text tower, as open_clip builds it: causal attention (``attn_mask``) unless ``no_causal_mask``, no
padding mask (except a bidirectional ``TextTransformer(use_pad_mask=True)``, reproduced), pooling by
``text_pool_type``: ``argmax`` (EOT has the largest id), ``eos``, ``first`` or ``last``; then
``ln_final`` and ``text_projection`` (a Linear or a matrix). For causal towers pooled at EOT the
captions are cut after the longest EOT of the batch (exact: no position before EOT sees later ones).

Removing caption tokens (``mask``). open_clip text towers were trained without a padding mask, so
there is no in-distribution way to delete a token while keeping positions. Two choices:

* ``how="attention"`` (default, as for every dualex adapter and FIxLIP's game): the token stays in
  place but no position attends to it (an additive key mask on top of the causal mask).
* ``how="pad"``: the token id is replaced by id 0 (``"!"`` in CLIP BPE, exCLIP's reference filler), so
  the tower sees an ordinary sequence of the same length.

References: text ``"default"`` = ``[BOS 49406, 0, EOS 49407, 0, ...]`` (exCLIP's), ``"same_length"`` =
BOS, fillers (id 0) and EOS at the caption's EOS position; image ``"zeros"`` (normalised zeros = the
dataset mean colour), ``"black"``, ``"noise"``.

Not supported (raises `UnsupportedModelError`): timm or ModifiedResNet image towers (open_clip SigLIP,
ConvNeXt, RN50), attentional pooling (CoCa), Hugging Face text towers, CoCa's appended CLS token.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import warnings
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional

from dualex.errors import InputError, ModelNotAvailableError, UnsupportedModelError
from dualex.models.attention import (
    AttentionBlock,
    AttentionSite,
    Recording,
    merge_heads,
    mha_site,
    mha_weights,
    split_heads,
)
from dualex.models.base import DualEncoder, ImageInputs, PooledBlock, SideInputs, TextInputs, pooled_mask
from dualex.models.hf import additive_mask, broadcast_rows, hub_offline_now
from dualex.models.parts import (
    bos_filler_eos_reference,
    image_reference,
    mask_image_patches,
    mask_text_players,
    patch_tokens,
    softmax_attention,
)
from dualex.models.preprocess import CLIP_MEAN, CLIP_STD, ImagePipeline
from dualex.models.registry import random_weights_seed, register_loader, register_wrapper, wrap
from dualex.models.tokenize import HFTokenizer, OpenClipTokenizer, TokenizerLike, WordTokenizer
from dualex.models.tower import Tower

if importlib.util.find_spec("open_clip") is None:  # the loader stays unregistered; load() says so
    raise ImportError("open_clip is not installed; install dualex[openclip]")

CLIP_BOS, CLIP_EOS, CLIP_FILLER, CLIP_PAD = 49406, 49407, 0, 0
TEXT_POOLS = ("argmax", "eos", "first", "last")
_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


# ---------------------------------------------------------------------------------------------- blocks
# open_clip ships no type information, so its blocks, towers and their attributes are `Any` here.
def run_block(block: Any, x: Tensor, mask: Tensor | None) -> Tensor:
    """One open_clip residual block on batch-first states ``(R, T, W)`` with written-out attention.

    Args:
        block: A ``ResidualAttentionBlock`` (``nn.MultiheadAttention``) or ``CustomResidualAttentionBlock``.
        x: Hidden states ``(R, T, W)``.
        mask: Additive attention mask broadcastable to ``(R, heads, T, T)``, or None.
    """
    if isinstance(block.attn, nn.MultiheadAttention):
        x = x + block.ls_1(_mha(block.attn, block.ln_1(x), mask))
    else:
        x = x + block.ls_1(block.ln_attn(_custom_attention(block.attn, block.ln_1(x), mask)))
    out: Tensor = x + block.ls_2(block.mlp(block.ln_2(x)))
    return out


def _heads(t: Tensor, n_heads: int) -> Tensor:
    R, T, E = t.shape
    return t.reshape(R, T, n_heads, E // n_heads).transpose(1, 2)


def _merge(t: Tensor) -> Tensor:
    R, H, T, d = t.shape
    return t.transpose(1, 2).reshape(R, T, H * d)


def _mha(attn: nn.MultiheadAttention, x: Tensor, mask: Tensor | None) -> Tensor:
    """``nn.MultiheadAttention`` self-attention (no bias_kv, no zero-attn) with its own weights."""
    if attn._qkv_same_embed_dim:
        q, k, v = functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    else:
        bias = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None, None, None)
        q = functional.linear(x, attn.q_proj_weight, bias[0])
        k = functional.linear(x, attn.k_proj_weight, bias[1])
        v = functional.linear(x, attn.v_proj_weight, bias[2])
    H = attn.num_heads
    out = softmax_attention(_heads(q, H), _heads(k, H), _heads(v, H), mask, attn.head_dim**-0.5)
    return functional.linear(_merge(out), attn.out_proj.weight, attn.out_proj.bias)


def _custom_attention(attn: Any, x: Tensor, mask: Tensor | None) -> Tensor:
    """open_clip's ``Attention`` (qk-norm, scaled cosine, head scale, inner norm) with its own weights."""
    H = attn.num_heads
    q, k, v = (_heads(t, H) for t in functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
    if attn.logit_scale is not None:
        scale = torch.clamp(attn.logit_scale, max=attn.logit_scale_max).exp()  # (H, 1, 1)
        out = softmax_attention(functional.normalize(q, dim=-1) * scale, functional.normalize(k, dim=-1), v, mask, 1.0)
    else:
        out = softmax_attention(attn.ln_q(q), attn.ln_k(k), v, mask, attn.scale)
    if attn.head_scale is not None:
        out = out * attn.head_scale
    projected: Tensor = attn.out_proj(attn.ln_inner(_merge(out)))
    return projected


def _qkv_weights(attn: Any) -> list[tuple[Tensor, Tensor | None]]:
    """``[(W_q, b_q), (W_k, b_k), (W_v, b_v)]`` of an open_clip attention (fused or separate projections)."""
    if getattr(attn, "_qkv_same_embed_dim", True):
        ws = attn.in_proj_weight.chunk(3, dim=0)
        bs = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None, None, None)
    else:
        ws = (attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight)
        bs = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None, None, None)
    return list(zip(ws, bs, strict=True))


def block_pooled(block: Any, index: Tensor, mask: Tensor | None, head: Callable[[Tensor], Tensor]) -> PooledBlock:
    """An open_clip residual block (as `run_block` runs it) + ``head`` as a `PooledBlock`.

    Args:
        block: A ``ResidualAttentionBlock`` or ``CustomResidualAttentionBlock``.
        index: ``(R,)`` pooled row of each hidden-state row.
        mask: The block's additive attention mask ``(R|1, 1, T, T)`` or None.
        head: The tower after the block, on the pooled row: ``(R, W) -> (R, D)``.
    """
    attn: Any = block.attn
    H = int(attn.num_heads)
    (wq, bq), (wk, bk), (wv, bv) = _qkv_weights(attn)
    mha = isinstance(attn, nn.MultiheadAttention)
    cosine = not mha and attn.logit_scale is not None

    def split(t: Tensor) -> Tensor:
        return t.reshape(*t.shape[:-1], H, t.shape[-1] // H)

    def keys_values(h: Tensor) -> tuple[Tensor, Tensor]:
        x = block.ln_1(h)
        k = split(functional.linear(x, wk, bk)).transpose(-2, -3)  # (R, H, T, d)
        v = split(functional.linear(x, wv, bv)).transpose(-2, -3)
        if cosine:
            k = functional.normalize(k, dim=-1)
        elif not mha:
            k = attn.ln_k(k)
        return k, v

    def query(hp: Tensor) -> Tensor:
        q = split(functional.linear(block.ln_1(hp), wq, bq))  # (R, H, d)
        if mha:
            scaled: Tensor = q * float(attn.head_dim) ** -0.5
            return scaled
        if cosine:
            scale = torch.clamp(attn.logit_scale, max=attn.logit_scale_max).exp()  # (H, 1, 1)
            return functional.normalize(q, dim=-1) * scale.reshape(H, 1)
        out: Tensor = attn.ln_q(q) * attn.scale
        return out

    def finish(hp: Tensor, a: Tensor) -> Tensor:
        if mha:
            out = functional.linear(a.flatten(-2), attn.out_proj.weight, attn.out_proj.bias)
        else:
            if attn.head_scale is not None:
                a = a * attn.head_scale.reshape(H, 1)
            out = block.ln_attn(attn.out_proj(attn.ln_inner(a.flatten(-2))))
        y = hp + block.ls_1(out)
        return head(y + block.ls_2(block.mlp(block.ln_2(y))))

    return PooledBlock(keys_values, query, finish, index, pooled_mask(mask, index))


def _check_blocks(blocks: nn.ModuleList, where: str) -> None:
    for i, blk in enumerate(blocks):
        attn = getattr(blk, "attn", None)
        if isinstance(attn, nn.MultiheadAttention):
            if attn.bias_k is not None or attn.add_zero_attn or hasattr(blk, "ln_1_kv"):
                raise UnsupportedModelError(f"{where} block {i} uses key/value biases or cross-attention")
        elif not all(hasattr(attn, a) for a in ("in_proj_weight", "ln_q", "ln_k", "ln_inner", "head_scale")):
            raise UnsupportedModelError(f"{where} block {i} ({type(blk).__name__}) is not an open_clip block")


# ---------------------------------------------------------------------------------------------- adapter
class OpenClipTower(Tower):
    """Shared parts of the open_clip towers: the residual blocks, attention recording and blocks.

    Layers are the tower's residual attention blocks (``transformer.resblocks``).
    """

    owner: OpenClipEncoder

    @property
    @abstractmethod
    def blocks(self) -> nn.ModuleList:
        """The tower's ``transformer.resblocks``."""

    @property
    def n_layers(self) -> int:
        """Number of residual attention blocks in this open_clip tower."""
        return len(self.blocks)

    def attention_hooks(self, inputs: SideInputs, rec: Recording) -> list[Any]:
        """Records every block: ``nn.MultiheadAttention`` blocks by hooks on ``ln_1`` and ``ls_1``, open_clip's
        own ``Attention`` (qk-norm, scaled cosine, head scale, inner norm) by hooks on ``ln_1`` and
        ``ln_inner`` (whose input is the merged head outputs: the site's output, with the head scale as
        its output weight)."""
        blocks: list[Any] = list(self.blocks)  # open_clip blocks are untyped
        _check_blocks(self.blocks, self.label)  # before the first hook, so that nothing is left registered
        handles: list[Any] = []
        for blk in blocks:
            if isinstance(blk.attn, nn.MultiheadAttention):
                handles += self._site_hooks(blk, blk.attn, inputs, rec)
            else:
                handles += self._custom_site_hooks(blk, blk.attn, inputs, rec)
        return handles

    def _custom_site_hooks(self, blk: Any, attn: Any, inputs: SideInputs, rec: Recording) -> list[Any]:
        state: dict[str, Tensor] = {}
        H = int(attn.num_heads)
        (wq, bq), (wk, bk), (wv, bv) = _qkv_weights(attn)
        cosine = attn.logit_scale is not None

        def save_input(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            state["x"] = output

        def save_output(module: nn.Module, args: tuple[Any, ...]) -> None:
            x, merged = state.pop("x"), args[0]
            d = merged.shape[-1] // H
            hs = attn.head_scale
            scale_per_channel = (
                torch.ones(H * d) if hs is None else hs.detach().float().reshape(H, 1).expand(H, d).reshape(-1)
            )
            q_norm: Callable[[Tensor], Tensor]
            k_norm: Callable[[Tensor], Tensor]
            if cosine:
                s = torch.clamp(attn.logit_scale, max=attn.logit_scale_max).exp().detach().float()  # (H, 1, 1)

                def q_norm(q: Tensor) -> Tensor:
                    return functional.normalize(q, dim=-1) * s.to(q.device)

                def k_norm(k: Tensor) -> Tensor:
                    return functional.normalize(k, dim=-1)

                scale = 1.0
            else:
                q_norm, k_norm, scale = attn.ln_q, attn.ln_k, float(attn.scale)
            rec.blocks.append(
                AttentionSite(
                    x_query=x.detach(),
                    x_key=x.detach(),
                    mask=self.attention_mask(inputs, x.shape[0], x.dtype),
                    output=merged,
                    weights=(wq, bq, wk, bk, wv, bv),
                    out_weight=torch.diag(scale_per_channel).to(merged),
                    n_heads=H,
                    scale=scale,
                    q_norm=q_norm,
                    k_norm=k_norm,
                )
            )

        return [blk.ln_1.register_forward_hook(save_input), attn.ln_inner.register_forward_pre_hook(save_output)]

    def _site_hooks(self, blk: Any, attn: nn.MultiheadAttention, inputs: SideInputs, rec: Recording) -> list[Any]:
        state: dict[str, Tensor] = {}

        def save_input(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            state["x"] = output

        def save_output(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = state.pop("x")
            mask = self.attention_mask(inputs, x.shape[0], x.dtype)
            rec.blocks.append(mha_site(attn, x, x, mask, args[0]))

        return [blk.ln_1.register_forward_hook(save_input), blk.ls_1.register_forward_pre_hook(save_output)]

    def attention_blocks(self) -> list[AttentionBlock]:
        """One OpenClipBlock view per residual block, in order."""
        return [OpenClipBlock(blk) for blk in self.blocks]


class OpenClipText(OpenClipTower):
    """open_clip's ``TextTransformer`` (or a ``CLIP``'s own text tower): token + position embeddings,
    causal (or bidirectional) blocks, pooled by ``text_pool_type``, ``ln_final`` and ``text_projection``."""

    modality = "text"
    path_reference = "default"
    aligned_reference = "same_length"

    @property
    def blocks(self) -> nn.ModuleList:
        """The text transformer's residual attention blocks."""
        blocks: nn.ModuleList = self.owner.text_tower.transformer.resblocks
        return blocks

    def prepare(self, raw: list[Any]) -> TextInputs:
        """Tokenises captions with the owner's open_clip tokenizer.

        Args:
            raw: Caption strings.

        Returns:
            TextInputs with (B, T) ids and mask and each caption's (B,) pooled position.

        Raises:
            InputError: The tokenizer gave more positions than the context length.
        """
        owner, texts = self.owner, list(raw)
        t = owner.tokenizer(texts)
        if t.ids.shape[1] > owner.context_length:
            raise InputError(
                f"the tokenizer gave {t.ids.shape[1]} positions but {owner.name} takes at most {owner.context_length}"
            )
        return TextInputs.from_tokenized(t, texts, owner.pool_index(t.ids, t.mask))

    def check(self, inputs: SideInputs) -> TextInputs:
        """Returns `inputs` as TextInputs, or raises InputError (wrong side, or longer than the context length)."""
        if not isinstance(inputs, TextInputs):
            raise InputError(f"{self.label} takes TextInputs, got {type(inputs).__name__}")
        if inputs.ids.shape[1] > self.owner.context_length:
            raise InputError(
                f"{inputs.ids.shape[1]} text positions exceed the context length {self.owner.context_length}"
            )
        return inputs

    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        """Runs the open_clip text transformer up to block `layer`.

        Args:
            inputs: TextInputs with (B, T) ids.
            layer: Block index (0 = token + position embeddings).

        Returns:
            (B, T, W) hidden states at the input of block `layer`.
        """
        layer = self.check_layer(layer)
        t = self.check(inputs)
        tower = self.owner.text_tower
        cast_dtype = tower.transformer.get_cast_dtype()
        S = t.ids.shape[1]
        h: Tensor = tower.token_embedding(t.ids).to(cast_dtype) + tower.positional_embedding[:S].to(cast_dtype)
        mask = self.owner._text_attention(t, t.batch_size, h.dtype)
        for blk in self.blocks[:layer]:
            h = run_block(blk, h, mask)
        return h

    def pooled_block(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> PooledBlock | None:
        """The last block at the pooled position (``text_pool_type``)."""
        t = self.check(inputs)
        mask = self.owner._text_attention(t, rows, dtype)
        idx = broadcast_rows(t.pool_index, rows)
        return block_pooled(self.blocks[-1], idx, mask, self.owner._text_head)

    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        """Runs the open_clip text transformer from block `layer` to the projected embedding.

        Args:
            inputs: The TextInputs `hidden` came from (one row broadcasts).
            hidden: (R, T, W) hidden states at the input of block `layer`.
            layer: Block index.

        Returns:
            (R, D) unnormalised text embeddings, pooled as the model pools (EOS/argmax, first or last token).
        """
        layer = self.check_layer(layer)
        if hidden.dim() != 3:
            raise InputError(f"hidden states must be (R, T, W), got shape {tuple(hidden.shape)}")
        t = self.check(inputs)
        R = hidden.shape[0]
        pooled_blk = self.use_pooled_block(t, hidden, layer)
        blocks = self.blocks[layer:-1] if pooled_blk is not None else self.blocks[layer:]
        mask = self.owner._text_attention(t, R, hidden.dtype)
        h = hidden
        for blk in blocks:
            h = run_block(blk, h, mask)
        if pooled_blk is not None:
            return pooled_blk(h)
        idx = broadcast_rows(t.pool_index, R).to(h.device)
        return self.owner._text_head(h[torch.arange(R, device=h.device), idx])

    def mask(self, inputs: SideInputs, keep: Tensor, *, how: str = "default") -> SideInputs:
        """Apply K coalitions to row 0: ``how`` ``"default"``/``"attention"`` (no position attends to a
        removed token) or ``"pad"`` (the removed token's id becomes 0, exCLIP's filler). See the module
        docstring."""
        return mask_text_players(self.check(inputs), keep, how, self.owner.filler_id())

    def reference(self, inputs: SideInputs, kind: str = "default") -> SideInputs:
        """Builds the BOS + filler + EOS caption reference of `kind` (see bos_filler_eos_reference)."""
        owner = self.owner
        return bos_filler_eos_reference(
            self.check(inputs),
            kind,
            bos_id=owner.bos_id(),
            eos_id=owner.eos_id(),
            filler_id=owner.filler_id(),
            pad_id=CLIP_PAD,
            pool_index=owner.pool_index,
        )

    def attention_mask(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> Tensor | None:
        """Additive text mask for `rows` rows in `dtype`: causal if the tower is, removed tokens blocked as keys."""
        return self.owner._text_attention(self.check(inputs), rows, dtype)

    def project_tokens(self, inputs: SideInputs, hidden: Tensor) -> Tensor:
        # the pooled-row head acts on the last dimension, so it applies to every position alike
        """Final layer norm and text projection applied to every token: (R, T, W) -> (R, T, D)."""
        return self.owner._text_head(hidden)

    def pooled_position(self, inputs: SideInputs, row: int = 0) -> int:
        """Token position whose final hidden state becomes caption `row`'s embedding."""
        return int(self.check(inputs).pool_index[row])


class OpenClipImage(OpenClipTower):
    """open_clip's ``VisionTransformer``: conv patches + CLS, ``ln_pre``, blocks, ``tok`` or ``avg`` pooling,
    ``ln_post`` and ``proj``."""

    modality = "image"
    path_reference = "zeros"
    aligned_reference = "zeros"

    @property
    def visual(self) -> Any:
        """The open_clip VisionTransformer."""
        return self.owner._module.visual

    @property
    def blocks(self) -> nn.ModuleList:
        """The vision transformer's residual attention blocks."""
        blocks: nn.ModuleList = self.visual.transformer.resblocks
        return blocks

    def prepare(self, raw: list[Any]) -> ImageInputs:
        """Runs the owner's image pipeline on raw images.

        Args:
            raw: Images (PIL, arrays or paths, as the pipeline takes them).

        Returns:
            ImageInputs with (B, 3, H, W) pixels in the model dtype and an (H // ph, W // pw) patch grid.
        """
        owner = self.owner
        pixels, transforms, displays = owner.pipeline(list(raw))
        h, w = pixels.shape[-2:]
        ph, pw = owner.patch_size
        return ImageInputs(
            pixels=pixels.to(owner.dtype),
            grid=(h // ph, w // pw),
            n_prefix=owner.n_prefix,
            transforms=transforms,
            display=displays,
        )

    def check(self, inputs: SideInputs) -> ImageInputs:
        """Returns `inputs` as ImageInputs, or raises InputError (wrong side, or pixels not (B, 3, H, W) at size)."""
        if not isinstance(inputs, ImageInputs):
            raise InputError(f"{self.label} takes ImageInputs, got {type(inputs).__name__}")
        px, size = inputs.pixels, self.owner.image_size
        if px.dim() != 4 or px.shape[1] != 3 or tuple(px.shape[-2:]) != size:
            raise InputError(
                f"{self.owner.name} takes pixels of shape (B, 3, {size[0]}, {size[1]}), "
                f"got {tuple(px.shape)}; prepare images with model.tower('image').prepare"
            )
        return inputs

    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        """Runs the open_clip vision transformer up to block `layer`.

        Args:
            inputs: ImageInputs with (B, 3, H, W) pixels (patch removals are applied after the patch embedding).
            layer: Block index (0 = CLS + patch + position embeddings after ln_pre).

        Returns:
            (B, 1 + P, W) hidden states (CLS first) at the input of block `layer`.
        """
        layer = self.check_layer(layer)
        im = self.check(inputs)
        visual, dtype = self.visual, self.owner.dtype
        # conv patch embedding (B, P, W), patch removals applied after it (`dualex.models.parts.patch_tokens`)
        x = patch_tokens(im, lambda px: visual.conv1(px.to(dtype)).flatten(2).transpose(1, 2))
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        h: Tensor = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype))
        for blk in self.blocks[:layer]:
            h = run_block(blk, h, None)
        return h

    def pooled_block(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> PooledBlock | None:
        """The last block at the CLS token (``tok`` pooling); ``avg``-pooled towers read every patch: None."""
        if self.visual.pool_type != "tok":
            return None
        idx = torch.zeros(rows, dtype=torch.long, device=self.device)
        return block_pooled(self.blocks[-1], idx, None, self.owner._image_head)

    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        """Runs the open_clip vision transformer from block `layer` to the projected embedding.

        Args:
            inputs: The ImageInputs `hidden` came from.
            hidden: (R, 1 + P, W) hidden states at the input of block `layer`.
            layer: Block index.

        Returns:
            (R, D) unnormalised image embeddings, pooled as the model pools (CLS or average).
        """
        layer = self.check_layer(layer)
        if hidden.dim() != 3:
            raise InputError(f"hidden states must be (R, T, W), got shape {tuple(hidden.shape)}")
        pooled_blk = self.use_pooled_block(inputs, hidden, layer)
        blocks = self.blocks[layer:-1] if pooled_blk is not None else self.blocks[layer:]
        visual = self.visual
        h = hidden
        for blk in blocks:
            h = run_block(blk, h, None)
        if pooled_blk is not None:
            return pooled_blk(h)
        pooled: Tensor
        if visual.final_ln_after_pool:
            pooled = visual.ln_post(_global_pool(visual, h))
        else:
            pooled = _global_pool(visual, visual.ln_post(h))
        return pooled if visual.proj is None else pooled @ visual.proj

    def mask(self, inputs: SideInputs, keep: Tensor, *, how: str = "default") -> SideInputs:
        """Apply K coalitions to row 0: ``how`` ``"default"``/``"zeros"`` (patch set to 0 in normalised
        space) or ``"black"``."""
        return mask_image_patches(self.check(inputs), keep, how, self.owner.pipeline.black())

    def reference(self, inputs: SideInputs, kind: str = "default") -> SideInputs:
        """Builds the image reference of `kind` ('zeros', 'black', ...; see image_reference)."""
        return image_reference(self.check(inputs), kind, self.owner.pipeline.black())

    def attention_mask(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> Tensor | None:
        """The open_clip vision tower attends everywhere: no mask."""
        return None

    def project_tokens(self, inputs: SideInputs, hidden: Tensor) -> Tensor:
        # the pooled-row head acts on the last dimension, so it applies to every position alike
        """Post layer norm and visual projection applied to every token: (R, T, W) -> (R, T, D)."""
        return self.owner._image_head(hidden)

    def pooled_position(self, inputs: SideInputs, row: int = 0) -> int:
        """The CLS token (position 0); raises UnsupportedModelError for average-pooling towers."""
        if self.visual.pool_type != "tok":
            raise self.missing("CLS token (it average-pools its patches)")
        return 0

    def pooled_queries(self, inputs: SideInputs, row: int = 0) -> tuple[Tensor, Tensor]:
        """CLS for ``tok`` pooling; every patch with weight ``1/P`` for ``avg`` pooling."""
        if self.visual.pool_type == "tok":
            return super().pooled_queries(inputs, row)
        patches = self.check(inputs).players(row)
        return patches, torch.full((int(patches.numel()),), 1.0 / int(patches.numel()))


class OpenClipHead:
    """The similarity head every open_clip model carries: its learnt temperature and, for sigmoid-loss models,
    its bias (mixed into the open_clip `DualEncoder`s ahead of `DualEncoder`)."""

    _module: Any

    @property
    def logit_scale(self) -> float:
        """The learnt temperature exp(logit_scale) that multiplies cosine similarities."""
        return float(self._module.logit_scale.detach().exp().reshape(-1)[0])

    @property
    def logit_bias(self) -> float:
        """The learnt logit bias of sigmoid-loss (SigLIP) models; 0.0 for the others."""
        b = getattr(self._module, "logit_bias", None)
        return 0.0 if b is None else float(b.detach().reshape(-1)[0])


class OpenClipEncoder(OpenClipHead, DualEncoder):
    """An open_clip ViT CLIP behind the `DualEncoder` contract.

    Args:
        module: ``open_clip.CLIP`` or ``open_clip.CustomTextCLIP`` (native ``TextTransformer`` text tower,
            ``VisionTransformer`` image tower).
        tokenizer: open_clip's tokenizer (``open_clip.get_tokenizer(arch)``, a ``SimpleTokenizer``), a
            dualex tokenizer, or None for the CLIP BPE ``SimpleTokenizer`` at the model's context length.
        pipeline: Image preprocessing; default from the model's preprocess config (image size, mean/std,
            interpolation; resize short side + centre crop).
        name: Name reported in explanations.
    """

    family = "openclip"
    n_prefix = 1

    def __init__(
        self,
        module: nn.Module,
        *,
        tokenizer: Any = None,
        pipeline: ImagePipeline | None = None,
        name: str = "openclip",
    ) -> None:
        check_supported(module)
        # The towers are walked by attribute: torch types each submodule as `Tensor | Module` and
        # open_clip ships no type information,
        # so the wrapped module is Any here (`module` returns it as a Module).
        self._module: Any = module.eval()
        for p in self._module.parameters():
            p.requires_grad_(False)
        self.tokenizer: TokenizerLike = self._text_tokenizer(tokenizer)
        self.pipeline = pipeline or pipeline_from_module(module)
        self.name = name
        self.set_towers(OpenClipText(self), OpenClipImage(self))

    # ------------------------------------------------------------------ structure
    @property
    def module(self) -> nn.Module:
        """The wrapped open_clip model."""
        return cast(nn.Module, self._module)

    @property
    def text_tower(self) -> Any:
        """The module holding ``token_embedding``, ``transformer``, ``ln_final``, ``text_projection``."""
        text = getattr(self._module, "text", None)
        return self._module if text is None else text

    @property
    def text_pool_type(self) -> str:
        """How the text tower pools: 'argmax' (EOS via the largest id), 'first', 'last' or 'eos'."""
        text = getattr(self._module, "text", None)
        return str(text.pool_type if text is not None else self._module.text_pool_type)

    @property
    def text_eos_id(self) -> int | None:
        """The end-of-text id the text tower pools at, or None when it does not pool by id."""
        text = getattr(self._module, "text", None)
        return text.eos_id if text is not None else getattr(self._module, "text_eos_id", None)

    @property
    def causal_text(self) -> bool:
        """Whether the text tower uses a causal attention mask."""
        return getattr(self.text_tower, "attn_mask", None) is not None

    @property
    def text_pad_mask_id(self) -> int | None:
        """Id whose keys the tower masks itself (bidirectional ``use_pad_mask`` towers), else None."""
        text = getattr(self._module, "text", None)
        return text.pad_id if text is not None and getattr(text, "use_pad_mask", False) else None

    @property
    def context_length(self) -> int:
        """Longest caption the text tower takes, in tokens."""
        return int(self.text_tower.positional_embedding.shape[0])

    @property
    def patch_size(self) -> tuple[int, int]:
        """(height, width) of one image patch, in pixels."""
        p = self._module.visual.patch_size
        return (int(p[0]), int(p[1])) if isinstance(p, (tuple, list)) else (int(p), int(p))

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the input images the vision tower takes, in pixels."""
        s = self._module.visual.image_size
        return (int(s[0]), int(s[1])) if isinstance(s, (tuple, list)) else (int(s), int(s))

    # ------------------------------------------------------------------ tokenising and preprocessing
    def _text_tokenizer(self, tokenizer: Any) -> TokenizerLike:
        ctx = self.context_length
        trim = self.causal_text and self.text_pool_type in ("argmax", "eos") and self.text_pad_mask_id is None
        if tokenizer is None:
            from open_clip import SimpleTokenizer

            tokenizer = SimpleTokenizer(context_length=ctx)
        if isinstance(tokenizer, (OpenClipTokenizer, HFTokenizer, WordTokenizer)):
            return tokenizer
        if hasattr(tokenizer, "sot_token_id"):  # open_clip SimpleTokenizer (CLIP BPE)
            return OpenClipTokenizer(tokenizer, context_length=ctx, trim=trim)
        if hasattr(tokenizer, "convert_ids_to_tokens"):  # a transformers tokenizer
            return HFTokenizer(tokenizer, padding="max_length", max_length=ctx, keep_pad_attention=True)
        if type(tokenizer).__module__.startswith("open_clip"):
            raise InputError(
                f"open_clip's {type(tokenizer).__name__} is not supported directly; pass its transformers "
                f"tokenizer wrapped as dualex.models.tokenize.HFTokenizer(tok, padding='max_length', max_length={ctx})"
            )
        if not callable(tokenizer):
            raise InputError("tokenizer must be callable (texts -> dualex.models.tokenize.Tokenized)")
        return cast(TokenizerLike, tokenizer)  # a user callable; the contract is texts -> Tokenized

    def bos_id(self) -> int:
        """The tokenizer's start-of-text id (CLIP's 49406 if it names none)."""
        return int(getattr(self.tokenizer, "sot", getattr(self.tokenizer, "bos", CLIP_BOS)))

    def eos_id(self) -> int:
        """The tokenizer's end-of-text id (CLIP's 49407 if it names none)."""
        return int(getattr(self.tokenizer, "eot", getattr(self.tokenizer, "eos", CLIP_EOS)))

    def filler_id(self) -> int:
        """exCLIP's reference and ``how="pad"`` filler: id 0 (``"!"`` in CLIP BPE)."""
        return CLIP_FILLER

    def pool_index(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Position the text tower pools at, ``(B,)``, following ``text_pool_type``."""
        B, S = ids.shape
        pool = self.text_pool_type
        if pool == "argmax":
            return ids.argmax(-1).long()
        if pool == "eos":
            assert self.text_eos_id is not None, "open_clip text towers pooled at EOS carry eos_id"
            hit = ids == self.text_eos_id
            if not bool(hit.any(-1).all()):
                raise InputError(
                    f"a caption has no end-of-text token (id {self.text_eos_id}) after tokenisation; "
                    "is the tokenizer the model's own?"
                )
            return hit.int().argmax(-1).long()
        if pool == "first":
            return torch.zeros(B, dtype=torch.long, device=ids.device)
        return torch.full((B,), S - 1, dtype=torch.long, device=ids.device)

    # ------------------------------------------------------------------ towers
    def _text_attention(self, inputs: TextInputs, R: int, dtype: torch.dtype) -> Tensor | None:
        """Additive mask ``(R or 1, 1, S, S)``: causal (if the tower is) + keys of removed players."""
        blocked = (inputs.mask == 0) & ~inputs.special.bool()
        if self.text_pad_mask_id is not None:
            blocked = blocked | (inputs.ids == self.text_pad_mask_id)
        S = inputs.ids.shape[1]
        if not bool(blocked.any()):
            if not self.causal_text:
                return None
            return additive_mask(torch.ones(1, S, dtype=torch.long, device=inputs.ids.device), causal=True, dtype=dtype)
        return additive_mask(broadcast_rows((~blocked).long(), R), causal=self.causal_text, dtype=dtype)

    def _text_head(self, pooled: Tensor) -> Tensor:
        """``ln_final`` and ``text_projection`` on pooled rows ``(R, W)`` (or any ``(..., W)``)."""
        tower: Any = self.text_tower
        out: Tensor = tower.ln_final(pooled)
        proj = tower.text_projection
        if proj is None:
            return out
        projected: Tensor = proj(out) if isinstance(proj, nn.Module) else out @ proj
        return projected

    def _image_head(self, pooled: Tensor) -> Tensor:
        """``ln_post`` and ``proj`` on the CLS row ``(R, W)`` or any ``(..., W)`` (for ``tok`` pooling the order of
        the two is moot)."""
        visual: Any = self._module.visual
        out: Tensor = visual.ln_post(pooled)
        return out if visual.proj is None else out @ visual.proj

    # ------------------------------------------------------------------ training and saving
    @property
    def contrastive_loss(self) -> Literal["softmax", "sigmoid"] | None:
        """'sigmoid' when the model has a logit bias (SigLIP), else 'softmax'."""
        return "sigmoid" if getattr(self._module, "logit_bias", None) is not None else "softmax"

    def architecture(self, arch: str | None = None) -> str:
        """The open_clip architecture name (given, or from an ``openclip:ARCH[@...]`` model name)."""
        if arch:
            return arch
        name = str(self.name)
        if name.startswith("openclip:"):
            return name.split(":", 1)[1].split("@", 1)[0]
        raise InputError(
            f"cannot tell the open_clip architecture of {name!r}, which is needed to load saved weights; "
            "pass openclip_arch='ViT-B-32' (or load the model as 'openclip:ARCH@...')"
        )

    def check_saveable(self, *, arch: str | None = None) -> None:
        """Raises InputError unless the open_clip architecture is known (`arch`, or an "openclip:ARCH" name)."""
        self.architecture(arch)

    def save_pretrained(self, directory: str | Path, *, arch: str | None = None) -> str:
        """The state dict as ``DIR/open_clip_model.safetensors``; load it as ``openclip:ARCH@FILE``."""
        from safetensors.torch import save_file

        name = self.architecture(arch)
        out = Path(directory).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone().contiguous() for k, v in self._module.state_dict().items()}
        save_file(state, str(out / OPENCLIP_FILE))
        return f"openclip:{name}@{out / OPENCLIP_FILE}"


OPENCLIP_FILE = "open_clip_model.safetensors"


class OpenClipBlock(AttentionBlock):
    """An open_clip residual block (``ResidualAttentionBlock`` or ``CustomResidualAttentionBlock``)."""

    def __init__(self, block: nn.Module) -> None:
        # open_clip ships no type information: the block's submodules are untyped here.
        attn: Any = block.attn
        self.block: Any = block
        self.attn: Any = attn
        self.n_heads = int(attn.num_heads)
        self.mha = isinstance(self.attn, nn.MultiheadAttention)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Layer-norms x and projects it to per-head queries, keys and values.

        Handles nn.MultiheadAttention blocks and open_clip's own Attention (scaled-cosine or
        qk-norm variants normalise q and k here).

        Args:
            x: (R, T, W) hidden states at the block's input.

        Returns:
            Three (R, H, T, W / H) tensors: queries, keys, values.
        """
        y = self.block.ln_1(x)
        a, H = self.attn, self.n_heads
        if self.mha:
            qw, qb, kw, kb, vw, vb = mha_weights(a)
            return (
                split_heads(functional.linear(y, qw, qb), H),
                split_heads(functional.linear(y, kw, kb), H),
                split_heads(functional.linear(y, vw, vb), H),
            )
        q, k, v = (split_heads(t, H) for t in functional.linear(y, a.in_proj_weight, a.in_proj_bias).chunk(3, dim=-1))
        if a.logit_scale is not None:
            scale = torch.clamp(a.logit_scale, max=a.logit_scale_max).exp()
            return functional.normalize(q, dim=-1) * scale, functional.normalize(k, dim=-1), v
        q_normed: Tensor = a.ln_q(q)
        k_normed: Tensor = a.ln_k(k)
        return q_normed, k_normed, v

    def logits(self, q: Tensor, k: Tensor) -> Tensor:
        """Attention logits (R, H, T, T): q k^T times the block's scale (1 for scaled-cosine attention)."""
        if self.mha:
            scale = float(self.attn.head_dim) ** -0.5
        else:
            scale = 1.0 if self.attn.logit_scale is not None else float(self.attn.scale)
        return torch.matmul(q * scale, k.transpose(-1, -2))

    def attention_branch(self, o: Tensor) -> Tensor:
        """Merges heads, projects out, applies layer scale (and inner norms if any): (R, H, T, d) -> (R, T, W)."""
        a = self.attn
        out: Tensor
        if self.mha:
            out = self.block.ls_1(functional.linear(merge_heads(o), a.out_proj.weight, a.out_proj.bias))
            return out
        if a.head_scale is not None:
            o = o * a.head_scale
        out = self.block.ls_1(self.block.ln_attn(a.out_proj(a.ln_inner(merge_heads(o)))))
        return out

    def mlp_branch(self, x: Tensor) -> Tensor:
        """The block's layer-scaled MLP branch on ln_2(x); (R, T, W) -> (R, T, W), residual not added."""
        out: Tensor = self.block.ls_2(self.block.mlp(self.block.ln_2(x)))
        return out


def _global_pool(visual: Any, h: Tensor) -> Tensor:
    return h[:, 1:].mean(dim=1) if visual.pool_type == "avg" else h[:, 0]


def plain_vit(module: Any) -> bool:
    """True for open_clip models with a plain ViT image tower (no attentional pooler) and a native text
    tower without CoCa's CLS; the others go to `dualex.models.openclip_towers`."""
    from open_clip.transformer import VisionTransformer

    visual = getattr(module, "visual", None)
    text = getattr(module, "text", None)
    coca_text = text is not None and getattr(text, "cls_emb", None) is not None
    hf_text = type(text).__name__ == "HFTextEncoder"
    return isinstance(visual, VisionTransformer) and visual.attn_pool is None and not coca_text and not hf_text


def check_supported(module: nn.Module) -> None:
    """Raise `UnsupportedModelError` unless ``module`` is an open_clip ViT CLIP with a native text tower."""
    from open_clip.transformer import TextTransformer, VisionTransformer

    kind = type(module).__name__
    for attr in ("visual", "logit_scale"):
        if not hasattr(module, attr):
            raise UnsupportedModelError(f"{kind} is not an open_clip CLIP model (no .{attr})")
    visual: Any = module.visual  # open_clip's tower, untyped
    if not isinstance(visual, VisionTransformer):
        raise UnsupportedModelError(
            f"the image tower of this {kind} is a {type(visual).__name__}; dualex's openclip adapter supports "
            "open_clip's own VisionTransformer only (not timm towers such as open_clip SigLIP, nor ResNets)"
        )
    if visual.attn_pool is not None:
        raise UnsupportedModelError("open_clip image towers with attentional pooling (CoCa) are not supported")
    if visual.pool_type not in ("tok", "avg"):
        raise UnsupportedModelError(f"image pool type {visual.pool_type!r} gives no embedding; use 'tok' or 'avg'")
    text = getattr(module, "text", None)
    if text is not None:
        if not isinstance(text, TextTransformer):
            raise UnsupportedModelError(
                f"the text tower of this {kind} is a {type(text).__name__}; dualex's openclip adapter supports "
                "open_clip's own TextTransformer only (not Hugging Face text towers)"
            )
        if text.cls_emb is not None:
            raise UnsupportedModelError("text towers with an appended CLS embedding (CoCa) are not supported")
        pool = text.pool_type
        blocks = text.transformer.resblocks
    else:
        if not hasattr(module, "token_embedding"):
            raise UnsupportedModelError(f"{kind} has no text tower that dualex recognises")
        clip: Any = module  # open_clip's CLIP, untyped
        pool = clip.text_pool_type
        blocks = clip.transformer.resblocks
    if pool not in TEXT_POOLS:
        raise UnsupportedModelError(f"text pool type {pool!r} is not supported; one of {', '.join(TEXT_POOLS)}")
    _check_blocks(visual.transformer.resblocks, "image")
    _check_blocks(blocks, "text")


def pipeline_from_module(module: nn.Module) -> ImagePipeline:
    """Image pipeline from open_clip's preprocess config of ``module`` (size, mean/std, resize mode)."""
    from open_clip import get_model_preprocess_cfg

    cfg = dict(get_model_preprocess_cfg(module))
    visual: Any = module.visual  # open_clip's tower, untyped
    size = cfg.get("size", visual.image_size)
    h, w = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mean = tuple(cfg.get("mean") or CLIP_MEAN)
    std = tuple(cfg.get("std") or CLIP_STD)
    resample = _RESAMPLE.get(str(cfg.get("interpolation", "bicubic")), Image.Resampling.BICUBIC)
    mode = cfg.get("resize_mode", "shortest")
    if mode == "squash":
        return ImagePipeline(size=(h, w), crop=(h, w), mean=mean, std=std, mode="resize", resample=resample)
    if mode not in ("shortest", None):
        warnings.warn(
            f"open_clip resize mode {mode!r} is not reproduced; dualex resizes the short side and centre-crops",
            stacklevel=2,
        )
    return ImagePipeline(size=max(h, w), crop=(h, w), mean=mean, std=std, resample=resample)


# ---------------------------------------------------------------------------------------------- loading
def _missing_weights(arch: str, tag: str) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"the weights of open_clip model {arch} ({tag}) are not on this machine, and dualex does not download "
        f"them. Download the checkpoint once where the internet is reachable (e.g. "
        f"open_clip.create_model('{arch}', pretrained='{tag}') fills the cache), copy the file here and load "
        f"it by path: 'openclip:{arch}@/path/to/open_clip_pytorch_model.bin'"
    )


def cached_checkpoint(cfg: dict[str, Any]) -> str | None:
    """The local file of an open_clip pretrained config if it is already cached, else None (no network)."""
    if cfg.get("file") and Path(cfg["file"]).is_file():
        return str(cfg["file"])
    hub = cfg.get("hf_hub") or ""
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)  # "org/name/" -> ("org/name", ""): open_clip's default file
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str) and Path(hit).is_file():
                return hit
    url = cfg.get("url") or ""
    if url:
        path = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


def _create(arch: str, pretrained: str | None, **kw: Any) -> nn.Module:
    import open_clip

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            module: nn.Module = open_clip.create_model(arch, pretrained=pretrained, device="cpu", **kw)
            return module
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        where = f" from {pretrained}" if pretrained else ""
        raise ModelNotAvailableError(f"cannot build open_clip model {arch}{where}: {exc}") from None


def _tokenizer_for(arch: str) -> Any:
    import open_clip

    try:
        with hub_offline_now():  # a tokenizer on the hub is read from the cache only: never a hang
            return open_clip.get_tokenizer(arch)
    except Exception as exc:  # an HF tokenizer that is not cached
        raise ModelNotAvailableError(
            f"the tokenizer of open_clip model {arch} is not available offline ({type(exc).__name__}); pass a "
            f"local one: dualex.load('openclip:{arch}@...', tokenizer=tok) or dualex.wrap(model, tokenizer=tok)"
        ) from None


@register_loader("openclip")
def load_openclip(
    spec: str, *, device: torch.device, dtype: torch.dtype | None = None, tokenizer: Any = None
) -> DualEncoder:
    """Load ``openclip:ARCH@PRETRAINED``: a cached tag, a checkpoint file, or ``random`` (random weights).

    ``@random`` initialises with seed 0 and ``@random:SEED`` with that seed (torch's generator, forked so
    the caller's random state is left alone), so two processes of one torch version get the same weights;
    `DualEncoder.weights_seed` holds the seed (and every explanation's ``params["weights_seed"]``).

    ``tokenizer`` replaces the architecture's own (needed where that lives on the hub: SigLIP, CLIPA,
    worldwide, HF text towers). Timm, ResNet and CoCa towers go to `dualex.models.openclip_towers`.

    Raises:
        InputError: no or an empty PRETRAINED part (random weights only on request: ``@random``).
        ModelNotAvailableError: unknown architecture or tag, missing file, or weights not cached.
        UnsupportedModelError: the architecture has a tower the adapter does not support.
    """
    import open_clip

    arch, at, pretrained_raw = spec.partition("@")
    arch, pretrained = arch.strip(), pretrained_raw.strip() or None
    known = open_clip.list_models()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=4)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see open_clip.list_models()"
        raise ModelNotAvailableError(f"open_clip has no architecture {arch!r}{hint}")
    if pretrained is None:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        what = f"'openclip:{spec}' has an empty pretrained tag" if at else f"'openclip:{spec}' names no weights"
        raise InputError(
            f"{what}: use 'openclip:{arch}@TAG' (tags: {', '.join(tags) or 'none'}; the checkpoint must be in "
            f"the local cache), 'openclip:{arch}@/path/to/open_clip_pytorch_model.bin', or "
            f"'openclip:{arch}@random' for random weights"
        )
    kw: dict[str, Any] = {}
    tag_cfg: dict[str, Any] = {}
    seed = random_weights_seed(f"@{pretrained}")
    if seed is not None:
        checkpoint = None
    elif Path(pretrained).expanduser().is_file():
        checkpoint = str(Path(pretrained).expanduser())
    elif open_clip.get_pretrained_cfg(arch, pretrained):
        tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained)
        checkpoint = cached_checkpoint(tag_cfg)
        if checkpoint is None:
            raise _missing_weights(arch, pretrained)
        if tag_cfg.get("quick_gelu") and not arch.endswith("quickgelu"):
            kw["force_quick_gelu"] = True  # the weights were trained with QuickGELU
    elif any(c in pretrained for c in "/\\.") or pretrained.startswith("~"):
        raise ModelNotAvailableError(f"checkpoint file not found: {pretrained}")
    else:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        listed = ", ".join(tags) if tags else "none"
        raise ModelNotAvailableError(
            f"open_clip model {arch} has no pretrained tag {pretrained!r} (known tags: {listed}); "
            f"or pass a checkpoint file: 'openclip:{arch}@/path/to/open_clip_pytorch_model.bin'"
        )
    tok = tokenizer if tokenizer is not None else _tokenizer_for(arch)  # before the build: a missing one fails fast
    if seed is None:
        module = _create(arch, checkpoint, **kw)
    else:  # seeded initialisation on CPU: the same weights in every process (one torch version)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = _create(arch, None, **kw)
    if tag_cfg:
        from open_clip import get_model_preprocess_cfg, set_model_preprocess_cfg

        pp = dict(get_model_preprocess_cfg(module))
        pp.update({k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg})
        pp.setdefault("mean", CLIP_MEAN)
        pp.setdefault("std", CLIP_STD)
        set_model_preprocess_cfg(module, pp)
    if dtype is not None:
        module = module.to(dtype)
    if not plain_vit(module):  # timm, ResNet and CoCa towers: dualex.models.openclip_towers
        out = wrap(module, tokenizer=tok, name=f"openclip:{spec}")
    else:
        out = OpenClipEncoder(module, tokenizer=tok, name=f"openclip:{spec}")
    out.weights_seed = seed
    return out.to(device)


@register_wrapper
def wrap_openclip(module: Any, **kw: Any) -> DualEncoder | None:
    """``dualex.wrap`` for ``open_clip.CLIP`` / ``CustomTextCLIP`` (keywords: ``tokenizer``, ``pipeline``, ``name``)."""
    if not any(c.__module__.startswith("open_clip") for c in type(module).__mro__):
        return None
    import open_clip

    if not isinstance(module, (open_clip.CLIP, open_clip.CustomTextCLIP)) or not plain_vit(module):
        return None  # CoCa, timm and ResNet towers: dualex.models.openclip_towers
    name = kw.pop("name", f"openclip:{type(module).__name__}")
    return OpenClipEncoder(module, name=name, **kw)
