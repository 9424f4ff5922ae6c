"""InteractionLIME (``method="interaction_lime"``): a bilinear surrogate fitted on joint perturbations.

Joukovsky, Sammani, Deligiannis, "Model-Agnostic Visual Explanations via Approximate Bilinear Models",
ICIP 2023: LIME (Ribeiro et al., KDD 2016, arXiv:1602.04938) for a model of two inputs. Both inputs are
perturbed at random at the same time and a **bilinear form** ``x_1ᵀ W x_2`` of the two perturbation
vectors is fitted to the model's outputs by weighted least squares; W holds the interactions and its
singular vectors give pairs of jointly relevant parts (`interaction_modes`).

dualex's version (written from that description):

* Players: caption tokens (non-special positions) and image patches. Perturbations are binary keep
  vectors ``z_T ∈ {0,1}^{n_T}``, ``z_I ∈ {0,1}^{n_I}``, each player kept with probability ``p``;
  a removed player is masked with the model's own ``mask`` (image: patch set to the dataset mean;
  text: attention mask 0).
* Surrogate: ``f(z_T, z_I) ≈ [1, z_T]ᵀ Θ [1, z_I]`` with ``main_effects=True`` (default), i.e. an
  intercept, main effects and the token × patch matrix W, still a bilinear form of the augmented
  vectors; ``main_effects=False`` fits the paper's plain ``z_Tᵀ W z_I``.
* Samples: ``m_T`` caption perturbations × ``m_I`` image perturbations, all ``m_T · m_I`` pairs scored
  from ``m_T + m_I`` encoder passes (the two towers run separately, as FIxLIP's cross-modal estimator
  does); the unperturbed input is the first row on each side.
* Weights: LIME's exponential kernel on each side's cosine distance to the unperturbed input,
  ``π(z) = exp(−(1 − sqrt(|z|/n))² / kernel_width²)``, multiplied across the two sides; this product
  makes the weighted normal equations a Kronecker product, solved exactly in closed form with ridge
  penalty ``alpha`` (LIME's ``Ridge(alpha=1)`` by default).

Outputs: ``cross`` ``(S, P)`` (zero rows at special positions), ``text_main``, ``image_main``,
``intercept``; ``target`` is the model's own similarity of the pair, which the surrogate approximates
at the unperturbed input; diagnostics hold the weighted R² of the fit and the top singular value of W.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.games.uncertainty import DEFAULT_BOOT, Source, bootstrap_terms, budget_hint, summarise
from dualex.methods import register_method
from dualex.methods.common import Units, build_explanation, check_units, positive_int, scores_of
from dualex.models.base import DualEncoder, Pair, Side, SideInputs
from dualex.options import fraction
from dualex.progress import bar


def lime_kernel(z: np.ndarray, kernel_width: float | None) -> np.ndarray:
    """LIME weight of each perturbation row ``(m, n)`` against the all-kept input: ``(m,)`` float64."""
    if kernel_width is None:
        return np.ones(z.shape[0])
    n = max(z.shape[1], 1)
    d = 1.0 - np.sqrt(z.sum(1) / n)
    weights: np.ndarray = np.exp(-(d**2) / kernel_width**2)
    return weights


def fit_bilinear(
    z_text: np.ndarray,
    z_image: np.ndarray,
    y: np.ndarray,
    w_text: np.ndarray,
    w_image: np.ndarray,
    *,
    alpha: float = 0.0,
    main_effects: bool = True,
) -> np.ndarray:
    """Weighted ridge fit of ``y[a, b] ≈ x_T[a]ᵀ Θ x_I[b]`` on a grid of perturbations (pure, float64).

    With ``main_effects`` the rows are augmented, ``x = [1, z]``, so ``Θ[0, 0]`` is the intercept,
    ``Θ[1:, 0]`` and ``Θ[0, 1:]`` the text and image main effects and ``Θ[1:, 1:]`` the interactions;
    otherwise ``x = z`` and Θ is the interaction matrix alone. The weight of pair (a, b) is
    ``w_text[a] · w_image[b]``, so the problem is a Kronecker-structured least squares: with the
    singular value decompositions ``√w_T ⊙ X_T = U_T S_T V_Tᵀ`` and ``√w_I ⊙ X_I = U_I S_I V_Iᵀ`` the ridge
    solution is ``Θ = V_T [(U_Tᵀ Ỹ U_I) ⊙ s_T s_Iᵀ / ((s_T s_Iᵀ)² + alpha)] V_Iᵀ`` with
    ``Ỹ = diag(√w_T) y diag(√w_I)``; with ``alpha = 0`` and a singular side, the minimum-norm solution.

    Args:
        z_text: ``(m_T, n_T)`` caption perturbations (0/1).
        z_image: ``(m_I, n_I)`` image perturbations (0/1).
        y: ``(m_T, m_I)`` model outputs for every pair.
        w_text: ``(m_T,)`` non-negative weights.
        w_image: ``(m_I,)`` non-negative weights.
        alpha: Ridge penalty (≥ 0) on all coefficients.
        main_effects: Augment with a constant (intercept and main effects).

    Returns:
        Θ, ``(n_T + 1, n_I + 1)`` with main effects, else ``(n_T, n_I)``.
    """
    if alpha < 0:
        raise InputError(f"alpha must be ≥ 0, got {alpha}")
    xt = np.asarray(z_text, dtype=np.float64)
    xi = np.asarray(z_image, dtype=np.float64)
    if main_effects:
        xt = np.hstack([np.ones((xt.shape[0], 1)), xt])
        xi = np.hstack([np.ones((xi.shape[0], 1)), xi])
    wt = np.asarray(w_text, dtype=np.float64)
    wi = np.asarray(w_image, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (xt.shape[0], xi.shape[0]):
        raise InputError(f"y must have shape {(xt.shape[0], xi.shape[0])}, got {y.shape}")
    if np.any(wt < 0) or np.any(wi < 0):
        raise InputError("weights must be non-negative")
    st, si = np.sqrt(wt), np.sqrt(wi)
    # SVDs of the √w-scaled designs (no normal equations: the condition number is not squared)
    ut, sv_t, vt = np.linalg.svd(xt * st[:, None], full_matrices=False)
    ui, sv_i, vi = np.linalg.svd(xi * si[:, None], full_matrices=False)
    core = ut.T @ (st[:, None] * y * si[None, :]) @ ui  # (r_T, r_I)
    prod = sv_t[:, None] * sv_i[None, :]
    if alpha > 0:
        scale = prod / (prod**2 + alpha)
    else:  # a singular side: minimum-norm solution on the directions each side determines
        keep_t = sv_t > 1e-12 * max(float(sv_t.max(initial=0.0)), 1e-300)
        keep_i = sv_i > 1e-12 * max(float(sv_i.max(initial=0.0)), 1e-300)
        keep = keep_t[:, None] & keep_i[None, :]
        scale = np.where(keep, 1.0 / np.where(keep, prod, 1.0), 0.0)
    solution: np.ndarray = vt.T @ (core * scale) @ vi
    return solution


def weighted_r2(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> float:
    """Weighted coefficient of determination (1 = perfect; ``nan`` for constant targets)."""
    mean = float((w * y).sum() / w.sum())
    tot = float((w * (y - mean) ** 2).sum())
    if tot <= 0:
        return math.nan
    return 1.0 - float((w * (y - pred) ** 2).sum()) / tot


def perturbations(n: int, m: int, keep_prob: float, rng: np.random.Generator) -> np.ndarray:
    """``m`` distinct keep vectors over ``n`` players, the first all ones; all ``2^n`` when that is at most m.

    Rows are i.i.d. Bernoulli(``keep_prob``) draws; repeated rows are redrawn (they add no information to
    the fit), so the design identifies the surrogate as soon as it can.
    """
    if n < 22 and 2**n <= m:
        grid = ((np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)
        return np.concatenate([grid[-1:], grid[:-1]])  # all-ones first
    rows = [np.ones(n, dtype=bool)]
    seen = {rows[0].tobytes()}
    for _ in range(100):
        for z in rng.random((2 * m, n)) < keep_prob:
            key = z.tobytes()
            if key not in seen:
                seen.add(key)
                rows.append(z)
                if len(rows) == m:
                    return np.stack(rows)
    return np.stack(rows)  # (keep_prob near 0 or 1: fewer distinct rows exist in practice)


def split_samples(n_samples: int, n_text: int, n_image: int) -> tuple[int, int]:
    """``(m_T, m_I)``: caption and image perturbation counts with ``m_T · m_I ≈ n_samples``.

    Each side gets at least twice its number of coefficients; otherwise the split follows the ratio of
    coefficients (``m_T / m_I ≈ (n_T + 1) / (n_I + 1)``).
    """
    m_t = round(math.sqrt(n_samples * (n_text + 1) / (n_image + 1)))
    m_t = max(2 * (n_text + 1), m_t)
    if n_text < 22:
        m_t = min(m_t, max(2**n_text, 1))
    m_i = max(2 * (n_image + 1), n_samples // max(m_t, 1))
    return int(m_t), int(m_i)


def _theta_errors(
    z_t: np.ndarray,
    z_i: np.ndarray,
    y: np.ndarray,
    w_t: np.ndarray,
    w_i: np.ndarray,
    theta: np.ndarray,
    t_pos: Tensor,
    n_tokens: int,
    n_boot: int,
    rng: np.random.Generator,
    *,
    alpha: float,
    main_effects: bool,
    target: float,
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Bootstrap standard errors of Θ as Explanation ``stderr`` tensors, and their diagnostics."""
    base = {"text": w_t, "image": w_i}

    def refit(w: Any) -> np.ndarray:
        ww = {**base, **w}
        return fit_bilinear(z_t, z_i, y, ww["text"], ww["image"], alpha=alpha, main_effects=main_effects).ravel()

    extra = 1 if main_effects else 0
    n_t, n_i = z_t.shape[1], z_i.shape[1]
    sources = {
        "text": Source(w_t, 1, n_t, n_t + extra if z_t.shape[0] > n_t + extra else 0),
        "image": Source(w_i, 1, n_i, n_i + extra if z_i.shape[0] > n_i + extra else 0),
    }
    errs = bootstrap_terms(refit, sources, n_boot=n_boot, rng=rng)
    se = errs.se.reshape(theta.shape)
    W_se = se[1:, 1:] if main_effects else se
    cross = torch.zeros(n_tokens, n_i)
    cross[t_pos] = torch.from_numpy(W_se).float()
    out = {"cross": cross}
    if main_effects:
        text_main = torch.zeros(n_tokens)
        text_main[t_pos] = torch.from_numpy(se[1:, 0]).float()
        out.update(text_main=text_main, image_main=torch.from_numpy(se[0, 1:]).float())
    idx = np.zeros(theta.shape, dtype=bool)
    if main_effects:
        idx[1:, 1:] = True
    else:
        idx[:] = True
    flat = np.nonzero(idx.ravel())[0]
    diag = {"se_total": errs.se_total, "n_boot": float(n_boot), "coalitions_per_term": errs.info["coalitions_per_term"]}
    diag.update(summarise(theta.ravel()[flat], errs.se[flat]))
    diag["budget_hint"] = budget_hint(
        theta.ravel(),
        errs,
        lambda b: dict(zip(("text", "image"), split_samples(b, n_t, n_i), strict=True)),
        target=target,
        index=flat,
        sizes={"text": n_t, "image": n_i},
    )
    return out, diag


