"""The exact decomposition of a reference-based similarity, from the four embeddings alone.

For embeddings e_t, e_i of the inputs and r_t, r_i of the references (where the integration path
starts), the cosine splits exactly into

    e_tᵀe_i / (‖e_t‖‖e_i‖) = (e_t − r_t)ᵀ(e_i − r_i)/n  +  e_tᵀr_i/n  +  r_tᵀe_i/n  −  r_tᵀr_i/n,

n = ‖e_t‖‖e_i‖. Integrated-Jacobian interactions add up to the first term (up to the integration error),
so the other three are what no interaction carries. For image–text CLIPs with a grey image and an
almost empty caption as references they are small; for text–text bi-encoders, whose reference
embeddings lie close to every sentence's embedding, r_tᵀr_i/n dominates (all-MiniLM-L6-v2: about 1.6,
see README), and the interactions of two unrelated sentences then add up to far more than their
cosine.

**xsbert's remedy** (Moeller et al., "An Attribution Method for Siamese Encoders", EMNLP 2023) shifts the
embedding space so that the reference maps to the origin, ẽ = e − r. The interactions then add up to
the shifted model's similarity itself; dualex normalises by ‖ẽ_t‖‖ẽ_i‖, so the total is
cos(e_t − r_t, e_i − r_i). The trade-off: that is the similarity of a different model (the one that
subtracts the reference embedding), not the cosine the model reports; what remains of the original
cosine is reported as the ``shift`` term.

Pure functions on 1-D float tensors; all results are plain floats in cosine units (the caller scales
them to score units).
"""

from __future__ import annotations

from torch import Tensor


def reference_terms(e_t: Tensor, e_i: Tensor, r_t: Tensor, r_i: Tensor) -> dict[str, float]:
    """The three reference terms of the cosine of ``e_t`` and ``e_i`` (cosine units).

    Args:
        e_t: ``(D,)`` embedding of the caption (or first sentence).
        e_i: ``(D,)`` embedding of the image (or second sentence).
        r_t: ``(D,)`` embedding where the caption's integration path starts.
        r_i: ``(D,)`` embedding where the image's integration path starts.

    Returns:
        ``text_x_image_reference`` = e_tᵀr_i/n, ``text_reference_x_image`` = r_tᵀe_i/n and
        ``reference_x_reference`` = −r_tᵀr_i/n with n = ‖e_t‖‖e_i‖; with the interaction total
        (e_t − r_t)ᵀ(e_i − r_i)/n they add up to the cosine exactly.
    """
    e_t, e_i, r_t, r_i = (v.double().flatten() for v in (e_t, e_i, r_t, r_i))
    n = float(e_t.norm() * e_i.norm())
    return {
        "text_x_image_reference": float(e_t @ r_i) / n,
        "text_reference_x_image": float(r_t @ e_i) / n,
        "reference_x_reference": -float(r_t @ r_i) / n,
    }


def shifted_cosine(e_t: Tensor, e_i: Tensor, r_t: Tensor, r_i: Tensor) -> float:
    """cos(e_t − r_t, e_i − r_i): the similarity of the model whose reference embeddings are subtracted."""
    a = (e_t - r_t).double().flatten()
    b = (e_i - r_i).double().flatten()
    return float(a @ b) / max(float(a.norm() * b.norm()), 1e-300)


def normaliser(e_t: Tensor, e_i: Tensor, r_t: Tensor, r_i: Tensor, *, subtract_reference: bool) -> float:
    """What the interactions are divided by: ‖e_t‖‖e_i‖, or ‖e_t − r_t‖‖e_i − r_i‖ for xsbert's shift."""
    if subtract_reference:
        return max(float((e_t - r_t).double().norm() * (e_i - r_i).double().norm()), 1e-300)
    return float(e_t.double().norm() * e_i.double().norm())


def similarity_terms(
    e_t: Tensor,
    e_i: Tensor,
    r_t: Tensor,
    r_i: Tensor,
    *,
    scale: float = 1.0,
    bias: float = 0.0,
    subtract_reference: bool = False,
) -> dict[str, float]:
    """Everything of the similarity that the interactions do not carry, in the explanation's units.

    Args:
        e_t: ``(D,)`` caption embedding.
        e_i: ``(D,)`` image embedding.
        r_t: ``(D,)`` caption path start.
        r_i: ``(D,)`` image path start.
        scale: 1 for cosine units, the logit scale for score units.
        bias: 0 for cosine units, the model's logit bias for score units (added as ``bias``).
        subtract_reference: xsbert's shift: the interactions add up to the shifted cosine, and the
            rest of the model's cosine is the single term ``shift`` = cos − shifted cos.

    Returns:
        Terms that, added to (interaction total − integration error), give the model's cosine (× scale,
        + bias).
    """
    if subtract_reference:
        cos = float(e_t.double().flatten() @ e_i.double().flatten()) / float(e_t.double().norm() * e_i.double().norm())
        out = {"shift": (cos - shifted_cosine(e_t, e_i, r_t, r_i)) * scale}
    else:
        out = {k: v * scale for k, v in reference_terms(e_t, e_i, r_t, r_i).items()}
    if bias:
        out["bias"] = float(bias)
    return out


__all__ = ["normaliser", "reference_terms", "shifted_cosine", "similarity_terms"]
