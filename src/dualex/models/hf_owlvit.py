"""transformers OWL-ViT and OWLv2 (``OwlViTModel``, ``Owlv2Model``): their image–text embeddings.

OWL-ViT's detection heads read every patch, but its ``get_image_features``/``get_text_features`` are a
CLIP: a CLS-pooled ViT (``pre_layernorm``, blocks, ``post_layernorm``, ``visual_projection``) and a
causal text transformer pooled at the largest id (end-of-text), ``text_projection``, scored with
``logit_scale`` · cosine. dualex explains that score, with CLIP's towers (`dualex.models.hf.HFClip`);
the only difference is the name of the image pre-norm.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dualex.models.base import SideInputs
from dualex.models.hf import HFClip, HFClipImage, register_hf


class OwlImage(HFClipImage):
    """OWL-ViT's ViT: CLIP's, with ``pre_layernorm`` for CLIP's ``pre_layrnorm``."""

    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        """Runs the OWL-ViT vision tower up to block `layer`.

        Args:
            inputs: ImageInputs with (B, 3, H, W) pixels.
            layer: Block index (0 = patch + position embeddings after pre_layernorm).

        Returns:
            (B, 1 + P, W) hidden states (CLS first) at the input of block `layer`.
        """
        layer = self.check_layer(layer)
        vm = self.model
        h: Tensor = vm.pre_layernorm(self.embed(self.check(inputs)))
        for blk in vm.encoder.layers[:layer]:
            h = blk(h, None)
        return h


@register_hf("owlvit", "owlv2")
class HFOwlVit(HFClip):
    """transformers ``OwlViTModel`` / ``Owlv2Model`` image–text embeddings."""

    family = "hf-owlvit"
    image_tower_type = OwlImage

    def pool_index(self, ids: Tensor, mask: Tensor) -> Tensor:
        """OWL-ViT pools at the largest id (end-of-text): (B,) positions."""
        return ids.to(torch.int).argmax(-1).long()  # as OWL-ViT pools: the largest id (end-of-text)