def _embed(model: DualEncoder, side: Side, inputs: SideInputs, keep: Tensor, how: str, chunk: int, pb: Any) -> Tensor:
    """Embeddings ``(m, D)`` of row 0 of ``inputs`` under each coalition of ``keep`` ``(m, n)``."""
    parts = []
    with torch.no_grad():
        for start in range(0, keep.shape[0], chunk):
            masked = model.tower(side).mask(inputs, keep[start : start + chunk], how=how)
            parts.append(model.tower(side).encode(masked).float())
            pb.update(int(min(chunk, keep.shape[0] - start)))
    return torch.cat(parts)


def interaction_modes(explanation: Explanation, k: int = 3) -> list[tuple[float, Tensor, Tensor]]:
    """The top-k singular triplets of ``cross``: ``(σ, text weights (S,), image map (rows, cols))``.

    The InteractionLIME paper reads its explanations from the singular value decomposition of the
    fitted interaction matrix: each mode pairs a caption pattern with an image pattern. Signs are fixed
    so that each image map has a positive sum.
    """
    if explanation.cross is None:
        raise InputError(f"method {explanation.method!r} gives no token × patch matrix to decompose")
    U, s, Vh = torch.linalg.svd(explanation.cross.double(), full_matrices=False)
    out = []
    for j in range(min(k, s.numel())):
        u, v = U[:, j], Vh[j]
        if float(v.sum()) < 0:
            u, v = -u, -v
        out.append((float(s[j]), u.float(), v.float().reshape(explanation.grid)))
    return out


