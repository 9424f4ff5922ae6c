"""Training and checking the bundled shapes CLIP (`shapes_train`, `shapes_eval`).

The model itself (architecture, tokenizer, asset directory, the ``"shapes"`` name for `dualex.load`) lives
in `dualex.models.shapes`; the scene generator in `dualex.datasets.shapes_generator`.
"""
