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

Estimators:
* ``"crossmodal"`` (default): m_I image and m_T text coalitions sampled independently from μ_p, each
  embedded once; the m_I × m_T grid of scores is one matrix product, and the fit uses the grid's
  Kronecker structure (`dualex.games.regression.fit_product_surrogate`).
* ``"agnostic"``: ``budget`` joint coalitions, one masked pair each (each distinct side coalition is
  still embedded once), fitted by `dualex.games.regression.fit_surrogate`.

Differences from the reference, on purpose: sampled weights are scaled by the mass of the sampled
sizes (spec §7.7); image and text samplers get independent seeds; the held-out faithfulness sample
is drawn i.i.d. from μ_p; ``pairs=k`` reuses the sampled values for the first-order selection fit
instead of a second sampling run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.games.game import DualEncoderGame
from dualex.games.regression import (
    clique_pairs,
    cross_pairs,
    fit_product_surrogate,
    fit_surrogate,
    normalise_pairs,
)
from dualex.games.sampler import check_p, draw_iid, sample_banzhaf, split_budget, split_grid
from dualex.games.surrogate import DEFAULT_CHUNK_BYTES, Surrogate, all_pairs, explanation_terms, fit_quality
from dualex.games.uncertainty import DEFAULT_BOOT, TermErrors, joint_errors, product_errors, term_diagnostics
from dualex.methods import register_method
from dualex.methods.common import build_explanation, scores_of
from dualex.methods.shared import GameCaches
from dualex.models.base import DualEncoder, Pair

ESTIMATORS = ("crossmodal", "agnostic")
PAIR_SETS = ("all", "crossmodal", "none")


# ---------------------------------------------------------------------------------------------- options
def _check_optional_int(name: str, value: Any, minimum: int) -> int | None:
    return None if value is None else _check_int(name, value, minimum)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise InputError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _pair_label(pairs: Any) -> str:
    if isinstance(pairs, str):
        return pairs
    if isinstance(pairs, (int, np.integer)) and not isinstance(pairs, bool):
        return f"clique:{int(pairs)}"
    return "custom"


def _check_pairs(pairs: Any) -> None:
    if isinstance(pairs, str):
        if pairs not in PAIR_SETS:
            raise InputError(
                f"pairs must be one of {', '.join(PAIR_SETS)}, an integer k (top-k clique) or a list of (i, j) "
                f"player pairs; got {pairs!r}"
            )
    elif isinstance(pairs, bool):
        raise InputError("pairs must be a string, an integer or a list of pairs, not a bool")
    elif isinstance(pairs, (int, np.integer)):
        if int(pairs) < 2:
            raise InputError(f"a top-k clique needs k ≥ 2 players, got {pairs}")
    elif not isinstance(pairs, (Sequence, np.ndarray, Tensor)):
        raise InputError(f"pairs must be a string, an integer or a list of (i, j) pairs, got {type(pairs).__name__}")


def clique_players(phi: Tensor, n_image: int, k: int) -> Tensor:
    """The reference's top-k clique (spec §2.5): players with the largest |weighted Banzhaf value|.

    The text share is ``t = min(n_T, max(5, ceil(n_T · k / n)))`` tokens, the rest ``k − t`` patches.

    Args:
        phi: ``(n,)`` first-order values, image players first.
        n_image: Number of image players.
        k: Clique size.

    Returns:
        Sorted joint indices of the chosen players.
    """
    n = int(phi.numel())
    n_text = n - n_image
    if k >= n:
        return torch.arange(n)
    t = min(n_text, max(5, math.ceil(n_text * k / n)))
    i = min(n_image, k - t)
    t = min(n_text, k - i)
    img = torch.argsort(phi[:n_image].abs(), descending=True)[:i]
    txt = torch.argsort(phi[n_image:].abs(), descending=True)[:t] + n_image
    return torch.sort(torch.cat([img, txt])).values


