"""Reading images from the forms users hand us (with clear errors), and `ImageTransform`: how an original
image maps onto a model's input canvas (model-free, so explanations and spans can use it without a model)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from dualex.errors import InputError


def _pixel_limit() -> int:
    return int(Image.MAX_IMAGE_PIXELS or 0)


def _check_pixels(width: int, height: int, where: str) -> None:
    limit = _pixel_limit()
    if limit and width * height > limit:
        raise InputError(
            f"{where} is {width}×{height} = {width * height / 1e6:.0f} megapixels, more than the limit of "
            f"{limit / 1e6:.0f} megapixels (PIL.Image.MAX_IMAGE_PIXELS, a guard against decompression bombs); "
            "downscale it first, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        )


def _header_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from an image file's header, without PIL's decompression-bomb check."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            return im.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _array_to_uint8(arr: np.ndarray, where: str) -> np.ndarray:
    """Pixel values of any numeric dtype -> uint8, scaled by the dtype's range; refuses what is ambiguous.

    * ``uint8``: as is; ``uint16`` (16-bit files): divided by 257, so 65535 -> 255;
    * other integers: values must lie in 0..255 (else refused: the range of the data is unknown);
    * floats: values in [0, 1] are scaled by 255, values in [0, 255] with some above 1 are taken as is;
      NaN, infinities, negative values or values above 255 are refused.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise InputError(
                f"{where} has {arr.dtype} values in [{lo}, {hi}]; dualex reads 8-bit (0..255) and 16-bit (uint16) "
                "images: convert it to one of those"
            )
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{where} has values of type {arr.dtype}; pass uint8, uint16 or float pixel values")
    if not np.isfinite(arr).all():
        raise InputError(f"{where} contains NaN or infinite values")
    flo, fhi = float(arr.min()), float(arr.max())
    if flo < 0 or fhi > 255:
        raise InputError(
            f"{where} has float values in [{flo:.4g}, {fhi:.4g}]; float images must lie in [0, 1] (or 0..255). "
            "Undo any normalisation first: dualex normalises images as the model expects"
        )
    scale = 255.0 if fhi <= 1.0 else 1.0
    return np.clip(arr.astype(np.float64) * scale, 0, 255).astype(np.uint8)


def to_rgb(im: Image.Image, where: str = "the image") -> Image.Image:
    """An RGB copy of a PIL image of any mode, with 16-bit and float modes scaled (not clipped) to 8 bits.

    PIL's own ``convert("RGB")`` clips ``I;16``/``I``/``F`` values above 255, so a 16-bit greyscale
    PNG would become almost white; here such modes go through `_array_to_uint8`.

    Raises:
        InputError: a mode whose values cannot be read as intensities (e.g. 32-bit integers outside
            0..65535, floats outside [0, 255]).
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im)
        if mode == "I":  # 32-bit integers: PIL's mode for 16-bit greyscale files in some formats
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > 65535:
                raise InputError(
                    f"{where} is a 32-bit integer image with values in [{lo}, {hi}]; dualex reads 8- and 16-bit images"
                )
            arr = arr.astype(np.uint16)
        elif mode.startswith("I;16"):
            arr = arr.astype(np.uint16)
        grey = _array_to_uint8(arr, where)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot convert {where} (PIL mode {mode}) to RGB ({exc})") from None


def load_image(image: Any) -> Image.Image:
    """Return an RGB PIL image from a path, PIL image, encoded bytes, array ``(H, W[, C])`` or tensor.

    16-bit and float images are scaled to 8 bits (not clipped).

    Raises:
        InputError: the file is missing, unreadable, not an image or larger than PIL's decompression-bomb
            limit, or the array has a bad shape or values whose range is not a known image range.
    """
    if isinstance(image, Image.Image):
        _check_pixels(*image.size, "the image")
        return to_rgb(image)
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.exists():
            raise InputError(f"image file not found: {path}")
        if path.is_dir():
            raise InputError(f"expected an image file but got a directory: {path}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    _check_pixels(*im.size, str(path))
                    im.load()
                    return to_rgb(im, str(path))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            _check_pixels(*_header_size(path), str(path))
            raise InputError(f"{path} is too large to read safely ({exc})") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise InputError(f"cannot read {path} as an image ({exc.__class__.__name__}: {exc})") from None
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image))
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch tensor, CHW or HWC
        arr = image.detach().cpu().numpy()
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = np.moveaxis(arr, 0, -1)
        image = arr
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise InputError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4); got shape {image.shape}")
        if arr.shape[0] < 2 or arr.shape[1] < 2:
            raise InputError(f"image of shape {image.shape} is too small")
        _check_pixels(arr.shape[1], arr.shape[0], "the image array")
        arr = _array_to_uint8(arr, "the image array")
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        return Image.fromarray(np.ascontiguousarray(arr[..., :3]))
    raise InputError(
        f"cannot use an object of type {type(image).__name__} as an image; pass a file path, "
        "a PIL image, or an (H, W, 3) array"
    )


def decode_image(data: bytes, where: str = "the image bytes") -> Image.Image:
    """An RGB PIL image from an encoded image file's bytes (JPEG, PNG, WebP, ... as PIL reads them).

    The same checks as `load_image` for files: PIL's decompression-bomb limit, 16-bit and float modes
    scaled to 8 bits.

    Raises:
        InputError: the bytes are not an image PIL can read, or the image is larger than the limit.
    """
    import io

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                _check_pixels(*im.size, where)
                im.load()
                return to_rgb(im, where)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{where} is too large to read safely ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"cannot read {where} as an image ({exc.__class__.__name__}: {exc})") from None


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
        """The transform as plain JSON data (`from_dict` reads it back)."""
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
        """The transform `to_dict` wrote."""
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
