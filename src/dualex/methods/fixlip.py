"""FIxLIP: weighted Banzhaf interactions of dual encoders (``method="fixlip"``).

Baniecki, Muschalik, Fumagalli, Hammer, Hüllermeier, Biecek, "Explaining Similarity in
Vision–Language Encoders with Weighted Banzhaf Interactions", NeurIPS 2025 (arXiv:2508.05430);
Reference code: github.com/hbaniecki/fixlip (MIT); none copied.

The game (`dualex.games.game.DualEncoderGame`, the one the metrics measure): players are the image
patches and the caption tokens without special tokens; a coalition masks the other players through
the adapter; the value is the model's score. The explanation is the 2-additive surrogate

    v̂(S) = e_∅ + Σ_{i∈S} e_i + Σ_{{i,j}⊆S} e_ij

that minimises the p-faithfulness loss Σ_S μ_p(S) (v(S) − v(∅) − v̂(S))², μ_p(S) = p^|S|(1−p)^(n−|S|)
(p = keep probability). Its pair terms are the weighted Banzhaf interactions, and
``e_i + p Σ_j e_ij`` the weighted Banzhaf values (`Explanation.first_order`).

The estimator is `dualex.games.approximator.RegressionApproximator` (index FBII at p = 0.5, else
FWBII); this module builds the pair's game, runs it and turns the result into an `Explanation`.
Estimators:
* ``"crossmodal"`` (default): m_I image and m_T text coalitions sampled independently from μ_p, each
  embedded once; the m_I × m_T grid of scores is one matrix product, and the fit uses the grid's
  Kronecker structure (`dualex.games.regression.fit_product_surrogate`).
* ``"agnostic"``: ``budget`` joint coalitions, one masked pair each (each distinct side coalition is
  still embedded once), fitted by `dualex.games.regression.fit_surrogate`.

Diagnostics come from the evaluated coalitions (cross-fitting, `dualex.games.crossfit`) unless a fresh
held-out sample is asked for (``holdout`` > 0).

Differences from the reference, on purpose: sampled weights are scaled by the mass of the sampled
sizes (spec §7.7); image and text samplers get independent seeds; the held-out faithfulness sample
is drawn i.i.d. from μ_p; ``pairs=k`` reuses the sampled values for the first-order selection fit
instead of a second sampling run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.games.approximator import RegressionApproximator
from dualex.games.basis import choose_split, clique_players, resolve_pairs, side_terms
from dualex.games.crossfit import DEFAULT_FOLDS
from dualex.games.game import DualEncoderGame
from dualex.games.sampler import check_p
from dualex.games.surrogate import DEFAULT_CHUNK_BYTES, explanation_terms
from dualex.games.uncertainty import DEFAULT_BOOT
from dualex.methods import register_method
from dualex.methods.common import build_explanation, n_rows, scores_of
from dualex.methods.shared import GameCaches
from dualex.models.base import DualEncoder, Pair


@register_method(
    "fixlip",
    order=2,
    summary="FIxLIP weighted Banzhaf interactions: main effects, token × patch, token × token and patch × patch "
    "terms of a p-faithful 2-additive surrogate (Baniecki et al., NeurIPS 2025)",
    cost="cross-modal: ≈ 2·sqrt(budget) masked tower passes + one WLS solve; agnostic: up to budget passes",
)
def explain_fixlip(
    model: DualEncoder,
    pair: Pair,
    *,
    p: float = 0.5,
    budget: int = 2**16,
    estimator: str = "crossmodal",
    pairs: Any = "all",
    image_masking: str = "default",
    text_masking: str = "default",
    seed: int = 0,
    internal_batch_size: int = 64,
    progress: bool | None = None,
    holdout: int | None = None,
    folds: int = DEFAULT_FOLDS,
    m_image: int | None = None,
    m_text: int | None = None,
    split: str = "auto",
    solver_device: str | torch.device | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    n_boot: int = DEFAULT_BOOT,
    hint_target: float = 0.1,
) -> list[Explanation]:
    """FIxLIP explanations of each (caption, image) pair.

    Args:
        model: The dual encoder (any adapter; for text-text bi-encoders the second sentence's
            tokens take the place of patches).
        pair: Prepared batch of B pairs.
        p: Keep probability of each player under μ_p, in (0, 1); p > 0.5 masks less (closer to the
            input), p < 0.5 more. 0.5 gives Faith-Banzhaf interactions.
        budget: Number of game values. Cross-modal: ``m_I · m_T ≤ budget`` values from ``m_I + m_T``
            tower passes (see ``split``); agnostic: ``budget`` distinct joint coalitions. At least 4. A
            budget at or above the number of distinct coalitions enumerates them all (exact FIxLIP);
            one that would need more than 2^22 distinct coalitions of a side is refused at once.
        estimator: ``"crossmodal"`` (default) or ``"agnostic"``.
        pairs: Pair terms of the surrogate: ``"all"`` (image–image, text–text and image–text),
            ``"crossmodal"`` (image–text only), ``"none"`` (first order: the weighted Banzhaf values),
            an integer k (all pairs among the k players with the largest first-order value, spec §2.5),
            or explicit ``(i, j)`` pairs of joint indices (patches ``0..P−1``, then caption players in
            order, specials skipped).
        image_masking: How removed patches are filled (`DualEncoder.mask` ``how``; HF: ``"default"``
            = zeros after normalisation = the dataset-mean colour, or ``"black"``).
        text_masking: How removed tokens are dropped (HF: ``"default"`` = attention mask 0, or ``"pad"``).
        seed: Seed of the coalition samplers (same seed, same explanation).
        internal_batch_size: Masked inputs per tower pass.
        progress: Progress bars (None: only on a terminal).
        holdout: Faithfulness diagnostics: None (default) cross-fits on the coalitions already
            evaluated (``folds`` folds over the image and the text coalitions, no extra tower pass);
            0 skips them; N ≥ 4 scores a fresh held-out sample of N values from μ_p (the old mode).
        folds: Folds of the cross-fitting (≥ 2).
        m_image: Explicit number of image coalitions (cross-modal; overrides the split).
        m_text: Explicit number of text coalitions (cross-modal; overrides the split).
        split: How the cross-modal budget is split into ``m_I × m_T``: ``"reference"`` (the FIxLIP
            heuristic, `split_budget`) or ``"auto"`` (the same, but moved so that each side has at least
            as many coalitions as it has surrogate terms whenever the budget allows; see `choose_split`).
        solver_device: Where to solve the regression (default: the model's device).
        chunk_bytes: Size of the solver's temporary blocks.
        n_boot: Bootstrap replicates per independently sampled coalition set for the standard errors
            (`dualex.games.uncertainty`: each side of the grid is re-weighted and refitted ``n_boot``
            times, the game values are reused); 0 skips them.
        hint_target: Relative error of the top-10 interactions that ``diagnostics["budget_hint"]`` aims at.

    Returns:
        One `Explanation` per pair in score units: ``text_main`` ``(S,)``, ``image_main`` ``(P,)``,
        ``cross`` ``(S, P)``, ``text_pairs`` ``(S, S)``, ``image_pairs`` ``(P, P)`` (rows are all caption
        positions, zero for specials; None for pair kinds outside the basis), ``intercept`` = e_∅,
        ``target`` = v(N) − v(∅), ``baseline`` = v(∅), and ``diagnostics``: ``r2``, ``spearman``,
        ``pearson``, ``mse`` out of sample (cross-fitted, weighted by μ_p: ``crossfit_values``,
        ``crossfit_folds``; or on the held-out sample: ``holdout_values``), ``r2_train`` (weighted,
        in-sample), ``n_values``, ``m_image``, ``m_text``, ``n_passes``, ``rank_deficient``, ``n_pairs``,
        ``underdetermined`` (1 when a side has fewer sampled coalitions than its intercept and main
        effects, with a `UserWarning` when errors are reported) and ``budget_needed`` (the budget that
        would suffice), timings; with ``n_boot``: ``stderr`` for every term, and diagnostics ``se_total``
        (of the attributed total), ``se_median``, ``se_rel_top`` (median SE/|value| of the 10 largest
        pair terms), ``significant_share`` (pair terms whose 95 % interval excludes 0), ``budget_hint``
        (budget for ``se_rel_top`` = ``hint_target``, projected from this fit), ``bootstrap_seconds``.
    """
    p = check_p(p)
    approx = RegressionApproximator(
        "FBII" if p == 0.5 else "FWBII",
        p=p,
        estimator=estimator,
        pairs=pairs,
        split=split,
        m_image=m_image,
        m_text=m_text,
        n_boot=n_boot,
        holdout=holdout,
        folds=folds,
        hint_target=hint_target,
        device=solver_device,
        chunk_bytes=chunk_bytes,
    )
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 4:
        raise InputError(f"budget must be an integer ≥ 4, got {budget!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer ≥ 0, got {seed!r}")
    seed = int(seed)
    caches = GameCaches(pair)  # rows repeating a side's input share its coalition embeddings
    games = []
    for row in range(pair.batch_size):
        game = _game(model, pair, row, image_masking, text_masking, internal_batch_size, progress)
        caches.attach(game, row)
        games.append(game)
    for g in games:  # refuse an impossible budget before any tower pass
        approx.check(budget, g.n_image, g.n_text)
    if approx.device is None:
        approx.device = model.device
    scores, cosines = scores_of(model, pair)
    out = []
    for row, game in enumerate(games):
        res = approx.approximate(budget, game, seed=seed)
        n_tokens = n_rows(game.pair.text)
        terms = explanation_terms(res.surrogate, game.n_image, game.text_positions, n_tokens)
        stderr: dict[str, Tensor] = {}
        if res.stderr is not None:
            se_terms = explanation_terms(res.stderr, game.n_image, game.text_positions, n_tokens)
            stderr = {k: v for k, v in se_terms.items() if isinstance(v, Tensor)}
        diag = res.diagnostics
        v0, vN = diag["v_empty"], diag["v_full"]
        out.append(
            build_explanation(
                model,
                pair,
                row,
                method="fixlip",
                params={
                    "p": p,
                    "budget": budget,
                    "estimator": estimator,
                    "pairs": approx.pair_label,
                    "image_masking": image_masking,
                    "text_masking": text_masking,
                    "seed": seed,
                    "diagnostics": "crossfit" if holdout is None else ("holdout" if holdout else "none"),
                    "holdout": int(holdout or 0),
                    "folds": folds,
                    "split": split,
                    "units": "score",
                    "index": res.index,
                    "n_boot": n_boot,
                },
                score=float(scores[row]),
                cosine=float(cosines[row]),
                target=vN - v0,
                baseline=v0,
                diagnostics=diag,
                stderr=stderr,
                **terms,
            )
        )
    return out


def _game(
    model: DualEncoder, pair: Pair, row: int, image_masking: str, text_masking: str, batch: int, progress: bool | None
) -> DualEncoderGame:
    game = DualEncoderGame(
        model,
        pair.select([row]),
        image_masking=image_masking,
        text_masking=text_masking,
        internal_batch_size=batch,
        progress=progress,
    )
    if game.n_image < 1 or game.n_text < 1:
        raise InputError(
            f"pair {row} has {game.n_text} caption tokens and {game.n_image} image players; FIxLIP needs "
            "at least one of each"
        )
    return game


__all__ = [
    "choose_split",
    "clique_players",
    "explain_fixlip",
    "resolve_pairs",
    "side_terms",
]