@register_method(
    "interaction_lime",
    order=2,
    summary="InteractionLIME: bilinear token × patch surrogate fitted on joint random maskings "
    "(Joukovsky et al., ICIP 2023)",
    cost="m_T text + m_I image encoder passes for m_T·m_I scored pairs",
)
def explain_interaction_lime(
    model: DualEncoder,
    pair: Pair,
    *,
    budget: int = 4096,
    m_text: int | None = None,
    m_image: int | None = None,
    p: float = 0.5,
    kernel_width: float | None = 0.25,
    alpha: float = 1.0,
    main_effects: bool = True,
    text_masking: str = "default",
    image_masking: str = "default",
    units: Units = "cosine",
    seed: int = 0,
    internal_batch_size: int = 64,
    progress: bool | None = None,
    n_boot: int = DEFAULT_BOOT,
    hint_target: float = 0.1,
) -> list[Explanation]:
    """InteractionLIME explanation of each pair (see the module docstring).

    Joukovsky, Sammani, Deligiannis, "Model-Agnostic Visual Explanations via Approximate Bilinear
    Models", ICIP 2023.

    Args:
        model: The dual encoder (any adapter; only ``mask`` and the towers are used).
        pair: Prepared batch of B pairs.
        budget: Number of scored (caption, image) perturbation pairs, split into
            ``m_T × m_I`` by `split_samples` unless given explicitly (the sampling vocabulary of
            FIxLIP: formerly ``n_samples``).
        m_text: ``m_T``, caption perturbations (overrides the split; formerly ``n_text_samples``).
        m_image: ``m_I``, image perturbations (overrides the split; formerly ``n_image_samples``).
        p: Probability that a player is kept in a perturbation (formerly ``keep_prob``).
        kernel_width: LIME kernel width (0.25 is LIME's default for images); None weighs all samples
            equally.
        alpha: Ridge penalty (LIME: 1.0); 0 gives plain weighted least squares.
        main_effects: Fit intercept and main effects besides the interactions.
        text_masking: ``how`` of the model's text ``mask`` (``"default"``, ``"pad"``, ...).
        image_masking: ``how`` of the model's image ``mask`` (``"default"``, ``"black"``).
        units: Fit the ``"cosine"`` or the model's ``"score"``.
        seed: Seed of the perturbations (every row uses ``seed``, as its single call does).
        internal_batch_size: Masked inputs per encoder pass.
        progress: Show a progress bar.
        n_boot: Bootstrap replicates per side for ``stderr`` (`dualex.games.uncertainty`: the caption
            and the image perturbations are re-weighted separately and Θ refitted; the unperturbed rows
            stay fixed); 0 skips them.
        hint_target: Relative error of the top-10 interactions that ``diagnostics["budget_hint"]``
            (in ``budget`` units) aims at.

    Returns:
        One `Explanation` per pair with ``cross`` ``(S, P)``, ``text_main``, ``image_main`` (zero
        without main effects), ``intercept``, ``target`` (the pair's own similarity in ``units``) and
        diagnostics ``r2`` (weighted, on the samples), ``sigma_1`` (top singular value of W),
        ``n_text_samples`` and ``n_image_samples``.
    """
    check_units(units)
    positive_int("budget", budget, minimum=4)
    chunk = positive_int("internal_batch_size", internal_batch_size)
    positive_int("n_boot", n_boot, minimum=0)
    if n_boot == 1:
        raise InputError("n_boot must be 0 (no standard errors) or at least 2")
    fraction("p", p, what="the keep probability")
    if kernel_width is not None and not float(kernel_width) > 0:
        raise InputError(f"kernel_width must be positive or None, got {kernel_width!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer, got {seed!r}")
    scores, cosines = scores_of(model, pair)
    out: list[Explanation] = []
    for b in range(pair.batch_size):
        text, image = pair.text.select([b]), pair.image.select([b])
        t_pos = text.players(0)
        n_t, n_i = int(t_pos.numel()), int(image.players(0).numel())
        if n_t == 0 or n_i == 0:
            raise InputError("InteractionLIME needs at least one caption token and one image patch")
        m_t, m_i = split_samples(budget, n_t, n_i)
        if m_text is not None:
            m_t = positive_int("m_text", m_text, minimum=2)
        if m_image is not None:
            m_i = positive_int("m_image", m_image, minimum=2)
        rng = np.random.default_rng(seed)  # the row's single call: batches change nothing
        z_t = perturbations(n_t, m_t, p, rng)
        z_i = perturbations(n_i, m_i, p, rng)
        dev = model.device
        with bar(z_t.shape[0] + z_i.shape[0], "interaction_lime", progress) as pb:
            e_t = _embed(model, "text", text, torch.from_numpy(z_t).to(dev), text_masking, chunk, pb)
            e_i = _embed(model, "image", image, torch.from_numpy(z_i).to(dev), image_masking, chunk, pb)
        sims = model.similarity(e_i, e_t, all_pairs=True)  # (m_I, m_T)
        y = (sims.score if units == "score" else sims.cosine).T.double().cpu().numpy()
        w_t, w_i = lime_kernel(z_t, kernel_width), lime_kernel(z_i, kernel_width)
        theta = fit_bilinear(z_t, z_i, y, w_t, w_i, alpha=float(alpha), main_effects=main_effects)
        xt = np.hstack([np.ones((z_t.shape[0], 1)), z_t]) if main_effects else z_t.astype(np.float64)
        xi = np.hstack([np.ones((z_i.shape[0], 1)), z_i]) if main_effects else z_i.astype(np.float64)
        r2 = weighted_r2(y, xt @ theta @ xi.T, np.outer(w_t, w_i))
        W = theta[1:, 1:] if main_effects else theta
        S = text.ids.shape[1]
        cross = torch.zeros(S, n_i)
        cross[t_pos] = torch.from_numpy(W).float()
        text_main = torch.zeros(S)
        image_main = torch.zeros(n_i)
        intercept = 0.0
        if main_effects:
            text_main[t_pos] = torch.from_numpy(theta[1:, 0]).float()
            image_main = torch.from_numpy(theta[0, 1:]).float()
            intercept = float(theta[0, 0])
        own = float(scores[b]) if units == "score" else float(cosines[b])
        sigma = float(np.linalg.svd(W, compute_uv=False)[0]) if W.size else 0.0
        stderr: dict[str, Tensor] = {}
        extra: dict[str, float] = {}
        if n_boot:
            stderr, extra = _theta_errors(
                z_t,
                z_i,
                y,
                w_t,
                w_i,
                theta,
                t_pos,
                S,
                n_boot,
                np.random.default_rng([seed, 1]),
                alpha=float(alpha),
                main_effects=main_effects,
                target=hint_target,
            )
        out.append(
            build_explanation(
                model,
                pair,
                b,
                method="interaction_lime",
                params={
                    "budget": budget,
                    "p": p,
                    "kernel_width": kernel_width,
                    "alpha": alpha,
                    "main_effects": main_effects,
                    "text_masking": text_masking,
                    "image_masking": image_masking,
                    "units": units,
                    "seed": seed,
                    "n_boot": n_boot,
                },
                score=float(scores[b]),
                cosine=float(cosines[b]),
                cross=cross,
                text_main=text_main,
                image_main=image_main,
                intercept=intercept,
                target=own,
                baseline=0.0,
                diagnostics={
                    "r2": r2,
                    "sigma_1": sigma,
                    "n_text_samples": float(z_t.shape[0]),
                    "n_image_samples": float(z_i.shape[0]),
                    **extra,
                },
                stderr=stderr,
            )
        )
    return out
