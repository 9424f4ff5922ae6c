"""The papers' analyses over evaluation runs: grounding by class, mismatches, fine-tuning, failure modes.

* `classwise_grounding` / `plot_classwise`: pointing-game scores per object class with counts and
  confidence intervals (``dualex classwise RUN_DIR``).
* `mismatch_analysis`: share of positive matching and negative cross span–box interactions for captions
  naming two objects; `hard_negative_analysis`: the same question for captions with an object swapped
  (``dualex mismatch``).
* `failure_modes`: features of failed objects, clustered and labelled (``dualex failures RUN_DIR``).
* `finetune` (lives in `dualex.training.finetune`, named here for older code): contrastive in-domain
  fine-tuning of a CLIP, saved for ``dualex.load`` (``dualex finetune``).
* `compare`: runs of different models, methods or data matched unit by unit, with paired bootstrap
  intervals and Wilcoxon tests per metric and class (``dualex compare RUN RUN ...``).

Modules are imported on first use, so ``import dualex.analysis`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "classwise_grounding": "dualex.analysis.classwise",
    "plot_classwise": "dualex.analysis.classwise",
    "wilson_interval": "dualex.analysis.classwise",
    "bootstrap_interval": "dualex.analysis.classwise",
    "mismatch_analysis": "dualex.analysis.mismatch",
    "hard_negative_analysis": "dualex.analysis.mismatch",
    "category_swapper": "dualex.analysis.mismatch",
    "shapes_swapper": "dualex.analysis.mismatch",
    "failure_modes": "dualex.analysis.failure_modes",
    "write_report": "dualex.analysis.failure_modes",
    "finetune": "dualex.training.finetune",
    "FinetuneConfig": "dualex.training.finetune",
    "coco_caption_pairs": "dualex.training.finetune",
    "compare": "dualex.analysis.compare",
    "Comparison": "dualex.analysis.compare",
    "plot_comparison": "dualex.analysis.compare",
    "paired_bootstrap": "dualex.analysis.compare",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dualex.analysis' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
