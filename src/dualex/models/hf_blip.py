"""transformers BLIP's image–text contrastive embeddings: ``BlipForImageTextRetrieval`` and ``BlipModel``.

BLIP scores retrieval candidates with the cosine of two embeddings (its ITC head), which is what dualex
explains; the image-text matching head (cross-attention from text to image) is not a dual encoder and is
not used. Image: BLIP's ViT (``vision_model``: CLS + patches with a learned position table, blocks,
``post_layernorm``), the CLS state through ``vision_proj`` (retrieval) or ``visual_projection``
(``BlipModel``). Text: BLIP's BERT run as a plain bidirectional encoder (no image), the ``[CLS]`` state
through ``text_proj``/``text_projection``. The score: the cosine (retrieval) or ``logit_scale`` · cosine
(``BlipModel``). Layers are blocks; masking and references as for Chinese-CLIP
(`dualex.models.hf_clip_families`) and CLIP's ViT.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dualex.models.base import ImageInputs, PooledBlock, SideInputs
from dualex.models.hf import HFClipImage, register_hf
from dualex.models.hf_clip_families import HFBertClip, HFBertText
from dualex.models.parts import patch_tokens


def _retrieval(module: Any) -> bool:
    return hasattr(module, "text_encoder")


class BlipText(HFBertText):
    """BLIP's BERT text encoder without the image (``text_encoder`` or ``text_model``)."""

    @property
    def model(self) -> Any:
        """The BLIP text encoder: `text_encoder` of the retrieval model, else `text_model`."""
        m = self.owner._module
        return m.text_encoder if _retrieval(m) else m.text_model


class BlipImage(HFClipImage):
    """BLIP's ViT: no pre-norm, a learned position table, ``post_layernorm`` on CLS, then the projection."""

    owner: Any

    def embed(self, inputs: ImageInputs) -> Tensor:
        """CLS + patch embeddings + positions.

        Args:
            inputs: ImageInputs with (B, 3, S, S) pixels at the config's image size.

        Returns:
            (B, 1 + P, W) tokens.

        Raises:
            UnsupportedModelError: The pixels are not at the config's size.
        """
        emb = self.model.embeddings
        size = int(self.owner.vision_config.image_size)
        if tuple(inputs.pixels.shape[-2:]) != (size, size):
            raise self.missing(f"an input size other than {size}×{size}")
        dtype = emb.patch_embedding.weight.dtype
        x = patch_tokens(inputs, lambda px: emb.patch_embedding(px.to(dtype)).flatten(2).transpose(1, 2))
        cls = emb.class_embedding.expand(x.shape[0], 1, -1).to(dtype)
        h = torch.cat([cls, x], dim=1)
        out: Tensor = h + emb.position_embedding[:, : h.shape[1]].to(dtype)
        return out

    def _head(self, h: Tensor) -> Tensor:
        m = self.owner._module
        proj = m.vision_proj if _retrieval(m) else m.visual_projection
        out: Tensor = proj(self.model.post_layernorm(h))
        return out

    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        """Runs the BLIP vision tower up to block `layer`.

        Args:
            inputs: ImageInputs with (B, 3, S, S) pixels.
            layer: Block index (0 = the embeddings).

        Returns:
            (B, 1 + P, W) hidden states (CLS first) at the input of block `layer`.
        """
        layer = self.check_layer(layer)
        h = self.embed(self.check(inputs))
        for blk in self.model.encoder.layers[:layer]:
            h = blk(h)
        return h

    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        """Runs the vision tower from block `layer`, post layer norm and the vision projection at CLS.

        Args:
            inputs: The ImageInputs `hidden` came from.
            hidden: (R, 1 + P, W) hidden states at the input of block `layer`.
            layer: Block index.

        Returns:
            (R, D) unnormalised image embeddings.
        """
        layer = self.check_layer(layer)
        h = hidden
        for blk in self.model.encoder.layers[layer:]:
            h = blk(h)
        return self._head(h[:, 0])

    def pooled_block(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> PooledBlock | None:
        """None: BLIP's fused qkv attention has no pooled last block, tails run dense."""
        return None  # BLIP's fused qkv attention: dense tails

    def attention_hooks(self, inputs: SideInputs, rec: Any) -> list[Any]:
        """Not supported (BLIP's fused qkv attention): raises UnsupportedModelError."""
        raise self.missing("attention layers that dualex can record (BLIP's fused qkv attention)")

    def attention_blocks(self) -> list[Any]:
        """Not supported (BLIP's fused qkv attention): raises UnsupportedModelError."""
        raise self.missing("attention blocks that dualex can run as functions (BLIP's fused qkv attention)")


@register_hf("blip")
class HFBlip(HFBertClip):
    """transformers ``BlipForImageTextRetrieval`` (ITC embeddings) or ``BlipModel``."""

    family = "hf-blip"
    text_tower_type = BlipText
    image_tower_type = BlipImage

    def text_head(self, text_model: Any, h: Tensor) -> Tensor:
        """The first token's final state through the text projection: (R, T, W) -> (R, D)."""
        m = self._module
        proj = m.text_proj if _retrieval(m) else m.text_projection
        out: Tensor = proj(h[:, 0])
        return out

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale) when the model has one, else 1.0 (the score is the cosine)."""
        scale = getattr(self._module, "logit_scale", None)
        return 1.0 if scale is None else float(scale.detach().exp())
