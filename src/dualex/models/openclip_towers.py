"""open_clip models whose image tower is not open_clip's plain ViT: timm towers, ModifiedResNet, CoCa.

Covers, through one adapter (`OpenClipTowers`):

* timm image towers (``TimmModel``): ConvNeXt, EVA-01/02, Perception Encoder, FastViT (MobileCLIP,
  MobileCLIP2), Swin, SigLIP/SigLIP-2's timm ViTs, ViTamin, hybrid MCi ViTs, relative-position ViTs;
* ``ModifiedResNet`` (OpenAI RN50 … RN50x64): stem, four stages, attention pool;
* CoCa's contrastive embeddings: the image tower's attentional pooler (learned queries over the patch
  tokens, then ``ln_post`` and the first query), the text tower's appended CLS embedding (the last
  position, attended by every token; padding keys masked).

Text. The native open_clip text transformer (`OpenClipTextTower`), as `dualex.models.openclip` runs it:
written-out attention from the blocks' weights, causal mask unless ``no_causal_mask``, pooling by
``pool_type`` (``argmax``, ``eos``, ``first``, ``last``) or, with CoCa's CLS, the appended position.
CoCa's prepared captions carry one extra position at the end for the CLS (a special part, never a
player), so hidden positions and parts line up. Removing caption tokens: ``how="attention"`` (default; no
position attends to them) or ``"pad"`` (id 0, exCLIP's filler).

Image. `dualex.models.trunk_tower.TrunkTower`: a layer is a block of transformer trunks and a stage of
CNN/Swin/FastViT trunks (default ``layer=-1``: the input of the last block or stage); players are
input-space patches of the trunk's final grid (``mask_grid=`` to change it).

Tokenizers. Architectures whose tokenizer lives on the Hugging Face hub (SigLIP, SigLIP-2, CLIPA,
worldwide, HF text towers) take one by ``tokenizer=`` (a transformers tokenizer, or a dualex one), on
``dualex.wrap`` and ``dualex.load("openclip:ARCH@...", tokenizer=tok)`` alike.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional

from dualex.errors import InputError, UnsupportedModelError
from dualex.models.attention import mha_weights
from dualex.models.base import DualEncoder, PooledBlock, SideInputs, TextInputs
from dualex.models.hf import additive_mask, broadcast_rows
from dualex.models.openclip import (
    CLIP_BOS,
    CLIP_EOS,
    CLIP_FILLER,
    CLIP_PAD,
    TEXT_POOLS,
    OpenClipHead,
    _check_blocks,
    block_pooled,
    pipeline_from_module,
    plain_vit,
    run_block,
)
from dualex.models.parts import bos_filler_eos_reference, mask_text_players
from dualex.models.preprocess import ImagePipeline
from dualex.models.registry import register_wrapper
from dualex.models.tokenize import HFTokenizer, OpenClipTokenizer, Tokenized, TokenizerLike, WordTokenizer
from dualex.models.tower import Tower
from dualex.models.trunk_tower import TrunkTower
from dualex.models.trunks import ModifiedResNetTrunk, Trunk, timm_trunk

CLS_TOKEN = "<cls>"


# ---------------------------------------------------------------------------------------------- text
class OpenClipTextTower(Tower):
    """open_clip's native text transformer (``TextTransformer`` or CLIP's own text parts), CoCa's included.

    Args:
        owner: The dual encoder; ``owner._module`` is the open_clip model.
        tokenizer: open_clip's ``SimpleTokenizer``, a transformers tokenizer, a dualex tokenizer, or None
            for the CLIP BPE tokenizer at the model's context length.
    """

    modality = "text"
    path_reference = "default"
    aligned_reference = "same_length"

    def __init__(self, owner: DualEncoder, tokenizer: Any = None) -> None:
        super().__init__(owner)
        check_text_supported(owner._module)  # type: ignore[attr-defined]  # the adapter's module
        self.tokenizer = self._tokenizer(tokenizer)

    # ------------------------------------------------------------------ structure
    @property
    def parts(self) -> Any:
        """The module holding ``token_embedding``, ``transformer``, ``ln_final``, ``text_projection``."""
        module: Any = self.owner._module  # type: ignore[attr-defined]
        text = getattr(module, "text", None)
        return module if text is None else text

    @property
    def cls(self) -> Tensor | None:
        """CoCa's appended CLS embedding ``(W,)``, or None."""
        return getattr(self.parts, "cls_emb", None)

    @property
    def pool_type(self) -> str:
        """How this text tower pools: 'last' for CoCa's CLS slot, else the model's text_pool_type."""
        module: Any = self.owner._module  # type: ignore[attr-defined]
        text = getattr(module, "text", None)
        return "last" if self.cls is not None else str(text.pool_type if text is not None else module.text_pool_type)

    @property
    def causal(self) -> bool:
        """Whether the text transformer uses a causal attention mask."""
        return getattr(self.parts, "attn_mask", None) is not None

    @property
    def pad_keys(self) -> int | None:
        """The id whose keys the tower masks (CoCa, ``use_pad_mask`` towers), else None."""
        p = self.parts
        if self.cls is not None or getattr(p, "use_pad_mask", False):
            return int(getattr(p, "pad_id", 0))
        return None

    @property
    def context_length(self) -> int:
        """Caption positions (CoCa: one less than the position table, which also places the CLS)."""
        n = int(self.parts.positional_embedding.shape[0])
        return n - 1 if self.cls is not None else n

    @property
    def n_layers(self) -> int:
        """Number of residual attention blocks in the text transformer."""
        return len(self.parts.transformer.resblocks)

    def _tokenizer(self, tokenizer: Any) -> TokenizerLike:
        ctx = self.context_length
        trim = self.causal and self.pool_type in ("argmax", "eos") and self.pad_keys is None
        if tokenizer is None:
            from open_clip import SimpleTokenizer

            tokenizer = SimpleTokenizer(context_length=ctx)
        if isinstance(tokenizer, (OpenClipTokenizer, HFTokenizer, WordTokenizer)):
            return tokenizer
        if hasattr(tokenizer, "sot_token_id"):
            return OpenClipTokenizer(tokenizer, context_length=ctx, trim=trim)
        if hasattr(tokenizer, "convert_ids_to_tokens"):
            return HFTokenizer(tokenizer, padding="max_length", max_length=ctx, keep_pad_attention=True)
        if not callable(tokenizer):
            raise InputError("tokenizer must be callable (texts -> dualex.models.tokenize.Tokenized)")
        return cast(TokenizerLike, tokenizer)

    def _id(self, name: str, default: int) -> int:
        tok = self.tokenizer
        value = getattr(tok, name, None)
        if value is None and name == "sot":
            value = getattr(tok, "bos", None)
        if value is None and name == "eot":
            value = getattr(tok, "eos", None)
        return int(value) if value is not None else default

    # ------------------------------------------------------------------ inputs
    def pool_index(self, ids: Tensor, mask: Tensor) -> Tensor:
        """The pooled position per row, ``(B,)`` (CoCa: the appended CLS, the last position)."""
        B, S = ids.shape
        pool = self.pool_type
        if pool == "argmax":
            return ids.argmax(-1).long()
        if pool == "eos":
            eos = int(getattr(self.parts, "eos_id", -1))
            hit: Tensor = ids == eos
            if not bool(hit.any(-1).all()):
                raise InputError(f"a caption has no end-of-text token (id {eos}); is the tokenizer the model's own?")
            return hit.int().argmax(-1).long()
        if pool == "first":
            return torch.zeros(B, dtype=torch.long, device=ids.device)
        return torch.full((B,), S - 1, dtype=torch.long, device=ids.device)

    def prepare(self, raw: list[Any]) -> TextInputs:
        """Tokenises captions (adding CoCa's CLS slot at the end when the tower has one).

        Args:
            raw: Caption strings.

        Returns:
            TextInputs with (B, T) ids and mask and each caption's (B,) pooled position.

        Raises:
            InputError: The tokenizer gave more positions than the context length.
        """
        t = self.tokenizer(raw)
        if t.ids.shape[1] > self.context_length:
            raise InputError(
                f"the tokenizer gave {t.ids.shape[1]} positions but {self.label} takes at most {self.context_length}"
            )
        if self.cls is not None:
            t = _with_cls_slot(t, self._id("eot", CLIP_EOS), self.context_length)
        return TextInputs.from_tokenized(t, raw, self.pool_index(t.ids, t.mask))

    def _check(self, inputs: SideInputs) -> TextInputs:
        if not isinstance(inputs, TextInputs):
            raise InputError(f"{self.label} needs TextInputs, got {type(inputs).__name__}")
        limit = self.context_length + (1 if self.cls is not None else 0)
        if inputs.ids.shape[1] > limit:
            raise InputError(f"{inputs.ids.shape[1]} text positions exceed the context length of {self.label}")
        return inputs

    def attention(self, inputs: TextInputs, rows: int, dtype: torch.dtype) -> Tensor | None:
        """Additive mask ``(rows or 1, 1, S, S)``: causal (if the tower is) + keys of removed and padding tokens."""
        blocked = (inputs.mask == 0) & ~inputs.special.bool()
        if self.pad_keys is not None:
            pad = inputs.ids == self.pad_keys
            if self.cls is not None and getattr(self.parts, "correct_cls_mask", False):
                pad[:, -1] = False  # the CLS slot is always attended
            elif self.cls is not None:  # open_clip's legacy CoCa mask (its weights' own): key k is valid iff
                body = pad[:, :-1]  # token k - 1 is not padding; key 0 always
                pad = torch.cat([torch.zeros_like(body[:, :1]), body], dim=1)
            blocked = blocked | pad
        S = inputs.ids.shape[1]
        if not bool(blocked.any()):
            if not self.causal:
                return None
            return additive_mask(torch.ones(1, S, dtype=torch.long, device=inputs.ids.device), causal=True, dtype=dtype)
        return additive_mask(broadcast_rows((~blocked).long(), rows), causal=self.causal, dtype=dtype)

    # ------------------------------------------------------------------ forward
    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        """Runs the text transformer up to block `layer`.

        Args:
            inputs: TextInputs with (B, T) ids.
            layer: Block index (0 = token + position embeddings; CoCa's CLS embedding in the last slot).

        Returns:
            (B, T, W) hidden states at the input of block `layer`.
        """
        layer = self.check_layer(layer)
        t = self._check(inputs)
        p = self.parts
        cast_dtype = p.transformer.get_cast_dtype()
        S = t.ids.shape[1]
        h: Tensor = p.token_embedding(t.ids).to(cast_dtype)
        if self.cls is not None:  # the last position is the CLS slot
            h = torch.cat([h[:, :-1], self.cls.to(cast_dtype).expand(h.shape[0], 1, -1)], dim=1)
        h = h + p.positional_embedding[:S].to(cast_dtype)
        mask = self.attention(t, t.batch_size, h.dtype)
        for blk in p.transformer.resblocks[:layer]:
            h = run_block(blk, h, mask)
        return h

    def head(self, pooled: Tensor) -> Tensor:
        """``ln_final`` and ``text_projection`` on pooled rows ``(R, W)`` (or any ``(..., W)``)."""
        p = self.parts
        out: Tensor = p.ln_final(pooled)
        proj = p.text_projection
        if proj is None:
            return out
        projected: Tensor = proj(out) if isinstance(proj, nn.Module) else out @ proj
        return projected

    def pooled_block(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> PooledBlock | None:
        """The last block evaluated at the pooled positions only, then the text head, for `rows` rows."""
        t = self._check(inputs)
        idx = broadcast_rows(t.pool_index, rows)
        return block_pooled(self.parts.transformer.resblocks[-1], idx, self.attention(t, rows, dtype), self.head)

    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        """Runs the text transformer from block `layer` to the projected embedding.

        Args:
            inputs: The TextInputs `hidden` came from (one row broadcasts).
            hidden: (R, T, W) hidden states at the input of block `layer`.
            layer: Block index.

        Returns:
            (R, D) unnormalised text embeddings at each caption's pooled position.
        """
        layer = self.check_layer(layer)
        t = self._check(inputs)
        if hidden.dim() != 3:
            raise InputError(f"hidden states must be (R, T, W), got shape {tuple(hidden.shape)}")
        R = hidden.shape[0]
        pooled = self.use_pooled_block(inputs, hidden, layer)
        blocks = self.parts.transformer.resblocks
        blocks = blocks[layer:-1] if pooled is not None else blocks[layer:]
        mask = self.attention(t, R, hidden.dtype)
        h = hidden
        for blk in blocks:
            h = run_block(blk, h, mask)
        if pooled is not None:
            return pooled(h)
        idx = broadcast_rows(t.pool_index, R).to(h.device)
        return self.head(h[torch.arange(R, device=h.device), idx])

    # ------------------------------------------------------------------ masking and references
    def mask(self, inputs: SideInputs, keep: Tensor, *, how: str = "default") -> SideInputs:
        """``how``: ``"default"``/``"attention"`` (no position attends to a removed token) or ``"pad"`` (id 0)."""
        return mask_text_players(self._check(inputs), keep, how, self.filler_id())

    def _hf(self) -> Any:
        return self.tokenizer.tok if isinstance(self.tokenizer, HFTokenizer) else None

    def filler_id(self) -> int:
        """exCLIP's filler (id 0, ``"!"`` in CLIP BPE); with a transformers tokenizer, its id of ``"!"``."""
        hf = self._hf()
        if hf is not None:
            ids = hf("!", add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                return int(ids[0])
        return CLIP_FILLER

    def reference(self, inputs: SideInputs, kind: str = "default") -> SideInputs:
        """``"default"``: BOS, filler, EOS, padding (exCLIP's), or for tokenizers without BOS (SigLIP's) the
        empty caption (words deleted, special tokens kept, re-padded); ``"same_length"``: fillers in place
        of the words."""
        t = self._check(inputs)
        hf = self._hf()
        if hf is not None and getattr(hf, "bos_token_id", None) is None:
            return self._no_bos_reference(t, kind, hf)
        body = t if self.cls is None else _without_cls_slot(t)
        ref = bos_filler_eos_reference(
            body,
            kind,
            bos_id=self._id("sot", CLIP_BOS),
            eos_id=self._id("eot", CLIP_EOS),
            filler_id=CLIP_FILLER,
            pad_id=CLIP_PAD,
            pool_index=self.pool_index,
        )
        if self.cls is None:
            return ref
        full = _with_cls_slot(
            Tokenized(ref.ids, ref.mask, ref.tokens, ref.special, ref.offsets), self._id("eot", CLIP_EOS), None
        )
        out = TextInputs.from_tokenized(full, ref.texts, self.pool_index(full.ids, full.mask))
        out.special = torch.ones_like(out.special)
        return out

    def _no_bos_reference(self, t: TextInputs, kind: str, hf: Any) -> TextInputs:
        if kind not in ("default", "same_length"):
            raise InputError(f"unknown text reference {kind!r}; use 'default' or 'same_length'")
        ref = t.select(list(range(t.batch_size)))
        words = ~t.special.bool()
        if kind == "same_length":
            ids = torch.where(words, torch.full_like(t.ids, self.filler_id()), t.ids)
        else:
            pad = hf.pad_token_id if hf.pad_token_id is not None else hf.eos_token_id
            rows = []
            for b in range(t.batch_size):
                kept = t.ids[b][~words[b]]
                fill = torch.full((t.ids.shape[1] - kept.numel(),), int(pad), dtype=t.ids.dtype)
                rows.append(torch.cat([kept, fill]))
            ids = torch.stack(rows)
        ref.ids = ids
        ref.special = torch.ones_like(t.special)
        ref.pool_index = self.pool_index(ids, ref.mask)
        return ref


def _with_cls_slot(t: Tokenized, slot_id: int, context_length: int | None) -> Tokenized:
    """``t`` with one more position at the end for CoCa's CLS (attended, special, never a player)."""
    B = t.ids.shape[0]
    one = torch.ones(B, 1, dtype=t.ids.dtype)
    return Tokenized(
        ids=torch.cat([t.ids, one * slot_id], dim=1),
        mask=torch.cat([t.mask, torch.ones(B, 1, dtype=t.mask.dtype)], dim=1),
        tokens=[[*row, CLS_TOKEN] for row in t.tokens],
        special=torch.cat([t.special.bool(), torch.ones(B, 1, dtype=torch.bool)], dim=1),
        offsets=[[*row, None] for row in t.offsets],
    )


def _without_cls_slot(t: TextInputs) -> TextInputs:
    return replace(
        t,
        ids=t.ids[:, :-1],
        mask=t.mask[:, :-1],
        special=t.special[:, :-1],
        tokens=[row[:-1] for row in t.tokens],
        offsets=[row[:-1] for row in t.offsets],
        pool_index=t.pool_index.clamp(max=t.ids.shape[1] - 2),
    )


def check_text_supported(module: Any) -> None:
    """Raise `UnsupportedModelError` unless ``module`` has a native open_clip text transformer."""
    from open_clip.transformer import TextTransformer

    text = getattr(module, "text", None)
    if text is not None:
        if not isinstance(text, TextTransformer):
            raise UnsupportedModelError(
                f"the text tower of this {type(module).__name__} is a {type(text).__name__}; "
                "dualex runs open_clip's own TextTransformer"
            )
        pool, blocks = ("last" if text.cls_emb is not None else text.pool_type), text.transformer.resblocks
    elif hasattr(module, "token_embedding"):
        pool, blocks = module.text_pool_type, module.transformer.resblocks
    else:
        raise UnsupportedModelError(f"{type(module).__name__} has no text tower that dualex recognises")
    if pool not in TEXT_POOLS:
        raise UnsupportedModelError(f"text pool type {pool!r} is not supported; one of {', '.join(TEXT_POOLS)}")
    _check_blocks(blocks, "text")


class OpenClipHFTextTower(Tower):
    """open_clip's ``HFTextEncoder`` over a BERT-style transformers encoder (XLM-R, RoBERTa, BERT).

    As open_clip runs it: attention mask = ids that are not the padding id, the encoder's layers, its
    pooler (``mean_pooler``: mean over attended tokens; ``cls_pooler``: the transformers pooler on the
    first token where the model has one, else the first token; ``cls_last_hidden_state_pooler``), then
    ``proj``. A layer is one encoder layer. Removing tokens: ``how="attention"`` (default; attention mask
    0, also left out of mean pooling) or ``"pad"`` (the padding id). References: the tokenizer's
    ``[CLS]``/``<s>``, padding fillers and ``[SEP]``/``</s>`` (``"default"``: one filler).

    Args:
        owner: The dual encoder; ``owner._module.text`` is the ``HFTextEncoder``.
        tokenizer: The model's transformers tokenizer (from the local copy of its hub directory).
    """

    modality = "text"
    path_reference = "same_length"
    aligned_reference = "same_length"

    def __init__(self, owner: DualEncoder, tokenizer: Any = None) -> None:
        super().__init__(owner)
        from dualex.models.sentence import _use_eager_attention, check_encoder

        text: Any = owner._module.text  # type: ignore[attr-defined]
        self.text = text
        try:
            check_encoder(text.transformer)
        except UnsupportedModelError:
            raise UnsupportedModelError(
                f"open_clip's Hugging Face text tower here is a {type(text.transformer).__name__}; dualex runs "
                "BERT-style encoders (XLM-R, RoBERTa, BERT) there, not T5/mT5 or NLLB (M2M100) encoders"
            ) from None
        pooler = type(text.pooler).__name__
        if pooler not in ("MeanPooler", "ClsPooler", "ClsLastHiddenStatePooler"):
            raise UnsupportedModelError(f"open_clip's {pooler} is not supported (mean and CLS poolers are)")
        _use_eager_attention(text.transformer)
        if tokenizer is None:
            raise InputError(
                f"{self.label} is a Hugging Face text model: pass its tokenizer (tokenizer=, e.g. "
                "transformers.AutoTokenizer.from_pretrained('/local/copy'))"
            )
        if isinstance(tokenizer, HFTokenizer):
            self.tokenizer: TokenizerLike = tokenizer
        elif hasattr(tokenizer, "convert_ids_to_tokens"):
            ctx = int(getattr(owner._module, "context_length", 0) or text.context_length)  # type: ignore[attr-defined]
            self.tokenizer = HFTokenizer(tokenizer, padding="max_length", max_length=min(ctx, text.context_length))
        else:
            self.tokenizer = cast(TokenizerLike, tokenizer)

    @property
    def n_layers(self) -> int:
        """Number of layers of the wrapped transformers encoder."""
        return len(self.text.transformer.encoder.layer)

    def _hf(self) -> Any:
        return self.tokenizer.tok if isinstance(self.tokenizer, HFTokenizer) else None

    def _token(self, attr: str, default: int) -> int:
        hf = self._hf()
        value = getattr(hf, attr, None) if hf is not None else None
        return int(value) if value is not None else default

    @property
    def pad_id(self) -> int:
        """The transformers config's padding id (also the filler of caption references)."""
        return int(self.text.config.pad_token_id)

    def prepare(self, raw: list[Any]) -> TextInputs:
        """Tokenises captions; the attention mask is ids != pad, as open_clip's HFTextEncoder builds it.

        Args:
            raw: Caption strings.

        Returns:
            TextInputs with (B, T) ids and mask, padding marked special, pooled position 0.
        """
        t = self.tokenizer(raw)
        mask = (t.ids != self.pad_id).long()  # open_clip's own attention mask
        t = Tokenized(t.ids, mask, t.tokens, t.special.bool() | (mask == 0), t.offsets)
        return TextInputs.from_tokenized(t, raw, torch.zeros(t.ids.shape[0], dtype=torch.long))

    def _check(self, inputs: SideInputs) -> TextInputs:
        if not isinstance(inputs, TextInputs):
            raise InputError(f"{self.label} needs TextInputs, got {type(inputs).__name__}")
        return inputs

    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        """Runs the transformers encoder up to layer `layer`.

        Args:
            inputs: TextInputs with (B, T) ids.
            layer: Layer index (0 = the encoder's embeddings).

        Returns:
            (B, T, W) hidden states at the input of layer `layer`.
        """
        from dualex.models.sentence import run_bert_layers

        layer = self.check_layer(layer)
        t = self._check(inputs)
        h: Tensor = self.text.transformer.embeddings(input_ids=t.ids)
        return run_bert_layers(self.text.transformer.encoder.layer[:layer], h, t.mask)

    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        """Runs the encoder from layer `layer`, pools (mean over attended tokens or first token) and projects.

        Args:
            inputs: The TextInputs `hidden` came from (one row broadcasts).
            hidden: (R, T, W) hidden states at the input of layer `layer`.
            layer: Layer index.

        Returns:
            (R, D) unnormalised text embeddings.
        """
        from dualex.models.sentence import run_bert_layers

        layer = self.check_layer(layer)
        t = self._check(inputs)
        R = hidden.shape[0]
        keys = broadcast_rows(t.mask, R).to(hidden.device)
        h = run_bert_layers(self.text.transformer.encoder.layer[layer:], hidden, keys)
        pooler = type(self.text.pooler).__name__
        if pooler == "MeanPooler":
            m = keys.to(h.dtype)[..., None]
            pooled = (h * m).sum(dim=1) / m.sum(dim=1)
        else:
            pooled = h[:, 0]
            tp = getattr(self.text.transformer, "pooler", None)
            if pooler == "ClsPooler" and self.text.pooler.use_pooler_output and tp is not None:
                pooled = tp(h)
        out: Tensor = self.text.proj(pooled)
        return out

    def mask(self, inputs: SideInputs, keep: Tensor, *, how: str = "default") -> SideInputs:
        """``how``: ``"default"``/``"attention"`` (attention mask 0) or ``"pad"`` (the padding id)."""
        return mask_text_players(self._check(inputs), keep, how, self.pad_id)

    def reference(self, inputs: SideInputs, kind: str = "default") -> SideInputs:
        """Builds the CLS + pad + SEP caption reference of `kind` ('zeros' reads as 'default')."""
        t = self._check(inputs)
        if kind in ("default", "zeros"):
            kind = "default"
        ref = bos_filler_eos_reference(
            t,
            kind,
            bos_id=self._token("cls_token_id", self._token("bos_token_id", int(t.ids[0, 0]))),
            eos_id=self._token("sep_token_id", self._token("eos_token_id", 2)),
            filler_id=self.pad_id,
            pad_id=self.pad_id,
            pool_index=lambda ids, mask: torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device),
        )
        return ref


# ---------------------------------------------------------------------------------------------- CoCa image
class OpenClipViTTrunk(Trunk):
    """open_clip's ``VisionTransformer`` as a trunk, with CoCa's attentional pooler as the head.

    Head (open_clip's CoCa setup): ``attn_pool`` (learned queries attending to all tokens), ``ln_post``,
    the first query (``pool_type="tok"``) or the mean of the queries (``"avg"``), then ``proj``.
    """

    family = "openclip-vit"
    has_attention = True

    def __init__(self, visual: nn.Module) -> None:
        v: Any = visual
        s = v.image_size
        super().__init__(visual, (int(s[0]), int(s[1])) if isinstance(s, (tuple, list)) else (int(s), int(s)))
        self.visual: Any = visual
        if v.attn_pool is not None and getattr(v, "attn_pool_contrastive", None) is not None:
            raise UnsupportedModelError(
                "open_clip's parallel/cascade attentional pooling (upstream WIP) is not supported"
            )
        _check_blocks(v.transformer.resblocks, "image")

    @property
    def n_layers(self) -> int:
        """Number of residual attention blocks of the vision transformer."""
        return len(self.visual.transformer.resblocks)

    def kind_at(self, layer: int) -> str:
        """Every block holds tokens ('tokens')."""
        return "tokens"

    def prefix_at(self, layer: int) -> int:
        """One prefix (CLS) token before the patches at every block."""
        return 1

    def token_grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch grid."""
        g = self.visual.grid_size
        return int(g[0]), int(g[1])

    def stem(self, pixels: Tensor) -> Tensor:
        """CLS + conv patch embeddings + positions, then ln_pre: (B, 3, H, W) -> (B, 1 + P, W)."""
        v = self.visual
        x = v.conv1(pixels.to(v.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        out: Tensor = v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype))
        return out

    def unit(self, index: int, state: Tensor) -> Tensor:
        """Runs residual block `index`: (R, 1 + P, W) -> (R, 1 + P, W)."""
        return run_block(self.visual.transformer.resblocks[index], state, None)

    def head(self, state: Tensor) -> Tensor:
        """Pools (attentional pooler if any, CLS or patch mean), ln_post, projection: (R, 1 + P, W) -> (R, D)."""
        v = self.visual
        if v.attn_pool is not None:
            x = v.ln_post(attentional_pool(v.attn_pool, state))
            pooled = x[:, 1:].mean(dim=1) if v.pool_type == "avg" else x[:, 0]
        elif v.final_ln_after_pool:
            pooled = v.ln_post(state[:, 1:].mean(dim=1) if v.pool_type == "avg" else state[:, 0])
        else:
            x = v.ln_post(state)
            pooled = x[:, 1:].mean(dim=1) if v.pool_type == "avg" else x[:, 0]
        out: Tensor = pooled if v.proj is None else pooled @ v.proj
        return out


def attentional_pool(pool: Any, x: Tensor) -> Tensor:
    """open_clip's ``AttentionalPooler`` written out: learned queries over ``x`` ``(R, T, W)`` -> ``(R, Q, D)``."""
    attn: nn.MultiheadAttention = pool.attn
    k_in = pool.ln_k(x)
    q_in = pool.ln_q(pool.query)  # (Q, D)
    qw, qb, kw, kb, vw, vb = mha_weights(attn)
    H = attn.num_heads
    R, T = x.shape[:2]
    q = functional.linear(q_in, qw, qb)  # (Q, D)
    k = functional.linear(k_in, kw, kb)  # (R, T, D)
    v = functional.linear(k_in, vw, vb)
    d = q.shape[-1] // H
    qh = q.reshape(1, -1, H, d).transpose(1, 2)  # (1, H, Q, d)
    kh = k.reshape(R, T, H, d).transpose(1, 2)  # (R, H, T, d)
    vh = v.reshape(R, T, H, d).transpose(1, 2)
    att = (torch.matmul(qh, kh.transpose(-1, -2)) * d**-0.5).softmax(dim=-1)
    o = torch.matmul(att, vh).transpose(1, 2).reshape(R, -1, H * d)
    out: Tensor = functional.linear(o, attn.out_proj.weight, attn.out_proj.bias)
    return out


def trunk_of(visual: nn.Module) -> Trunk:
    """The `Trunk` of an open_clip image tower (``TimmModel``, ``ModifiedResNet``, ``VisionTransformer``).

    Raises:
        UnsupportedModelError: another kind of image tower, named.
    """
    kind = type(visual).__name__
    v: Any = visual
    if kind == "TimmModel":
        return timm_trunk(v.trunk, v.image_size, v.head if len(v.head) else None)
    if kind == "ModifiedResNet":
        return ModifiedResNetTrunk(visual)
    if kind == "VisionTransformer":
        return OpenClipViTTrunk(visual)
    raise UnsupportedModelError(f"open_clip image towers of type {kind} are not supported")


# ---------------------------------------------------------------------------------------------- adapter
class OpenClipTowers(OpenClipHead, DualEncoder):
    """An open_clip model with a timm, ModifiedResNet or CoCa image tower (see the module docstring).

    Args:
        module: ``open_clip.CLIP``, ``CustomTextCLIP`` or ``CoCa``.
        tokenizer: See `OpenClipTextTower` (required for architectures whose tokenizer is on the hub).
        pipeline: Image preprocessing (default: the model's preprocess config). ``processor=`` is an alias.
        mask_grid: Input-space patch grid of the image players (default: the trunk's final grid).
        name: Name reported in explanations.
    """

    family = "openclip"

    def __init__(
        self,
        module: nn.Module,
        *,
        tokenizer: Any = None,
        pipeline: ImagePipeline | None = None,
        mask_grid: tuple[int, int] | None = None,
        name: str = "openclip",
    ) -> None:
        for attr in ("visual", "logit_scale"):
            if not hasattr(module, attr):
                raise UnsupportedModelError(f"{type(module).__name__} is not an open_clip CLIP model (no .{attr})")
        self._module: Any = module.eval()
        for p in self._module.parameters():
            p.requires_grad_(False)
        self.name = name
        trunk = trunk_of(cast(nn.Module, self._module.visual))
        hf_text = type(getattr(self._module, "text", None)).__name__ == "HFTextEncoder"
        self.set_towers(
            OpenClipHFTextTower(self, tokenizer) if hf_text else OpenClipTextTower(self, tokenizer),
            TrunkTower(self, trunk, pipeline or pipeline_from_module(module), mask_grid=mask_grid),
        )

    @property
    def module(self) -> nn.Module:
        """The wrapped open_clip model."""
        return cast(nn.Module, self._module)


@register_wrapper
def wrap_openclip_towers(module: Any, **kw: Any) -> DualEncoder | None:
    """``dualex.wrap`` for open_clip models with timm, ResNet or CoCa towers (keywords: ``tokenizer``,
    ``pipeline``/``processor``, ``mask_grid``, ``name``)."""
    if not any(c.__module__.startswith("open_clip") for c in type(module).__mro__) or plain_vit(module):
        return None
    if "processor" in kw:
        kw["pipeline"] = kw.pop("processor")
    name = kw.pop("name", f"openclip:{type(module).__name__}")
    if not hasattr(module, "visual"):
        return None
    return OpenClipTowers(module, name=name, **kw)
