"""Reading images from the forms users hand us, with clear errors."""

from __future__ import annotations

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
