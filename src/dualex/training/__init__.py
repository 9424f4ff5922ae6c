"""Training: contrastive in-domain fine-tuning of a CLIP (`finetune`), and the bundled shapes CLIP
(`shapes_train` trains it, `shapes_eval` checks its retrieval and grounding).

The bundled model itself (architecture, tokenizer, asset directory, the ``"shapes"`` name for
`dualex.load`) lives in `dualex.models.shapes`; the scene generator in `dualex.datasets.shapes_generator`.
"""
