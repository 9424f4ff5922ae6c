"""Adapters for transformers SigLIP (``SiglipModel``) and SigLIP-2 NaFlex (``Siglip2Model``).

Both families share a text tower that differs from CLIP's in three ways that matter for explanations:

* it is **bidirectional** and was trained **without an attention mask**: captions are padded to 64
  tokens and every position, padding included, is attended;
* it has **no BOS** and pools at the **last position** (a padding token for short captions), then
  applies a linear ``head``;
* for SigLIP (v1) the padding id equals the end-of-text id.

dualex therefore attends to every text position (the mask is all ones) and pools at ``S - 1``, exactly
like the model's own ``get_text_features(input_ids)``. Removing a caption token ("masking") and the
text references are defined for that setting; see `SiglipBase.mask` and `SiglipBase.text_reference`.

The image towers have no CLS token (``n_prefix = 0``): all hidden positions are patches, pooled by a
multi-head attention head (MAP) after ``post_layernorm``. SigLIP-2 NaFlex models take patchified pixels
``(B, N, p·p·C)`` with ``pixel_attention_mask`` and ``spatial_shapes``; dualex keeps the image as a
``(B, 3, H, W)`` canvas on a fixed square grid (so masking a patch still zeroes a pixel block, and boxes
and overlays work as for CLIP) and patchifies it when the tower runs.

The score is the model's own pre-sigmoid logit ``exp(t) · cos + b`` (never the sigmoid).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Self

import torch
from PIL import Image
from torch import Tensor

from dualex.errors import InputError, UnsupportedModelError
from dualex.models.attention import mha_weights
from dualex.models.base import ImageInputs, PooledBlock, SideInputs, TextInputs
from dualex.models.hf import (
    HFDualEncoder,
    HFImageTower,
    HFTextTower,
    _from_pretrained,
    additive_mask,
    broadcast_rows,
    encoder_layer_pooled,
    load_tokenizer,
    pipeline_config,
    read_preprocessor_config,
    register_hf,
)
from dualex.models.parts import masked_pixels, patch_tokens
from dualex.models.preprocess import HALF, ImagePipeline
from dualex.models.tokenize import HFTokenizer, TokenizerLike

SIGLIP_TEXT_LENGTH = 64
"""Sequence length SigLIP and SigLIP-2 text towers were trained with (``padding="max_length"``)."""


def patchify(pixels: Tensor, patch_size: int) -> Tensor:
    """Cut images into flattened patches as the SigLIP-2 image processor does.

    Args:
        pixels: Normalised pixels ``(B, C, H, W)``; H and W are multiples of ``patch_size``.
        patch_size: Patch side p in pixels.

    Returns:
        ``(B, (H/p)·(W/p), p·p·C)``: patches in row-major order, each flattened as (row, column,
        channel) with the channel fastest (the layout ``Siglip2ImageProcessor`` produces).
    """
    B, C, H, W = pixels.shape
    gh, gw = H // patch_size, W // patch_size
    x = pixels[:, :, : gh * patch_size, : gw * patch_size]
    x = x.reshape(B, C, gh, patch_size, gw, patch_size).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, gh * gw, patch_size * patch_size * C)


def _bidirectional_mask(mask: Tensor | None, R: int, dtype: torch.dtype) -> Tensor | None:
    """Additive key mask ``(R, 1, T, T)`` for a bidirectional tower, or None when all positions attend."""
    if mask is None or bool(mask.bool().all()):
        return None
    return additive_mask(broadcast_rows(mask, R), causal=False, dtype=dtype)


def _pil_resample(value: Any, default: int) -> int:
    """A PIL resampling filter from a processor's ``resample`` entry (an int code), else ``default``."""
    if isinstance(value, int) and value in {int(r) for r in Image.Resampling}:
        return int(value)
    return default


