"""transformers CLIP-shaped families beyond CLIP itself: MetaCLIP 2, Chinese-CLIP, AltCLIP.

All three keep CLIP's ViT image tower (``vision_model``: embeddings, ``pre_layrnorm``, ``encoder.layers``,
``post_layernorm`` on CLS, ``visual_projection``), run here by `dualex.models.hf.HFClipImage`:

* ``MetaClip2Model`` (MetaCLIP 2, worldwide): CLIP's causal text tower pooled at end-of-text, as
  `dualex.models.hf.HFClip` runs it;
* ``ChineseCLIPModel``: a BERT text tower (``text_model``: ``embeddings``, ``encoder.layer``), the first
  token's final state through ``text_projection``;
* ``AltCLIPModel``: an XLM-R text tower (``text_model.roberta``), then ``pre_LN``, ``transformation`` and
  the first token through ``text_projection``.

The BERT-style towers (`HFBertText`) are bidirectional and attend to non-padding tokens; a layer is one
encoder layer. Removing tokens: ``how="attention"`` (default: attention mask 0) or ``"pad"`` (the padding
id). References: ``[CLS]``/``<s>``, padding fillers and ``[SEP]``/``</s>`` (``"default"``: one filler;
``"same_length"``: fillers up to the caption's ``[SEP]``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dualex.models.base import SideInputs
from dualex.models.hf import HFClip, HFClipImage, HFDualEncoder, HFTextTower, broadcast_rows, register_hf
from dualex.models.sentence import _use_eager_attention, run_bert_layers
from dualex.models.tokenize import HFTokenizer, TokenizerLike


@register_hf("metaclip_2")
class HFMetaClip2(HFClip):
    """transformers ``MetaClip2Model``: CLIP's towers under another model type."""

    family = "hf-metaclip2"


class HFBertText(HFTextTower):
    """A BERT-style text tower pooled at the first token (Chinese-CLIP's BERT, AltCLIP's XLM-R)."""

    owner: HFBertClip

    @property
    def bert(self) -> Any:
        """The transformers encoder with ``embeddings`` and ``encoder.layer``."""
        tm = self.model
        return getattr(tm, "roberta", tm)

    @property
    def layers(self) -> Any:
        """The encoder's layers (``encoder.layer`` in BERT, ``encoder.layers`` in AltCLIP's XLM-R)."""
        enc = self.bert.encoder
        return enc.layer if hasattr(enc, "layer") else enc.layers

    @property
    def n_layers(self) -> int:
        """Number of BERT-style encoder layers."""
        return len(self.layers)

    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        """Runs the BERT-style text encoder up to layer `layer`.

        Args:
            inputs: TextInputs with (B, T) ids.
            layer: Layer index (0 = the encoder's embeddings).

        Returns:
            (B, T, W) hidden states at the input of layer `layer`.
        """
        layer = self.check_layer(layer)
        t = self.check(inputs)
        h: Tensor = self.bert.embeddings(input_ids=t.ids)
        return run_bert_layers(self.layers[:layer], h, t.mask)

    def head(self, h: Tensor) -> Tensor:
        """The family's head on final states ``(R, S, W)`` -> embeddings ``(R, D)``."""
        return self.owner.text_head(self.model, h)

    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        """Runs the encoder from layer `layer` (bidirectional, padding masked) and the family's head.

        Args:
            inputs: The TextInputs `hidden` came from (one row broadcasts).
            hidden: (R, T, W) hidden states at the input of layer `layer`.
            layer: Layer index.

        Returns:
            (R, D) unnormalised text embeddings from the first token.
        """
        layer = self.check_layer(layer)
        t = self.check(inputs)
        keys = broadcast_rows(t.mask, hidden.shape[0])
        return self.head(run_bert_layers(self.layers[layer:], hidden, keys))

    def attention_hooks(self, inputs: SideInputs, rec: Any) -> list[Any]:
        """Not supported for BERT-style text towers here: raises UnsupportedModelError."""
        raise self.missing("attention layers that dualex can record (BERT-style layers)")

    def attention_blocks(self) -> list[Any]:
        """Not supported for BERT-style text towers here: raises UnsupportedModelError."""
        raise self.missing("attention blocks that dualex can run as functions (BERT-style layers)")


class HFBertClip(HFDualEncoder):
    """A CLIP ViT image tower with a BERT-style text tower pooled at the first token."""

    family = "hf-bert-clip"
    causal_text = False
    text_tower_type = HFBertText
    image_tower_type = HFClipImage

    def __init__(self, module: torch.nn.Module, **kw: Any) -> None:
        super().__init__(module, **kw)
        _use_eager_attention(self.tower("text").bert)  # type: ignore[attr-defined]  # HFBertText

    def default_text_wrapper(self, tokenizer: Any) -> TokenizerLike:
        """Wraps a transformers tokenizer so it pads each batch to its longest caption."""
        return HFTokenizer(tokenizer, padding="longest")

    def pool_index(self, ids: Tensor, mask: Tensor) -> Tensor:
        """The first token ([CLS] / <s>) is pooled: (B,) zeros."""
        return torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)

    def _token(self, names: tuple[str, ...], short: str) -> int | None:
        """The id a transformers tokenizer gives for the first of ``names``, or a dualex tokenizer's ``short``."""
        tok = getattr(self.tokenizer, "tok", None)
        for name in names:
            value = getattr(tok, name, None) if tok is not None else None
            if value is not None:
                return int(value)
        value = getattr(self.tokenizer, short, None)
        return int(value) if isinstance(value, int) else None

    def bos_id(self) -> int:
        """The tokenizer's CLS (or BOS) id, else the config's BOS id (0 if unset)."""
        found = self._token(("cls_token_id", "bos_token_id"), "bos")
        return found if found is not None else int(self.text_config.bos_token_id or 0)

    def eos_id(self) -> int:
        """The tokenizer's SEP (or EOS) id, else the config's EOS id (2 if unset)."""
        found = self._token(("sep_token_id", "eos_token_id"), "eos")
        return found if found is not None else int(self.text_config.eos_token_id or 2)

    def filler_id(self) -> int:
        """Masked caption positions are filled with the pad id."""
        return self.pad_id()

    def text_head(self, text_model: Any, h: Tensor) -> Tensor:
        """The first token's final state through text_projection: (R, T, W) -> (R, D)."""
        out: Tensor = self._module.text_projection(h[:, 0])
        return out


@register_hf("chinese_clip")
class HFChineseClip(HFBertClip):
    """transformers ``ChineseCLIPModel``: BERT text tower, CLS state through ``text_projection``."""

    family = "hf-chinese-clip"


@register_hf("altclip")
class HFAltClip(HFBertClip):
    """transformers ``AltCLIPModel``: XLM-R text tower, ``pre_LN`` and ``transformation``, then the first
    token through ``text_projection``."""

    family = "hf-altclip"

    def text_head(self, text_model: Any, h: Tensor) -> Tensor:
        """AltCLIP's head: first token -> pre_LN -> transformation -> text_projection, (R, T, W) -> (R, D)."""
        projected = text_model.transformation(text_model.pre_LN(h[:, 0]))
        out: Tensor = self._module.text_projection(projected)
        return out
