"""Data sets with ground truth for grounding checks (``dualex.data.shapes``: synthetic scenes)."""