class SiglipText(HFTextTower):
    """SigLIP's bidirectional text tower: every position attended, pooled at the last one, then ``head``."""

    owner: SiglipBase

    def prepare(self, raw: list[Any]) -> TextInputs:
        """Tokenise; every position is attended (SigLIP was trained without an attention mask)."""
        owner, texts = self.owner, list(raw)
        t = owner.tokenizer(texts)
        S = int(t.ids.shape[1])
        if int(owner.text_config.max_position_embeddings) < S:
            raise InputError(
                f"the tokenizer produced {S} positions but the text tower of {owner.name} takes at most "
                f"{owner.text_config.max_position_embeddings}; tokenize with max_length="
                f"{owner.text_length}"
            )
        return TextInputs(
            ids=t.ids,
            mask=torch.ones_like(t.ids),
            tokens=t.tokens,
            special=t.special,
            pool_index=owner.pool_index(t.ids, t.mask),
            texts=texts,
            offsets=t.offsets,
        )

    def _head(self, h: Tensor) -> Tensor:
        out: Tensor = self.model.head(self.model.final_layer_norm(h))
        return out

    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        """Runs the SigLIP text tower up to block `layer`.

        Args:
            inputs: TextInputs with (B, T) ids (padded to the model's text length).
            layer: Block index (0 = token + position embeddings).

        Returns:
            (B, T, W) hidden states at the input of block `layer`.
        """
        layer = self.check_layer(layer)
        t = self.check(inputs)
        tm = self.model
        h: Tensor = tm.embeddings(input_ids=t.ids)
        mask = _bidirectional_mask(t.mask, h.shape[0], h.dtype)
        for blk in tm.encoder.layers[:layer]:
            h = blk(h, mask)
        return h

    def pooled_block(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> PooledBlock | None:
        """The last block at the last position."""
        t = self.check(inputs)
        mask = _bidirectional_mask(t.mask, rows, dtype)
        idx = broadcast_rows(t.pool_index, rows)
        return encoder_layer_pooled(self.model.encoder.layers[-1], idx, mask, self._head)

    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        """Runs the SigLIP text tower from block `layer` to the projected embedding.

        Args:
            inputs: The TextInputs `hidden` came from (one row broadcasts).
            hidden: (R, T, W) hidden states at the input of block `layer`.
            layer: Block index.

        Returns:
            (R, D) unnormalised text embeddings, pooled at the last position.
        """
        layer = self.check_layer(layer)
        t = self.check(inputs)
        R = hidden.shape[0]
        layers = self.model.encoder.layers
        mask = _bidirectional_mask(t.mask, R, hidden.dtype)
        pooled = self.use_pooled_block(t, hidden, layer)
        h = hidden
        for blk in layers[layer:-1] if pooled is not None else layers[layer:]:
            h = blk(h, mask)
        if pooled is not None:
            return pooled(h)
        idx = broadcast_rows(t.pool_index, R).to(h.device)
        return self._head(h[torch.arange(R, device=h.device), idx])

    def attention_mask(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> Tensor | None:
        """Bidirectional additive padding mask (rows, 1, T, T) in `dtype`, or None when every position attends."""
        return _bidirectional_mask(self.check(inputs).mask, rows, dtype)

    def project_tokens(self, inputs: SideInputs, hidden: Tensor) -> Tensor:
        """``head(final_layer_norm(h))`` per position."""
        return self._head(hidden)

    def mask(self, inputs: SideInputs, keep: Tensor, *, how: str = "default") -> SideInputs:
        """Apply K coalitions ``keep`` ``(K, n_players)`` to row 0 of ``inputs``, ``how``:

        ``"default"`` / ``"attention"``: the removed tokens get attention mask 0, ids unchanged, while
            end-of-text, padding and the pooled last position stay attended (FIxLIP's game). SigLIP
            never saw a mask in training, but no position moves.
        ``"drop"``: the removed tokens are deleted and the caption is re-padded to the same length,
            i.e. exactly what the model sees for the shorter caption (in distribution; later tokens
            shift position). Dropping every token gives the ``"default"`` reference.
        ``"pad"``: the removed tokens are replaced by `SiglipBase.filler_id` (the ``"same_length"`` filler).
        """
        if how != "drop":
            return super().mask(inputs, keep, how=how)
        t, owner = self.check(inputs), self.owner
        keep = keep.to(torch.bool)
        if keep.dim() == 1:
            keep = keep[None]
        players = t.players(0)
        if keep.shape[1] != players.numel():
            raise InputError(f"text coalitions need {players.numel()} columns, got {keep.shape[1]}")
        out = t.select([0] * keep.shape[0])
        row_keep = torch.ones(keep.shape[0], t.ids.shape[1], dtype=torch.bool)
        row_keep[:, players] = keep.cpu()
        out.ids = torch.stack([owner._compact(t.ids[0], row_keep[k]) for k in range(keep.shape[0])])
        out.special = torch.stack([owner._compact(t.special[0], row_keep[k], fill=True) for k in range(keep.shape[0])])
        out.mask = torch.ones_like(out.ids)
        rows = range(keep.shape[0])
        out.tokens = [owner._compact_list(t.tokens[0], row_keep[k], "<pad>") for k in rows]
        out.offsets = [owner._compact_list(t.offsets[0], row_keep[k], None) for k in rows]
        out.pool_index = owner.pool_index(out.ids, out.mask)
        return out


class SiglipImage(HFImageTower):
    """SigLIP's ViT: no CLS (all positions are patches), ``post_layernorm``, then the MAP head."""

    owner: SiglipBase

    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        """Runs the SigLIP vision tower up to block `layer`.

        Args:
            inputs: ImageInputs with (B, 3, H, W) pixels.
            layer: Block index (0 = patch + position embeddings; SigLIP has no CLS token).

        Returns:
            (B, P, W) hidden states at the input of block `layer`.
        """
        layer = self.check_layer(layer)
        im = self.check(inputs)
        h = self.owner.embed_image(im)
        mask = _bidirectional_mask(self.owner.image_attention(im), h.shape[0], h.dtype)
        for blk in self.model.encoder.layers[:layer]:
            h = blk(h, mask)
        return h

    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        """The MAP head reads every row of the last block: no pooled block (its structured case is a split
        at the head's input, `pooled_head`; see the README, ij section, "Cost")."""
        layer = self.check_layer(layer)
        im = self.check(inputs)
        R = hidden.shape[0]
        vm = self.model
        keys = self.owner.image_attention(im)
        mask = _bidirectional_mask(keys, R, hidden.dtype)
        h = hidden
        for blk in vm.encoder.layers[layer:]:
            h = blk(h, mask)
        h = vm.post_layernorm(h)
        return self.owner.pool_image(h, None if mask is None or keys is None else broadcast_rows(keys, R))

    def pooled_head(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> PooledBlock | None:
        """``post_layernorm`` + MAP head: one probe query over every row of the last block."""
        im = self.check(inputs)
        vm = self.model
        head: Any = vm.head
        attn: Any = head.attention  # nn.MultiheadAttention, batch first
        H = int(attn.num_heads)
        d = int(attn.head_dim)
        wq, wk, wv = attn.in_proj_weight.chunk(3, dim=0)
        bq, bk, bv = attn.in_proj_bias.chunk(3)
        probe_q: Tensor = (torch.nn.functional.linear(head.probe.reshape(-1), wq, bq) * float(d) ** -0.5).reshape(H, d)

        def keys_values(h: Tensor) -> tuple[Tensor, Tensor]:
            x = vm.post_layernorm(h)
            k = torch.nn.functional.linear(x, wk, bk)
            v = torch.nn.functional.linear(x, wv, bv)
            return (
                k.reshape(*k.shape[:-1], H, d).transpose(-2, -3),
                v.reshape(*v.shape[:-1], H, d).transpose(-2, -3),
            )

        def query(hp: Tensor) -> Tensor:
            return probe_q.expand(*hp.shape[:-1], H, d)

        def finish(hp: Tensor, a: Tensor) -> Tensor:
            y = torch.nn.functional.linear(a.flatten(-2), attn.out_proj.weight, attn.out_proj.bias)
            out: Tensor = y + head.mlp(head.layernorm(y))
            return out

        keys = self.owner.image_attention(im)
        mask = None
        if keys is not None:
            blocked = ~broadcast_rows(keys, rows).bool()
            mask = torch.zeros(blocked.shape, dtype=dtype, device=blocked.device).masked_fill(
                blocked, torch.finfo(dtype).min
            )
        idx = torch.zeros(rows, dtype=torch.long, device=self.device)
        return PooledBlock(keys_values, query, finish, idx, mask)

    def attention_mask(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> Tensor | None:
        """Bidirectional additive mask (rows, 1, T, T) over real patches, or None when every patch is real."""
        return _bidirectional_mask(self.owner.image_attention(self.check(inputs)), rows, dtype)

    def project_tokens(self, inputs: SideInputs, hidden: Tensor) -> Tensor:
        """Each position's value through the MAP head.

        The head pools ``o = out_proj(Σ_t a_t v_t)`` and returns ``o + mlp(layernorm(o))``; position t's
        dense feature replaces the attention-weighted sum by its own value ``v_t`` (MaskCLIP's reading of
        an attention-pooling head, as for CLIP's ResNet towers).
        """
        vm = self.model
        head = vm.head
        x = vm.post_layernorm(hidden)
        _, _, _, _, vw, vb = mha_weights(head.attention)
        o = head.attention.out_proj(torch.nn.functional.linear(x, vw, vb))
        image_tokens: Tensor = o + head.mlp(head.layernorm(o))
        return image_tokens

    def pooled_position(self, inputs: SideInputs, row: int = 0) -> int:
        """SigLIP pools with an attention (MAP) head, not a CLS token: raises UnsupportedModelError."""
        raise self.missing("CLS token: it pools with an attention head")


class Siglip2Image(SiglipImage):
    """SigLIP-2 NaFlex's ViT on a fixed square grid (``extra``: ``spatial_shapes``, ``pixel_attention_mask``)."""

    def prepare(self, raw: list[Any]) -> ImageInputs:
        """Prepares images as SigLIP's tower does and adds the NaFlex extras SigLIP2 needs.

        Args:
            raw: Images (PIL, arrays or paths).

        Returns:
            ImageInputs whose `extra` holds (B, 2) `spatial_shapes` (grid rows, cols) and a (B, P)
            all-ones `pixel_attention_mask`.
        """
        inputs = super().prepare(raw)
        B = inputs.batch_size
        rows, cols = inputs.grid
        inputs.extra = {
            "spatial_shapes": torch.tensor([[rows, cols]] * B, dtype=torch.long),
            "pixel_attention_mask": torch.ones(B, rows * cols, dtype=torch.long),
        }
        return inputs


class SiglipBase(HFDualEncoder):
    """Shared parts of the SigLIP and SigLIP-2 adapters: the text tower, masking, references, score.

    Args:
        module: A transformers ``SiglipModel`` or ``Siglip2Model``.
        tokenizer: A transformers tokenizer (wrapped to pad to 64 tokens, as SigLIP was trained) or any
            callable returning `dualex.models.tokenize.Tokenized`.
        pipeline: Image preprocessing (default: plain resize, mean = std = 0.5).
        name: Model name for reports.
        text_filler: Token id that stands in for a caption token in the ``"same_length"`` reference and
            in ``mask(..., how="pad")``. Default: the tokenizer's single token for ``"!"`` (exCLIP's
            filler), else the padding id if it differs from the end-of-text id, else id 0.
    """

    family = "hf-siglip"
    causal_text = False
    n_prefix = 0
    text_tower_type = SiglipText
    image_tower_type = SiglipImage

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        tokenizer: TokenizerLike | None = None,
        pipeline: ImagePipeline | None = None,
        name: str = "hf",
        text_filler: int | None = None,
    ) -> None:
        vision = getattr(module, "vision_model", None)
        if vision is None or getattr(vision, "head", None) is None:
            raise UnsupportedModelError(
                f"{type(module).__name__} has no vision pooling head (vision_use_head=False); dualex needs "
                "the full SigLIP dual encoder (SiglipModel / Siglip2Model)"
            )
        self._text_filler = text_filler
        super().__init__(module, tokenizer=tokenizer, pipeline=pipeline, name=name)

    # ------------------------------------------------------------------ construction helpers
    @property
    def text_length(self) -> int:
        """Longest text the tower takes (its position table), at most 64."""
        return min(int(self.text_config.max_position_embeddings), SIGLIP_TEXT_LENGTH)

    def default_text_wrapper(self, tokenizer: Any) -> TokenizerLike:
        """Wraps a transformers tokenizer: pads to the fixed text length, attention mask 1 on padding too."""
        return HFTokenizer(
            tokenizer, padding="max_length", max_length=self.text_length, keep_pad_attention=True
        )

    @property
    def logit_bias(self) -> float:
        """The learnt bias added to the scaled cosine similarity before the sigmoid."""
        return float(self._module.logit_bias.detach().float().reshape(-1)[0])

    # ------------------------------------------------------------------ token ids
    def _hf_tokenizer(self) -> Any:
        return getattr(self.tokenizer, "tok", None)

    def eos_id(self) -> int:
        """End-of-text id: from the transformers tokenizer, else the dualex tokenizer, else the config."""
        hf = self._hf_tokenizer()
        if hf is not None and getattr(hf, "eos_token_id", None) is not None:
            return int(hf.eos_token_id)
        eos = getattr(self.tokenizer, "eos", None)
        if isinstance(eos, int):
            return int(eos)
        return int(self.text_config.eos_token_id)

    def pad_id(self) -> int:
        """Padding id: from the transformers tokenizer, else the dualex tokenizer, else the config (EOS if none)."""
        hf = self._hf_tokenizer()
        if hf is not None and getattr(hf, "pad_token_id", None) is not None:
            return int(hf.pad_token_id)
        pad_attr = getattr(self.tokenizer, "pad", None)
        if isinstance(pad_attr, int):
            return int(pad_attr)
        pad = self.text_config.pad_token_id
        return int(pad) if pad is not None else self.eos_id()

    def padding_side(self) -> str:
        """'left' if the tokenizer pads on the left, else 'right'."""
        hf = self._hf_tokenizer()
        side = getattr(hf, "padding_side", None) or getattr(self.tokenizer, "padding_side", None)
        return "left" if side == "left" else "right"

    def filler_id(self) -> int:
        """Token id that fills masked caption positions: the single-token id of '!' if the tokenizer has one.

        Otherwise the pad id (or 0 when pad and EOS coincide and 0 is neither). Cached after the first call.
        """
        if self._text_filler is not None:
            return int(self._text_filler)
        hf = self._hf_tokenizer()
        if hf is not None:
            try:
                ids = hf("!", add_special_tokens=False)["input_ids"]
            except Exception:
                ids = []
            if len(ids) == 1:
                self._text_filler = int(ids[0])
                return self._text_filler
        pad, eos = self.pad_id(), self.eos_id()
        self._text_filler = pad if pad != eos else (0 if 0 not in (pad, eos) else pad)
        return self._text_filler

    # ------------------------------------------------------------------ preparation
    def pool_index(self, ids: Tensor, mask: Tensor) -> Tensor:
        """SigLIP pools at the last position, whatever token sits there: ``(B,)`` filled with ``S - 1``."""
        return torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long, device=ids.device)

    # ------------------------------------------------------------------ towers
    def embed_image(self, inputs: ImageInputs) -> Tensor:
        """Patch + position embeddings of the image tower, ``(B, T, W)``."""
        raise NotImplementedError

    def image_attention(self, inputs: ImageInputs) -> Tensor | None:
        """Key mask ``(B, T)`` of the image tower (1 = real patch), or None when every patch is real."""
        return None

    def pool_image(self, h: Tensor, keys: Tensor | None) -> Tensor:
        """The MAP head on post-norm states ``(R, T, W)`` -> embeddings ``(R, D)``."""
        emb: Tensor = self._module.vision_model.head(h)
        return emb

    # ------------------------------------------------------------------ contract capabilities
    @property
    def contrastive_loss(self) -> Literal["softmax", "sigmoid"] | None:
        """SigLIP trains with a pairwise sigmoid loss."""
        return "sigmoid"

    def preprocessor_config(self) -> dict[str, Any]:
        """The image-processor settings ('SiglipImageProcessor') that reproduce this model's pipeline."""
        return pipeline_config(self.pipeline, "SiglipImageProcessor")

    # ------------------------------------------------------------------ masking
    def _compact(self, row: Tensor, keep: Tensor, *, fill: Any = None) -> Tensor:
        """``row`` ``(S,)`` without the positions where ``keep`` is False, re-padded to S (padding side)."""
        kept = row[keep.to(row.device)]
        n_pad = row.shape[0] - kept.shape[0]
        value = self.pad_id() if fill is None else fill
        pad = torch.full((n_pad,), value, dtype=row.dtype, device=row.device)
        return torch.cat([pad, kept]) if self.padding_side() == "left" else torch.cat([kept, pad])

    def _compact_list(self, row: list[Any], keep: Tensor, fill: Any) -> list[Any]:
        kept = [x for x, k in zip(row, keep.tolist(), strict=True) if k]
        pad = [fill] * (len(row) - len(kept))
        return pad + kept if self.padding_side() == "left" else kept + pad

    # ------------------------------------------------------------------ references
    def text_reference(self, inputs: TextInputs, kind: str) -> TextInputs:
        """Text references for a tower with no BOS that pools at the last position.

        Both keep the caption's sequence length S and attend to every position, so the tower pools the
        reference at the same last position as the caption, and an integrated path that ends at the
        reference's hidden states is pooled exactly like the reference itself.

        Kinds:
            ``"default"``: the **empty caption**: the caption's words deleted, its special tokens
                (end-of-text and any leading special) kept in order, re-padded to S, which is what the
                tokenizer gives for a caption with no words (for SigLIP v1, whose padding id equals the
                end-of-text id, every position holds that id). Equals ``mask(keep=all False, how="drop")``.
            ``"same_length"``: every word replaced by `filler_id`, all other positions unchanged, so at
                the embedding layer the reference differs from the caption only at word positions.
        """
        if kind not in ("default", "same_length"):
            raise InputError(f"unknown text reference {kind!r}; use 'default' or 'same_length'")
        ref = inputs.select(list(range(inputs.batch_size)))
        words = ~inputs.special.bool()
        if kind == "default":
            ids = torch.stack([self._compact(inputs.ids[b], ~words[b]) for b in range(inputs.batch_size)])
        else:
            filler = torch.full_like(inputs.ids, self.filler_id())
            ids = torch.where(words.to(inputs.ids.device), filler, inputs.ids)
        ref.ids = ids
        ref.mask = torch.ones_like(inputs.mask)
        ref.pool_index = self.pool_index(ids, ref.mask)
        ref.special = torch.ones_like(inputs.special)
        return ref

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, spec: str, *, device: torch.device, dtype: torch.dtype | None) -> Self:
        """Loads a transformers SigLIP model, its tokenizer and its preprocessor settings.

        Args:
            spec: A hub id or a local directory saved with save_pretrained.
            device: Where the weights go.
            dtype: Weight dtype, or None for the checkpoint's own.

        Returns:
            The wrapped model on `device`, named 'hf:SPEC'.
        """
        from transformers import AutoModel

        tok = load_tokenizer(spec, cls.family)
        kw: dict[str, Any] = {"attn_implementation": "sdpa"}
        if dtype is not None:
            kw["dtype"] = dtype
        module = _from_pretrained(AutoModel, spec, **kw)
        model = cls(module, tokenizer=tok, name=f"hf:{spec}", **cls.options_from_preprocessor(spec, module))
        return model.to(device)

    @classmethod
    def options_from_preprocessor(cls, spec: str, module: torch.nn.Module) -> dict[str, Any]:
        """Constructor options read from a saved ``preprocessor_config.json`` (none if absent)."""
        return {}


@register_hf("siglip")
class HFSiglip(SiglipBase):
    """transformers ``SiglipModel`` (also the fixed-resolution SigLIP-2 checkpoints, which use it).

    Image tower: conv patch embedding + learned position table (interpolated when the input size
    differs from ``image_size``), no CLS, ``post_layernorm`` then the MAP head.
    """

    family = "hf-siglip"

    def default_pipeline(self) -> ImagePipeline:
        """Returns SigLIP's image pipeline: plain resize to the config's square size, mean = std = 0.5."""
        size = int(self.vision_config.image_size)
        return ImagePipeline(size=(size, size), crop=(size, size), mean=HALF, std=HALF, mode="resize")

    def embed_image(self, inputs: ImageInputs) -> Tensor:
        """Patch + position embeddings (interpolated when the image size differs from the config's).

        Args:
            inputs: ImageInputs with (B, 3, H, W) pixels (patch removals applied after the patch embedding).

        Returns:
            (B, P, W) tokens.
        """
        emb = self._module.vision_model.embeddings
        dtype = emb.patch_embedding.weight.dtype
        H, W = inputs.pixels.shape[-2:]
        size = int(self.vision_config.image_size)
        x = patch_tokens(inputs, lambda px: emb.patch_embedding(px.to(dtype)).flatten(2).transpose(1, 2))
        tokens: Tensor
        if (size, size) != (H, W):
            tokens = x + emb.interpolate_pos_encoding(x, H, W)
        else:
            tokens = x + emb.position_embedding(emb.position_ids)
        return tokens

    @classmethod
    def options_from_preprocessor(cls, spec: str, module: torch.nn.Module) -> dict[str, Any]:
        """Reads a saved preprocessor config into constructor options (an image pipeline of its size, mean, std).

        Args:
            spec: The model directory or hub id.
            module: The loaded transformers model (for its default image size).

        Returns:
            Keyword options for the constructor; empty when there is no preprocessor config.
        """
        cfg = read_preprocessor_config(spec)
        if cfg is None:
            return {}
        size = cfg.get("size") or {}
        config: Any = module.config  # the transformers model's config (torch types it as Tensor | Module)
        default = int(config.vision_config.image_size)
        if isinstance(size, dict):
            hw = (int(size.get("height", default)), int(size.get("width", default)))
        elif isinstance(size, int):
            hw = (size, size)
        else:
            hw = (default, default)
        pipe = ImagePipeline(
            size=hw,
            crop=hw,
            mean=tuple(cfg.get("image_mean", HALF)),
            std=tuple(cfg.get("image_std", HALF)),
            mode="resize",
            resample=_pil_resample(cfg.get("resample"), Image.Resampling.BICUBIC),
        )
        return {"pipeline": pipe}


@register_hf("siglip2")
class HFSiglip2(SiglipBase):
    """transformers ``Siglip2Model`` (NaFlex): patchified pixels, resized position table, masked MAP head.

    dualex runs it on a fixed square grid of ``g × g`` patches, ``g = isqrt(max_num_patches)``, with no
    padding patches (``pixel_attention_mask`` all ones). Images are resized to ``g·p`` pixels square
    (the NaFlex processor would keep the aspect ratio; a fixed grid keeps the players of every image
    the same). ``ImageInputs.pixels`` stay ``(B, 3, H, W)``; ``extra`` holds ``spatial_shapes``
    ``(B, 2)`` and ``pixel_attention_mask`` ``(B, N)`` as the model takes them.

    Args:
        max_num_patches: Patch budget of the grid (default: the processor's ``max_num_patches`` when
            loaded from a directory, else the model's position table ``vision_config.num_patches``).
        **kw: As `SiglipBase`.
    """

    family = "hf-siglip2"
    image_tower_type = Siglip2Image

    def __init__(self, module: torch.nn.Module, *, max_num_patches: int | None = None, **kw: Any) -> None:
        config: Any = module.config  # the transformers model's config (torch types it as Tensor | Module)
        n = int(max_num_patches if max_num_patches is not None else config.vision_config.num_patches)
        if n < 1:
            raise InputError(f"max_num_patches must be positive, got {n}")
        self.grid_side = math.isqrt(n)
        super().__init__(module, **kw)

    def default_pipeline(self) -> ImagePipeline:
        """Returns SigLIP2's image pipeline: bilinear resize to a square grid_side x patch_size image."""
        side = self.grid_side * self.patch_size
        return ImagePipeline(
            size=(side, side),
            crop=(side, side),
            mean=HALF,
            std=HALF,
            mode="resize",
            resample=Image.Resampling.BILINEAR,
        )

    def model_inputs(self, inputs: ImageInputs) -> dict[str, Tensor]:
        """The keyword arguments ``Siglip2Model.get_image_features`` takes for ``inputs`` (removals applied)."""
        pixels = patchify(masked_pixels(inputs).to(self.dtype), self.patch_size)
        B, N = pixels.shape[:2]
        rows, cols = inputs.grid
        shapes = inputs.extra.get("spatial_shapes")
        if shapes is None:
            shapes = torch.tensor([[rows, cols]] * B, dtype=torch.long, device=pixels.device)
        mask = inputs.extra.get("pixel_attention_mask")
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.long, device=pixels.device)
        return {"pixel_values": pixels, "pixel_attention_mask": mask, "spatial_shapes": shapes}

    def embed_image(self, inputs: ImageInputs) -> Tensor:
        """Patch + position embeddings, the position table resized to each image's spatial shape.

        Args:
            inputs: ImageInputs with (B, 3, H, W) pixels and optional `spatial_shapes` in `extra`.

        Returns:
            (B, P, W) tokens.
        """
        emb = self._module.vision_model.embeddings
        dtype = emb.patch_embedding.weight.dtype
        p = self.patch_size
        x = patch_tokens(inputs, lambda px: emb.patch_embedding(patchify(px.to(self.dtype), p).to(dtype)))
        shapes = inputs.extra.get("spatial_shapes")
        if shapes is None:
            rows, cols = inputs.grid
            shapes = torch.tensor([[rows, cols]] * x.shape[0], dtype=torch.long)
        if shapes.shape[0] > 1 and shapes.stride(0) == 0:  # one image's coalitions: one position table
            shapes = shapes[:1]
        size = emb.position_embedding_size
        table = emb.position_embedding.weight.reshape(size, size, -1)
        tokens: Tensor = x + emb.resize_positional_embeddings(table, shapes.cpu(), max_length=x.shape[1])
        return tokens

    def image_attention(self, inputs: ImageInputs) -> Tensor | None:
        """The (B, P) pixel attention mask from `extra`, or None when every patch is real."""
        mask = inputs.extra.get("pixel_attention_mask")
        return None if mask is None or bool(mask.bool().all()) else mask

    def pool_image(self, h: Tensor, keys: Tensor | None) -> Tensor:
        """The MAP head on post-norm states (R, T, W), masked by `keys` (R, T) -> embeddings (R, D)."""
        emb: Tensor = self._module.vision_model.head(h, keys)
        return emb

    @property
    def contrastive_loss(self) -> Literal["softmax", "sigmoid"] | None:
        """None: dualex does not fine-tune NaFlex models (variable grids are not trained for)."""
        return None

    def preprocessor_config(self) -> dict[str, Any]:
        """The image-processor settings ('Siglip2ImageProcessor', max_num_patches) of this model's pipeline."""
        return pipeline_config(self.pipeline, "Siglip2ImageProcessor", max_num_patches=self.grid_side**2)

    @classmethod
    def options_from_preprocessor(cls, spec: str, module: torch.nn.Module) -> dict[str, Any]:
        """Reads a saved preprocessor config into constructor options (max_num_patches and the pipeline).

        Args:
            spec: The model directory or hub id.
            module: The loaded transformers model (for its default number and size of patches).

        Returns:
            Keyword options for the constructor; empty when there is no preprocessor config.
        """
        cfg = read_preprocessor_config(spec)
        if cfg is None:
            return {}
        out: dict[str, Any] = {}
        if cfg.get("max_num_patches"):
            out["max_num_patches"] = int(cfg["max_num_patches"])
        config: Any = module.config  # the transformers model's config (torch types it as Tensor | Module)
        n = int(out.get("max_num_patches", config.vision_config.num_patches))
        side = math.isqrt(n) * int(config.vision_config.patch_size)
        out["pipeline"] = ImagePipeline(
            size=(side, side),
            crop=(side, side),
            mean=tuple(cfg.get("image_mean", HALF)),
            std=tuple(cfg.get("image_std", HALF)),
            mode="resize",
            resample=_pil_resample(cfg.get("resample"), Image.Resampling.BILINEAR),
        )
        return out


__all__ = [
    "SIGLIP_TEXT_LENGTH",
    "HFSiglip",
    "HFSiglip2",
    "Siglip2Image",
    "SiglipBase",
    "SiglipImage",
    "SiglipText",
    "patchify",
]
