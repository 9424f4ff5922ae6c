"""Bundled models (the shapes CLIP). Importing registers their names with `dualex.load`.

``"shapes"`` is an alias of ``"hf:<dualex/assets/shapes>"``: a transformers ``CLIPModel`` loaded by the
same HF CLIP adapter as any real CLIP (see `dualex.zoo.shapes_model` and `dualex.zoo.shapes_train`).
"""

from __future__ import annotations

from dualex.models.registry import register_alias
from dualex.zoo.shapes_model import asset_dir

register_alias("shapes", f"hf:{asset_dir()}")
