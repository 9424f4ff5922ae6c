"""Model adapters behind the `DualEncoder` contract."""

from dualex.images import ImageTransform
from dualex.models.base import DualEncoder, ImageInputs, Pair, Scores, Side, TextInputs
from dualex.models.registry import load, register_alias, register_loader, register_wrapper, wrap

__all__ = [
    "DualEncoder",
    "ImageInputs",
    "ImageTransform",
    "Pair",
    "Scores",
    "Side",
    "TextInputs",
    "load",
    "register_alias",
    "register_loader",
    "register_wrapper",
    "wrap",
]
