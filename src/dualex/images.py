"""Reading images from the forms users hand us (with clear errors), and `ImageTransform`: how an original
image maps onto a model's input canvas (model-free, so explanations and spans can use it without a model)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from dualex.errors import InputError


def load_image(image: Any) -> Image.Image:
    """Return an RGB PIL image from a path, PIL image, uint8/float array ``(H, W[, C])`` or tensor.

    Raises:
        InputError: the file is missing, unreadable or not an image, or the array has a bad shape.
    """
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.exists():
            raise InputError(f"image file not found: {path}")
        if path.is_dir():
            raise InputError(f"expected an image file but got a directory: {path}")
        try:
            with Image.open(path) as im:
                im.load()
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"cannot read {path} as an image ({exc.__class__.__name__}: {exc})") from None
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch tensor, CHW or HWC
        arr = image.detach().cpu().numpy()
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = np.moveaxis(arr, 0, -1)
        image = arr
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise InputError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4); got shape {arr.shape}")
        if arr.shape[0] < 2 or arr.shape[1] < 2:
            raise InputError(f"image of shape {arr.shape} is too small")
        if arr.dtype != np.uint8:
            if not np.isfinite(arr).all():
                raise InputError("image array contains NaN or infinite values")
            scale = 255.0 if arr.max() <= 1.0 else 1.0
            arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        return Image.fromarray(arr[..., :3])
    raise InputError(
        f"cannot use an object of type {type(image).__name__} as an image; pass a file path, "
        "a PIL image, or an (H, W, 3) array"
    )


FloatBox = tuple[float, float, float, float]


def float_box(values: Iterable[float]) -> FloatBox:
    """``(x0, y0, x1, y1)`` as floats from any four numbers (a list, tuple or array row)."""
    x0, y0, x1, y1 = (float(v) for v in values)
    return x0, y0, x1, y1


@dataclass
class ImageTransform:
    """How an original image was mapped onto the model's input canvas (for boxes and overlays).

    A point ``(x, y)`` of the original image lands at ``(x * scale_x - left, y * scale_y - top)`` on the
    input canvas of size ``input_size`` (height, width).
    """

    original_size: tuple[int, int]  # (height, width) of the original image, pixels
    input_size: tuple[int, int]  # (height, width) of the model input, pixels
    scale_x: float
    scale_y: float
    left: float = 0.0
    top: float = 0.0

    def box_to_input(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Map an ``(x0, y0, x1, y1)`` box in original pixels onto the input canvas (clipped)."""
        x0, y0, x1, y1 = box
        h, w = self.input_size
        nx0 = min(max(x0 * self.scale_x - self.left, 0.0), w)
        nx1 = min(max(x1 * self.scale_x - self.left, 0.0), w)
        ny0 = min(max(y0 * self.scale_y - self.top, 0.0), h)
        ny1 = min(max(y1 * self.scale_y - self.top, 0.0), h)
        return nx0, ny0, nx1, ny1

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_size": list(self.original_size),
            "input_size": list(self.input_size),
            "scale_x": self.scale_x,
            "scale_y": self.scale_y,
            "left": self.left,
            "top": self.top,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageTransform:
        return cls(
            original_size=tuple(d["original_size"]),
            input_size=tuple(d["input_size"]),
            scale_x=float(d["scale_x"]),
            scale_y=float(d["scale_y"]),
            left=float(d.get("left", 0.0)),
            top=float(d.get("top", 0.0)),
        )

    @classmethod
    def resize_center_crop(cls, original_size: tuple[int, int], resize: int, crop: tuple[int, int]) -> ImageTransform:
        """The CLIP pipeline: resize the short side to ``resize``, then centre-crop to ``crop`` (h, w)."""
        h, w = original_size
        s = resize / min(h, w)
        nh, nw = round(h * s), round(w * s)
        return cls(original_size, crop, nw / w, nh / h, (nw - crop[1]) / 2.0, (nh - crop[0]) / 2.0)

    @classmethod
    def resize(cls, original_size: tuple[int, int], size: tuple[int, int]) -> ImageTransform:
        """A plain resize (no crop) to ``size`` (h, w), as SigLIP processors do."""
        h, w = original_size
        return cls(original_size, size, size[1] / w, size[0] / h)
