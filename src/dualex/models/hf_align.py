"""transformers ``AlignModel`` (ALIGN): an EfficientNet image tower and a BERT text tower.

Image (`AlignTrunk`, run by `dualex.models.trunk_tower.TrunkTower`): the stem (``embeddings``), the
EfficientNet blocks grouped into their *stages* (one stage per base block of the config, its repeats
included), then the pooler (average or max over the final map) — ALIGN's image embedding, with no
projection. A layer is one stage; its feature-map positions are the parts of ``ij`` and gradient maps;
games remove input-space patches of the final map's grid. Text: BERT, the ``[CLS]`` state through
``text_projection`` (`dualex.models.hf_clip_families.HFBertText`). The score is the cosine divided by
ALIGN's ``temperature``.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from dualex.models.hf import register_hf
from dualex.models.hf_clip_families import HFBertClip, HFBertText
from dualex.models.preprocess import ImagePipeline
from dualex.models.trunk_tower import TrunkTower
from dualex.models.trunks import Trunk


class AlignTrunk(Trunk):
    """ALIGN's EfficientNet (``AlignVisionModel``) split by stage."""

    family = "efficientnet"

    def __init__(self, vision_model: nn.Module, image_size: tuple[int, int]) -> None:
        super().__init__(vision_model, image_size)
        vm: Any = vision_model
        self.vm = vm
        cfg = vm.config
        repeats = [math.ceil(cfg.depth_coefficient * n) for n in cfg.num_block_repeats]
        blocks = list(vm.encoder.blocks)
        if sum(repeats) != len(blocks):
            raise ValueError(f"ALIGN config gives {sum(repeats)} blocks but the encoder has {len(blocks)}")
        self.stages: list[list[nn.Module]] = []
        start = 0
        for n in repeats:
            self.stages.append(blocks[start : start + n])
            start += n

    @property
    def n_layers(self) -> int:
        """Number of EfficientNet stages the trunk is split into."""
        return len(self.stages)

    def kind_at(self, layer: int) -> str:
        """Every stage holds an (N, C, H, W) feature map ('nchw')."""
        return "nchw"

    def stem(self, pixels: Tensor) -> Tensor:
        """ALIGN's convolutional stem: (B, 3, H, W) -> the feature map entering stage 0."""
        out: Tensor = self.vm.embeddings(pixels)
        return out

    def unit(self, index: int, state: Tensor) -> Tensor:
        """Runs the blocks of stage `index` on an (R, C, h, w) feature map."""
        for blk in self.stages[index]:
            state = blk(state)
        return state

    def head(self, state: Tensor) -> Tensor:
        """The vision pooler on the last feature map: (R, C, h, w) -> (R, C) embeddings."""
        pooled: Tensor = self.vm.pooler(state)
        return pooled.reshape(pooled.shape[:2])


class AlignImage(TrunkTower):
    """ALIGN's EfficientNet image tower."""

    def __init__(self, owner: Any) -> None:
        size = int(owner.vision_config.image_size)
        super().__init__(owner, AlignTrunk(owner._module.vision_model, (size, size)), owner.pipeline)


@register_hf("align")
class HFAlign(HFBertClip):
    """transformers ``AlignModel``: EfficientNet image tower (`AlignImage`), BERT text tower."""

    family = "hf-align"
    text_tower_type = HFBertText
    image_tower_type = AlignImage  # type: ignore[assignment]  # a TrunkTower, not an HFImageTower

    def default_pipeline(self) -> ImagePipeline:
        """ALIGN's image pipeline: resize and centre-crop to the config's size, pixels scaled to [-1, 1]."""
        size = int(self.vision_config.image_size)
        # ALIGN's processor: resize and centre-crop to the image size, pixels scaled to [-1, 1]
        return ImagePipeline(size=size, crop=(size, size), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    @property
    def logit_scale(self) -> float:
        """ALIGN divides cosines by a learnt temperature: 1 / temperature."""
        return float(1.0 / self._module.temperature.detach().reshape(-1)[0])
