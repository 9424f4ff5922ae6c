"""Image preprocessing that records how each original image maps onto the model input.

The pipelines reproduce the usual CLIP (resize short side + centre crop) and SigLIP (plain resize)
processors with PIL bicubic resampling, and return, per image, the `ImageTransform` needed to map
boxes from original pixels onto the patch grid, plus the uint8 input image for overlays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from dualex.images import ImageTransform, load_image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


@dataclass
class ImagePipeline:
    """Resize (+ crop) and normalise images.

    Attributes:
        size: Target side: the short side for ``"resize_center_crop"``, the output (h, w) for ``"resize"``.
        crop: Output ``(h, w)`` after the centre crop (ignored for ``"resize"``).
        mean: Per-channel mean, in [0, 1] units.
        std: Per-channel standard deviation.
        mode: ``"resize_center_crop"`` (CLIP) or ``"resize"`` (SigLIP).
    """

    size: int | tuple[int, int]
    crop: tuple[int, int]
    mean: Sequence[float] = CLIP_MEAN
    std: Sequence[float] = CLIP_STD
    mode: Literal["resize_center_crop", "resize"] = "resize_center_crop"
    resample: int = Image.Resampling.BICUBIC

    def __call__(self, images: Sequence[Any]) -> tuple[Tensor, list[ImageTransform], list[Tensor]]:
        """Returns normalised pixels ``(B, 3, H, W)``, transforms and uint8 ``(H, W, 3)`` displays."""
        pixels, transforms, displays = [], [], []
        for image in images:
            im = load_image(image)
            w, h = im.size
            if self.mode == "resize":
                th, tw = (self.size, self.size) if isinstance(self.size, int) else self.size
                out = im.resize((tw, th), self.resample)
                tf = ImageTransform.resize((h, w), (th, tw))
            else:
                short = self.size if isinstance(self.size, int) else min(self.size)
                tf = ImageTransform.resize_center_crop((h, w), short, self.crop)
                s = short / min(h, w)
                nw, nh = round(w * s), round(h * s)
                res = im.resize((nw, nh), self.resample)
                left, top = round(tf.left), round(tf.top)
                out = res.crop((left, top, left + self.crop[1], top + self.crop[0]))
                tf.left, tf.top = float(left), float(top)
            arr = np.asarray(out, dtype=np.uint8).copy()
            displays.append(torch.from_numpy(arr))
            x = torch.from_numpy(arr).float().div(255.0).permute(2, 0, 1)
            x = (x - torch.tensor(self.mean)[:, None, None]) / torch.tensor(self.std)[:, None, None]
            pixels.append(x)
            transforms.append(tf)
        return torch.stack(pixels), transforms, displays

    def black(self) -> Tensor:
        """A black image in normalised space, ``(3, 1, 1)``, for broadcasting."""
        return ((0.0 - torch.tensor(self.mean)) / torch.tensor(self.std))[:, None, None]


def patch_keep_to_pixels(keep: Tensor, grid: tuple[int, int], image_hw: tuple[int, int]) -> Tensor:
    """Expand per-patch keep flags ``(K, rows*cols)`` to a pixel mask ``(K, 1, H, W)`` (float)."""
    rows, cols = grid
    H, W = image_hw
    k = keep.float().reshape(-1, 1, rows, cols)
    return torch.nn.functional.interpolate(k, size=(H, W), mode="nearest")
