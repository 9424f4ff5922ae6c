"""dualex: explain why a dual encoder finds an image and a caption similar.

Quick start::

    import dualex
    model = dualex.load("shapes")
    ex = dualex.explain(model, "scene.png", "a red circle left of a blue square", method="ij")
    ex.image_map("red circle")      # rows x cols map of the patches that interact with the span
    ex.plot(spans=["red circle", "blue square"]).savefig("fig.png")
"""

from __future__ import annotations

from dualex.errors import DualexError, InputError, ModelNotAvailableError, UnsupportedModelError
from dualex.explanation import Explanation
from dualex.methods import explain, list_methods
from dualex.models import DualEncoder, Pair, load, wrap

__version__ = "0.1.0"

__all__ = [
    "DualEncoder",
    "DualexError",
    "Explanation",
    "InputError",
    "ModelNotAvailableError",
    "Pair",
    "UnsupportedModelError",
    "__version__",
    "explain",
    "list_methods",
    "load",
    "wrap",
]