def resolve_pairs(pairs: Any, n_image: int, n_text: int, phi: Tensor | None = None) -> Tensor:
    """The pair basis as ``(P, 2)`` joint indices (image players ``0..n_I−1``, then text players).

    Args:
        pairs: ``"all"``, ``"crossmodal"``, ``"none"``, an integer k (all pairs within the top-k clique,
            which needs ``phi``), or explicit ``(i, j)`` joint pairs.
        n_image: Number of image players.
        n_text: Number of text players.
        phi: First-order values for the clique selection.
    """
    n = n_image + n_text
    _check_pairs(pairs)
    if isinstance(pairs, str):
        if pairs == "all":
            return all_pairs(n)
        if pairs == "crossmodal":
            return cross_pairs(n_image, n_text)
        return torch.zeros(0, 2, dtype=torch.long)
    if isinstance(pairs, (int, np.integer)):
        if phi is None:
            raise InputError("a top-k clique needs first-order values to choose its players")
        return clique_pairs(clique_players(phi, n_image, int(pairs)))
    return normalise_pairs(pairs, n)


def side_terms(pairs: Any, n_image: int, n_text: int) -> tuple[int, int]:
    """Number of surrogate terms that live on each side alone: ``1 + n + intra-modal pairs``."""
    if isinstance(pairs, str):
        intra = pairs == "all"
        p_i = n_image * (n_image - 1) // 2 if intra else 0
        p_t = n_text * (n_text - 1) // 2 if intra else 0
    elif isinstance(pairs, (int, np.integer)):
        n = n_image + n_text
        k = min(int(pairs), n)
        t = min(n_text, max(5, math.ceil(n_text * k / n)))
        i = min(n_image, k - t)
        t = min(n_text, k - i)
        p_i, p_t = i * (i - 1) // 2, t * (t - 1) // 2
    else:
        P = normalise_pairs(pairs, n_image + n_text)
        p_i = int((n_image > P).all(1).sum())
        p_t = int((n_image <= P).all(1).sum())
    return 1 + n_image + p_i, 1 + n_text + p_t


def choose_split(budget: int, n_image: int, n_text: int, pairs: Any = "all", split: str = "auto") -> tuple[int, int]:
    """``(m_image, m_text)`` for the cross-modal estimator.

    ``"reference"``: the FIxLIP heuristic (`split_budget`). ``"auto"``: the same unless one side would
    get fewer coalitions than its own surrogate terms (``d_side = 1 + n + intra-modal pairs``, capped
    at 2^n) while ``budget ≥ d_image · d_text``; then that side gets exactly ``d_side`` coalitions and
    the other the rest. Such a side would otherwise be underdetermined (a minimum-norm solution, so
    biased intra-modal terms), e.g. 3 tokens with all pairs need all 7 of their 8 coalitions.
    """
    m_i, m_t = split_budget(budget, n_image, n_text)
    if split == "reference":
        return m_i, m_t
    d_i, d_t = side_terms(pairs, n_image, n_text)
    d_i = min(d_i, 2**n_image) if n_image < 62 else d_i
    d_t = min(d_t, 2**n_text) if n_text < 62 else d_t
    if (m_i >= d_i and m_t >= d_t) or d_i * d_t > budget:
        return m_i, m_t
    if m_t < d_t:
        m_t = d_t
        m_i = budget // m_t if n_image >= 62 else min(2**n_image, budget // m_t)
    else:
        m_i = d_i
        m_t = budget // m_i if n_text >= 62 else min(2**n_text, budget // m_i)
    return m_i, m_t


