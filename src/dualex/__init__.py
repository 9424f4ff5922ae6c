"""dualex: explain why a dual encoder finds an image and a caption similar.

Quick start::

    import dualex
    model = dualex.load("shapes")
    ex = dualex.explain(model, "scene.png", "a red circle left of a blue square", method="ij")
    ex.image_map("red circle")      # rows x cols map of the patches that interact with the span
    ex.plot(spans=["red circle", "blue square"]).savefig("fig.png")
"""

from __future__ import annotations

from dualex.threads import apply_env, passive_wait_policy

passive_wait_policy()  # before torch loads OpenMP: idle threads sleep instead of spinning (dualex.threads)

from dualex.decisions import Contrast, Decision, Ranking, contrast, explain_ranking, zero_shot  # noqa: E402
from dualex.errors import DualexError, InputError, ModelNotAvailableError, UnsupportedModelError  # noqa: E402
from dualex.explanation import Explanation  # noqa: E402
from dualex.methods import explain, list_methods  # noqa: E402
from dualex.models import DualEncoder, Pair, load, wrap  # noqa: E402

__version__ = "0.1.0"

apply_env()

__all__ = [
    "Contrast",
    "Decision",
    "DualEncoder",
    "DualexError",
    "Explanation",
    "InputError",
    "ModelNotAvailableError",
    "Pair",
    "Ranking",
    "UnsupportedModelError",
    "__version__",
    "contrast",
    "explain",
    "explain_ranking",
    "list_methods",
    "load",
    "wrap",
    "zero_shot",
]
