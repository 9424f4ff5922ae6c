"""FIxLIP (SI) (``method="fixlip_si"``): Shapley-kernel counterpart of FIxLIP, Faith-Shap interactions.

Baniecki, Muschalik, Fumagalli, Hammer, Hüllermeier, Biecek, "Explaining Similarity in
Vision–Language Encoders with Weighted Banzhaf Interactions", NeurIPS 2025 (arXiv:2508.05430), whose
baseline "FIxLIP (SI)" fits the same 2-additive surrogate as FIxLIP but with the Shapley kernel instead
of the p-weighted law (arXiv:2508.05430): the Faith-Shap interaction index of order 2
(Tsai, Yeh, Ravikumar, "Faith-Shap: The Faithful Shapley Interaction Index", JMLR 2023,
arXiv:2203.00870).

* Coalitions: joint coalitions over all players (patches, then caption tokens), sizes drawn ∝
  1/(k(n−k)) (KernelSHAP), uniform subsets of each size, ∅ and N always included with a large weight
  (a soft efficiency constraint), all by `dualex.games.sampler.sample_shapley`. The Shapley kernel does
  not factorise over the two modalities, so there is no cross-modal (grid) estimator: each coalition is
  one masked pair (each distinct side coalition is embedded once).
* Fit: the exact weighted least squares of `dualex.games.regression.fit_surrogate`, shared with FIxLIP.
* Result: ``intercept`` = e_∅, main effects, token × patch ``cross``, ``text_pairs``, ``image_pairs``
  in score units; ``Explanation.first_order()`` gives ``e_i + ½ Σ_j e_ij``, the Shapley values of the
  surrogate (``params["p"] = 0.5``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.games.approximator import RegressionApproximator
from dualex.games.crossfit import DEFAULT_FOLDS
from dualex.games.game import DualEncoderGame, Game
from dualex.games.surrogate import DEFAULT_CHUNK_BYTES, Surrogate, explanation_terms
from dualex.games.uncertainty import DEFAULT_BOOT
from dualex.methods import register_method
from dualex.methods.common import build_explanation, positive_int, scores_of
from dualex.models.base import DualEncoder, Pair


def faith_shap(
    game: Game,
    budget: int,
    seed: int | np.random.SeedSequence | np.random.Generator = 0,
    pairs: Any = "all",
    *,
    n_image: int | None = None,
    anchor_weight: float = 1e6,
    device: torch.device | str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> tuple[Surrogate, dict[str, float]]:
    """Faith-Shap (order 2) surrogate of any game from Shapley-kernel samples (model-agnostic).

    A shortcut for ``RegressionApproximator("FSII", ...).approximate(budget, game)`` without standard
    errors or out-of-sample diagnostics.

    Args:
        game: ``game(coalitions (K, n) bool) -> (K,)`` values, with ``n_players``.
        budget: Number of distinct coalitions (∅ and N included), ≥ 2.
        seed: Seed, `numpy.random.SeedSequence` or generator of the coalition sampler.
        pairs: Pair basis: ``"all"``, ``"crossmodal"`` (needs ``n_image``), ``"none"`` (first order:
            KernelSHAP's Shapley values), an integer k (all pairs among the k players with the largest
            |Shapley value| from a first-order fit on the same samples; needs ``n_image``) or ``(P, 2)``
            joint pairs.
        n_image: Number of image players (first in the joint order), for ``"crossmodal"``.
        anchor_weight: Regression weight of ∅ and N relative to a total mass of 1 for the others.
        device: Where to solve.
        chunk_bytes: Solver block size.

    Returns:
        The `Surrogate` of ``v(S) − v(∅)`` and diagnostics ``v_empty``, ``v_full``, ``n_values``,
        ``r2_train``, ``rank_deficient``.
    """
    approx = RegressionApproximator(
        "FSII", pairs=pairs, anchor_weight=anchor_weight, n_boot=0, holdout=0, device=device, chunk_bytes=chunk_bytes
    )
    res = approx.approximate(budget, game, seed=seed, n_image=n_image)
    return res.surrogate, res.diagnostics


@register_method(
    "fixlip_si",
    order=2,
    summary="FIxLIP (SI): Faith-Shap interactions from Shapley-kernel samples, FIxLIP's Shapley counterpart "
    "(Baniecki et al., NeurIPS 2025)",
    cost="up to budget masked (image, caption) pairs + one WLS solve",
)
def explain_fixlip_si(
    model: DualEncoder,
    pair: Pair,
    *,
    budget: int = 2**12,
    pairs: Any = "all",
    image_masking: str = "default",
    text_masking: str = "default",
    anchor_weight: float = 1e6,
    seed: int = 0,
    holdout: int | None = None,
    folds: int = DEFAULT_FOLDS,
    internal_batch_size: int = 64,
    progress: bool | None = None,
    solver_device: str | torch.device | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    n_boot: int = DEFAULT_BOOT,
    hint_target: float = 0.1,
) -> list[Explanation]:
    """FIxLIP (SI) explanation of each (caption, image) pair.

    Baniecki et al., "Explaining Similarity in Vision–Language Encoders with Weighted Banzhaf
    Interactions", NeurIPS 2025 (its "FIxLIP (SI)" / FSII baseline).

    Args:
        model: The dual encoder (any adapter).
        pair: Prepared batch of B pairs.
        budget: Number of distinct joint coalitions (masked pairs), ∅ and N included; ≥ 2. The paper
            used 2^17 for ViT-B models.
        pairs: Pair terms, as for ``method="fixlip"``: ``"all"``, ``"crossmodal"``, ``"none"`` (Shapley
            values), an integer k (top-k clique by Shapley value) or explicit joint ``(i, j)`` pairs.
        image_masking: ``how`` of the model's image ``mask``.
        text_masking: ``how`` of the model's text ``mask``.
        anchor_weight: Regression weight of ∅ and N (a soft efficiency constraint).
        seed: Seed of the sampler (every row uses the first child of ``SeedSequence(seed)``, as its single
            call does: a batch row gets what its single call gets).
        holdout: Fit-quality diagnostics: None (default) cross-fits on the evaluated coalitions (``folds``
            folds, no extra tower pass); 0 skips them; N ≥ 4 scores a fresh Shapley-kernel sample of N.
        folds: Folds of the cross-fitting (≥ 2).
        internal_batch_size: Masked inputs per tower pass.
        progress: Progress bars.
        solver_device: Where to solve the regression (default: the model's device).
        chunk_bytes: Solver block size.
        n_boot: Bootstrap replicates for ``stderr`` (as ``method="fixlip"``; the coalitions are one joint
            sample); 0 skips them.
        hint_target: Relative error of the top-10 interactions that ``diagnostics["budget_hint"]`` aims at.

    Returns:
        One `Explanation` per pair in score units with ``text_main``, ``image_main``, ``cross``,
        ``text_pairs``, ``image_pairs`` (per the basis), ``intercept``, ``target`` = v(N) − v(∅),
        ``baseline`` = v(∅), and diagnostics (``r2_train``, ``n_values``, ``n_passes``, out-of-sample
        ``r2``/``spearman``/``pearson``/``mse`` (cross-fitted or held out), ``underdetermined``,
        ``budget_needed``, timings; error summaries with ``n_boot``).
    """
    positive_int("budget", budget, minimum=2)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    approx = RegressionApproximator(
        "FSII",
        pairs=pairs,
        anchor_weight=anchor_weight,
        n_boot=n_boot,
        holdout=holdout,
        folds=folds,
        hint_target=hint_target,
        device=solver_device,
        chunk_bytes=chunk_bytes,
    )
    games = []
    for row in range(pair.batch_size):
        game = DualEncoderGame(
            model,
            pair.select([row]),
            image_masking=image_masking,
            text_masking=text_masking,
            internal_batch_size=internal_batch_size,
            progress=progress,
        )
        if game.n_image < 1 or game.n_text < 1:
            raise InputError(
                f"pair {row} has {game.n_text} caption tokens and {game.n_image} image players; FIxLIP (SI) "
                "needs at least one of each"
            )
        approx.check(budget, game.n_image, game.n_text)  # before any tower pass
        games.append(game)
    if approx.device is None:
        approx.device = model.device
    scores, cosines = scores_of(model, pair)
    out: list[Explanation] = []
    for row, game in enumerate(games):
        row_seed = np.random.SeedSequence(seed).spawn(1)[0]  # a fresh copy per row: each row as its single call
        res = approx.approximate(budget, game, seed=row_seed)
        diag = res.diagnostics
        n_tokens = len(game.pair.text.tokens[0])
        terms = explanation_terms(res.surrogate, game.n_image, game.text_positions, n_tokens)
        stderr: dict[str, torch.Tensor] = {}
        if res.stderr is not None:
            se_terms = explanation_terms(res.stderr, game.n_image, game.text_positions, n_tokens)
            stderr = {k: v for k, v in se_terms.items() if isinstance(v, torch.Tensor)}
        out.append(
            build_explanation(
                model,
                pair,
                row,
                method="fixlip_si",
                params={
                    "budget": budget,
                    "pairs": pairs if isinstance(pairs, (str, int)) else "custom",
                    "image_masking": image_masking,
                    "text_masking": text_masking,
                    "anchor_weight": anchor_weight,
                    "seed": seed,
                    "diagnostics": "crossfit" if holdout is None else ("holdout" if holdout else "none"),
                    "holdout": int(holdout or 0),
                    "folds": folds,
                    "units": "score",
                    "index": "FSII",
                    "p": 0.5,
                    "n_boot": n_boot,
                },
                score=float(scores[row]),
                cosine=float(cosines[row]),
                target=diag["v_full"] - diag["v_empty"],
                baseline=diag["v_empty"],
                diagnostics=diag,
                stderr=stderr,
                **terms,
            )
        )
    return out