# ---------------------------------------------------------------------------------------------- method
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    holdout: int = 1024,
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
            tower passes (see ``split``); agnostic: ``budget`` distinct joint coalitions. At least 4.
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
        holdout: Size of the held-out sample from μ_p for the faithfulness diagnostics (0 to skip).
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
        ``pearson``, ``mse`` on the held-out coalitions, ``r2_train`` (weighted, in-sample),
        ``n_values``, ``m_image``, ``m_text``, ``n_passes``, ``rank_deficient``, ``n_pairs``, timings;
        with ``n_boot``: ``stderr`` for every term, and diagnostics ``se_total`` (of the attributed
        total), ``se_median``, ``se_rel_top`` (median SE/|value| of the 10 largest pair terms),
        ``significant_share`` (pair terms whose 95 % interval excludes 0), ``budget_hint`` (budget for
        ``se_rel_top`` = ``hint_target``, projected from this fit), ``bootstrap_seconds``.
    """
    p = check_p(p)
    budget = _check_int("budget", budget, 4)
    if estimator not in ESTIMATORS:
        raise InputError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    _check_pairs(pairs)
    holdout = _check_int("holdout", holdout, 0)
    m_image = _check_optional_int("m_image", m_image, 1)
    m_text = _check_optional_int("m_text", m_text, 1)
    seed = _check_int("seed", seed, 0)
    n_boot = _check_int("n_boot", n_boot, 0)
    if n_boot == 1:
        raise InputError("n_boot must be 0 (no standard errors) or at least 2")
    if not (isinstance(hint_target, (int, float)) and hint_target > 0):
        raise InputError(f"hint_target must be a positive number, got {hint_target!r}")
    if split not in ("auto", "reference"):
        raise InputError(f"split must be 'auto' or 'reference', got {split!r}")
    if holdout and holdout < 4:
        raise InputError(f"holdout must be 0 (off) or at least 4, got {holdout}")
    solver_dev = torch.device(solver_device) if solver_device is not None else model.device
    scores, cosines = scores_of(model, pair)
    caches = GameCaches(pair)  # rows repeating a side's input share its coalition embeddings
    out = []
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
        caches.attach(game, row)
        if game.n_image < 1 or game.n_text < 1:
            raise InputError(
                f"pair {row} has {game.n_text} caption tokens and {game.n_image} image players; FIxLIP needs "
                "at least one of each"
            )
        rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
        sur, diag, errors = _estimate(
            game, p, budget, estimator, pairs, rngs, m_image, m_text, solver_dev, chunk_bytes, split, n_boot
        )
        if holdout:
            t0 = time.perf_counter()
            diag.update(_holdout(game, sur, p, holdout, estimator, rngs[3], diag["v_empty"]))
            diag["holdout_seconds"] = time.perf_counter() - t0
        diag["n_passes"] = float(game.n_passes)
        terms = explanation_terms(sur, game.n_image, game.text_positions, len(sub.text.tokens[0]))
        stderr: dict[str, Tensor] = {}
        if errors is not None:

            def at(b: int, nI: int = game.n_image, nT: int = game.n_text) -> dict[str, int]:
                if estimator == "agnostic":
                    return {"joint": b}
                return dict(zip(("image", "text"), choose_split(b, nI, nT, pairs, split), strict=True))

            se_sur, extra = term_diagnostics(
                sur, errors, at, target=hint_target, sizes={"image": game.n_image, "text": game.n_text}
            )
            se_terms = explanation_terms(se_sur, game.n_image, game.text_positions, len(sub.text.tokens[0]))
            stderr = {k: v for k, v in se_terms.items() if isinstance(v, Tensor)}
            diag.update(extra)
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
                    "pairs": _pair_label(pairs),
                    "image_masking": image_masking,
                    "text_masking": text_masking,
                    "seed": seed,
                    "holdout": holdout,
                    "split": split,
                    "units": "score",
                    "index": "FBII" if p == 0.5 else "FWBII",
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


def _estimate(
    game: DualEncoderGame,
    p: float,
    budget: int,
    estimator: str,
    pairs: Any,
    rngs: list[np.random.Generator],
    m_image: int | None,
    m_text: int | None,
    device: torch.device,
    chunk_bytes: int,
    split: str,
    n_boot: int = 0,
) -> tuple[Surrogate, dict[str, float], TermErrors | None]:
    nI, nT = game.n_image, game.n_text
    t0 = time.perf_counter()
    v0, vN = game.empty_and_full()
    diag: dict[str, float] = {"v_empty": v0, "v_full": vN}
    if estimator == "crossmodal":
        if m_image is None and m_text is None:
            mI, mT = choose_split(budget, nI, nT, pairs, split)
        elif m_image is not None and m_text is not None:
            mI, mT = m_image, m_text
        elif m_image is not None:
            mI, mT = m_image, max(1, budget // m_image)
        else:
            assert m_text is not None  # the other three cases are handled above
            mT = m_text
            mI = max(1, budget // mT)
        sI = sample_banzhaf(nI, mI, p, rngs[0])
        sT = sample_banzhaf(nT, mT, p, rngs[1])
        V = game.grid(sI.coalitions, sT.coalitions).to(device) - v0
        _sync(game.model.device)
        t1 = time.perf_counter()
        args = (sI.coalitions, sI.weights, sT.coalitions, sT.weights, V)
        phi = None
        if isinstance(pairs, (int, np.integer)) and not isinstance(pairs, bool):
            phi = fit_product_surrogate(*args, "none", device=device, chunk_bytes=chunk_bytes).main
        basis = resolve_pairs(pairs, nI, nT, phi)
        sur = fit_product_surrogate(*args, basis, device=device, chunk_bytes=chunk_bytes)
        diag.update(m_image=float(sI.m), m_text=float(sT.m), n_values=float(sI.m * sT.m))

        def boot() -> TermErrors:  # run after the fit's timing
            return product_errors(
                sI.coalitions, sI.weights, sT.coalitions, sT.weights, V, basis, n_boot=n_boot, rng=rngs[4],
                image_fixed=sI.n_enumerated, text_fixed=sT.n_enumerated, device=device, chunk_bytes=chunk_bytes,
            )  # fmt: skip
    else:
        s = sample_banzhaf(nI + nT, budget, p, rngs[2])
        y = game(s.coalitions).to(device) - v0
        _sync(game.model.device)
        t1 = time.perf_counter()
        phi = None
        if isinstance(pairs, (int, np.integer)) and not isinstance(pairs, bool):
            phi = fit_surrogate(s.coalitions, y, s.weights, "none", device=device, chunk_bytes=chunk_bytes).main
        basis = resolve_pairs(pairs, nI, nT, phi)
        sur = fit_surrogate(s.coalitions, y, s.weights, basis, device=device, chunk_bytes=chunk_bytes)
        diag.update(n_values=float(s.m))

        def boot() -> TermErrors:
            return joint_errors(
                s.coalitions, y, s.weights, basis, n_boot=n_boot, rng=rngs[4], n_fixed=s.n_enumerated,
                device=device, chunk_bytes=chunk_bytes,
            )  # fmt: skip

    _sync(device)
    t2 = time.perf_counter()
    diag.update(
        game_seconds=t1 - t0,
        fit_seconds=t2 - t1,
        r2_train=float(sur.info.get("r2_train", float("nan"))),
        rank_deficient=float(sur.info.get("rank_deficient", 0.0)),
        n_pairs=float(sur.pairs.shape[0]),
    )
    errors = None
    if n_boot:
        errors = boot()
        _sync(device)
        diag["bootstrap_seconds"] = time.perf_counter() - t2
    return sur, diag, errors


def _holdout(
    game: DualEncoderGame, sur: Surrogate, p: float, size: int, estimator: str, rng: np.random.Generator, v0: float
) -> dict[str, float]:
    """Faithfulness of ``sur`` on coalitions drawn i.i.d. from μ_p (not used in the fit)."""
    nI, nT = game.n_image, game.n_text
    if estimator == "crossmodal":
        # i.i.d. draws (not distinct ones), so that each grid cell is a draw from μ_p
        hI, hT = split_grid(size, nI, nT)
        ZI, ZT = draw_iid(nI, hI, p, rng), draw_iid(nT, hT, p, rng)
        y = (game.grid(ZI, ZT) - v0).flatten().cpu()
        Z = np.concatenate([np.repeat(ZI, hT, 0), np.tile(ZT, (hI, 1))], 1)
    else:
        Z = draw_iid(nI + nT, size, p, rng)
        y = (game(Z) - v0).cpu()
    q = fit_quality(y, sur.predict(torch.from_numpy(Z)))
    q["holdout_values"] = float(y.numel())
    return q


__all__ = [
    "choose_split",
    "clique_players",
    "explain_fixlip",
    "resolve_pairs",
]
