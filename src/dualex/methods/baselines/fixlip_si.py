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

import time
from typing import Any

import numpy as np
import torch

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.games.game import DualEncoderGame, Game
from dualex.games.regression import fit_surrogate
from dualex.games.sampler import sample_shapley
from dualex.games.surrogate import DEFAULT_CHUNK_BYTES, Surrogate, explanation_terms, fit_quality
from dualex.games.uncertainty import DEFAULT_BOOT, TermErrors, joint_errors, term_diagnostics
from dualex.methods import register_method
from dualex.methods.common import build_explanation, positive_int, scores_of
from dualex.methods.fixlip import resolve_pairs
from dualex.models.base import DualEncoder, Pair


def faith_shap(
    game: Game,
    budget: int,
    rng: np.random.Generator,
    pairs: Any = "all",
    *,
    n_image: int | None = None,
    anchor_weight: float = 1e6,
    device: torch.device | str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    n_boot: int = 0,
    errors: list[TermErrors] | None = None,
) -> tuple[Surrogate, dict[str, float]]:
    """Faith-Shap (order 2) surrogate of any game from Shapley-kernel samples (model-agnostic).

    Args:
        game: ``game(coalitions (K, n) bool) -> (K,)`` values, with ``n_players``.
        budget: Number of distinct coalitions (∅ and N included), ≥ 2.
        rng: NumPy generator of the coalition sampler.
        pairs: Pair basis: ``"all"``, ``"crossmodal"`` (needs ``n_image``), ``"none"`` (first order:
            KernelSHAP's Shapley values), an integer k (all pairs among the k players with the largest
            |Shapley value| from a first-order fit on the same samples; needs ``n_image``) or ``(P, 2)``
            joint pairs.
        n_image: Number of image players (first in the joint order), for ``"crossmodal"``.
        anchor_weight: Regression weight of ∅ and N relative to a total mass of 1 for the others.
        device: Where to solve.
        chunk_bytes: Solver block size.
        n_boot: Bootstrap replicates for standard errors (`dualex.games.uncertainty.joint_errors`;
            drawn from ``rng`` after the sample); 0 skips them.
        errors: A list that receives the `TermErrors` when ``n_boot`` > 0.

    Returns:
        The `Surrogate` of ``v(S) − v(∅)`` and diagnostics ``v_empty``, ``v_full``, ``n_values``,
        ``r2_train``, ``rank_deficient``.
    """
    n = int(game.n_players)
    if n < 2:
        raise InputError(f"Shapley interactions need at least 2 players, got {n}")
    n_i = n if n_image is None else int(n_image)
    if n_image is None and not (isinstance(pairs, str) and pairs in ("all", "none")) and not _is_pairs(pairs):
        raise InputError("pairs='crossmodal' or a top-k clique needs n_image (the number of image players)")
    s = sample_shapley(n, budget, rng, anchor_weight=anchor_weight)
    y = game(s.coalitions).double().cpu()
    v0, vN = float(y[0]), float(y[1])  # sample_shapley puts ∅ and N first
    kw: dict[str, Any] = {"device": device, "chunk_bytes": chunk_bytes}
    phi = None
    if isinstance(pairs, int) and not isinstance(pairs, bool):  # clique by Shapley value, same samples
        phi = fit_surrogate(s.coalitions, y - v0, s.weights, "none", **kw).main
    basis = resolve_pairs(pairs, n_i, n - n_i, phi)
    sur = fit_surrogate(s.coalitions, y - v0, s.weights, basis, **kw)
    diag = {
        "v_empty": v0,
        "v_full": vN,
        "n_values": float(s.m),
        "r2_train": float(sur.info.get("r2_train", float("nan"))),
        "rank_deficient": float(sur.info.get("rank_deficient", 0.0)),
        "n_pairs": float(sur.pairs.shape[0]),
    }
    if n_boot and errors is not None:
        errors.append(
            joint_errors(s.coalitions, y - v0, s.weights, basis, n_boot=n_boot, rng=rng, n_fixed=s.n_enumerated, **kw)
        )
    return sur, diag


def _is_pairs(pairs: Any) -> bool:
    return not isinstance(pairs, (str, int)) and pairs is not None


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
    holdout: int = 0,
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
        seed: Seed of the sampler (row b uses the b-th child of ``SeedSequence(seed)``).
        holdout: Size of a fresh Shapley-kernel sample for the faithfulness diagnostics (0 to skip).
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
        ``baseline`` = v(∅), and diagnostics (``r2_train``, ``n_values``, ``n_passes``, holdout
        ``r2``/``spearman``/``pearson``/``mse`` when ``holdout`` > 0, timings).
    """
    positive_int("budget", budget, minimum=2)
    positive_int("holdout", holdout, minimum=0)
    positive_int("n_boot", n_boot, minimum=0)
    if n_boot == 1:
        raise InputError("n_boot must be 0 (no standard errors) or at least 2")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if holdout and holdout < 4:
        raise InputError(f"holdout must be 0 (off) or at least 4, got {holdout}")
    solver_dev = torch.device(solver_device) if solver_device is not None else model.device
    scores, cosines = scores_of(model, pair)
    seeds = np.random.SeedSequence(seed).spawn(pair.batch_size)
    out: list[Explanation] = []
    for row in range(pair.batch_size):
        sub = pair.select([row])
        game = DualEncoderGame(
            model,
            sub,
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
        rng_fit, rng_hold = (np.random.default_rng(s) for s in seeds[row].spawn(2))
        t0 = time.perf_counter()
        errs: list[TermErrors] = []
        sur, diag = faith_shap(
            game,
            budget,
            rng_fit,
            pairs,
            n_image=game.n_image,
            anchor_weight=anchor_weight,
            device=solver_dev,
            chunk_bytes=chunk_bytes,
            n_boot=n_boot,
            errors=errs,
        )
        diag["fit_seconds"] = time.perf_counter() - t0
        if holdout:
            h = sample_shapley(game.n_players, holdout, rng_hold)
            y = game(h.coalitions).double().cpu() - diag["v_empty"]
            diag.update(fit_quality(y, sur.predict(torch.from_numpy(h.coalitions))))
            diag["holdout_values"] = float(h.m)
        diag["n_passes"] = float(game.n_passes)
        terms = explanation_terms(sur, game.n_image, game.text_positions, len(sub.text.tokens[0]))
        stderr: dict[str, torch.Tensor] = {}
        if errs:
            se_sur, extra = term_diagnostics(
                sur, errs[0], lambda b: {"joint": b}, target=hint_target, sizes={"joint": game.n_players}
            )
            se_terms = explanation_terms(se_sur, game.n_image, game.text_positions, len(sub.text.tokens[0]))
            stderr = {k: v for k, v in se_terms.items() if isinstance(v, torch.Tensor)}
            diag.update(extra)
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
                    "holdout": holdout,
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
