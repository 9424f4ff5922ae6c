"""The explanation of a prompt ensemble, from the explanations of its templates.

A zero-shot classifier embeds class k by J templates ("a photo of a {}.", ...) and uses the normalised
mean of the normalised template embeddings,

    c = m / ‖m‖,   m = (1/J) Σ_j ê_j,   ê_j = e_j / ‖e_j‖.

For an image embedding x the classifier's cosine is therefore a weighted sum of the template cosines with
one common weight,

    cos(x, c) = x̂ᵀm / ‖m‖ = ω Σ_j cos(x, e_j),   ω = 1 / (J ‖m‖) = 1 / ‖Σ_j ê_j‖,

(1/J ≤ ω ≤ 1: ω = 1/J when the templates agree, larger when they spread), and its score
s = λ cos + β (logit scale λ, bias β) is ω Σ_j s_j + β (1 − J ω) in the template scores s_j.

Every explanation dualex builds adds up to its pair's similarity, so the weighted sum of the template
explanations adds up to the class's: each template's terms enter with weight ω, and

* ij (token × patch interactions A_j, integration error δ_j, reference terms R_j): the ensemble's
  interactions are the rows ω A_j of every template's tokens; its image map is ω Σ_j (Σ_s A_j[s]); the
  reference terms are ω Σ_j R_j (the bias, in score units, is the model's β once);
* FIxLIP (2-additive surrogate of each template's masking game, score units): weighted Banzhaf indices
  are linear in the game, and the ensemble game ω Σ_j v_j(S_I ∪ S_j) + β (1 − J ω) shares the image
  players while each template's tokens are players of its own summand only. So its interactions are
  ω · template j's terms for (token of j) × patch and token × token within j, zero between tokens of
  different templates, and ω Σ_j for patch main effects and patch × patch terms; the empty-coalition
  value (``baseline``) is ω Σ_j v_j(∅) + β (1 − J ω). (The ensemble game keeps ω at its full-input
  value: masking tokens of one template does not re-normalise the class embedding.)

`ensemble_explanation` builds that explanation as one `Explanation` whose caption is the templates
joined by ``" | "`` (their token rows stacked in order), so it plots, saves and decomposes as any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation

SEPARATOR = " | "


def ensemble_weight(embeddings: Tensor) -> float:
    """ω = 1 / ‖Σ_j ê_j‖ for the J template embeddings ``(J, D)`` of one class."""
    e = torch.nn.functional.normalize(embeddings.double(), dim=-1)
    return float(1.0 / e.sum(0).norm())


def class_embedding(embeddings: Tensor) -> Tensor:
    """The classifier's class embedding: normalised mean of the normalised template embeddings, ``(D,)``."""
    e = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return torch.nn.functional.normalize(e.mean(0), dim=-1)


def _stack(parts: Sequence[Tensor | None], w: float) -> Tensor | None:
    if any(p is None for p in parts):
        return None
    return torch.cat([w * p for p in parts if p is not None], 0)


def _sum(parts: Sequence[Tensor | None], w: float) -> Tensor | None:
    if any(p is None for p in parts):
        return None
    return w * torch.stack([p for p in parts if p is not None]).sum(0)


def _block_diag(parts: Sequence[Tensor | None], w: float) -> Tensor | None:
    if any(p is None for p in parts):
        return None
    blocks = [w * p for p in parts if p is not None]
    n = sum(int(b.shape[0]) for b in blocks)
    out = torch.zeros(n, n, dtype=blocks[0].dtype)
    at = 0
    for b in blocks:
        k = int(b.shape[0])
        out[at : at + k, at : at + k] = b
        at += k
    return out


def ensemble_explanation(
    templates: Sequence[Explanation],
    weight: float,
    *,
    score: float,
    cosine: float,
    bias: float,
    label: str | None = None,
) -> Explanation:
    """One `Explanation` of a class's ensemble score from its J template explanations.

    Args:
        templates: The J explanations of (image, template j of the class), one method, one unit, one image.
        weight: ω of `ensemble_weight`.
        score: The classifier's score of the class, λ cos(x, c) + β.
        cosine: cos(x, c).
        bias: The model's logit bias β (enters score units).
        label: The class name (kept in ``params["class"]``).

    Returns:
        Token rows of every template (weighted by ω), summed image-side terms, and reference terms or
        baseline such that `Explanation.decomposition` adds up to the class's similarity (see the module
        docstring for the derivation).
    """
    if not templates:
        raise InputError("a prompt ensemble needs at least one template")
    first = templates[0]
    if any(t.method != first.method or t.units != first.units or t.grid != first.grid for t in templates):
        raise InputError("the template explanations must share one method, one unit and one image")
    w = float(weight)
    J = len(templates)
    score_units = first.units == "score"
    const = bias * (1.0 - J * w) if score_units else 0.0
    tokens: list[str] = []
    pieces: list[str] = []
    offsets: list[tuple[int, int] | None] = []
    text_parts: list[str] = []
    at = 0
    for t in templates:
        tokens.extend(t.tokens)
        pieces.extend(t.pieces if t.pieces is not None else t.tokens)
        offsets.extend(None if o is None else (o[0] + at, o[1] + at) for o in t.token_offsets)
        text_parts.append(t.text)
        at += len(t.text) + len(SEPARATOR)
    terms: dict[str, Any] = {
        "cross": _stack([t.cross for t in templates], w),
        "cross_prefix": _stack([t.cross_prefix for t in templates], w),
        "text_main": _stack([t.text_main for t in templates], w),
        "text_pairs": _block_diag([t.text_pairs for t in templates], w),
        "image_main": _sum([t.image_main for t in templates], w),
        "image_pairs": _sum([t.image_pairs for t in templates], w),
    }
    stderr: dict[str, Tensor] = {}
    for name, how in (("cross", _stack), ("cross_prefix", _stack), ("text_main", _stack),
                      ("text_pairs", _block_diag), ("image_main", _sum), ("image_pairs", _sum)):  # fmt: skip
        se = how([t.stderr.get(name) for t in templates], w)  # sums: the sum of SDs bounds the SD of a sum
        if se is not None and terms[name] is not None:
            stderr[name] = se
    refs: dict[str, float] = {}
    for t in templates:
        for k, v in t.reference_terms.items():
            refs[k] = refs.get(k, 0.0) + w * v
    if "bias" in refs:
        refs["bias"] = refs["bias"] + const  # = β: ω J β + β (1 − J ω)
    targets = [t.target for t in templates]
    target = None if any(v is None for v in targets) else w * sum(float(v) for v in targets if v is not None)
    diagnostics = {
        "ensemble_weight": w,
        "n_templates": float(J),
        "convergence_delta": w * sum(float(t.diagnostics.get("convergence_delta", 0.0)) for t in templates),
    }
    if not any("convergence_delta" in t.diagnostics for t in templates):
        del diagnostics["convergence_delta"]
    params = dict(first.params)
    params.update(templates=[t.text for t in templates], ensemble_weight=w)
    if label is not None:
        params["class"] = label
    return replace(
        first,
        tokens=tokens,
        pieces=pieces,
        special=torch.cat([t.special for t in templates]),
        text=SEPARATOR.join(text_parts),
        token_offsets=offsets,
        score=float(score),
        cosine=float(cosine),
        params=params,
        target=target,
        baseline=w * sum(t.baseline for t in templates) + const,
        intercept=w * sum(t.intercept for t in templates),
        diagnostics=diagnostics,
        stderr=stderr,
        reference_terms=refs,
        **terms,
    )


__all__ = ["SEPARATOR", "class_embedding", "ensemble_explanation", "ensemble_weight"]
