"""Out-of-sample fit quality of a sampled surrogate from the coalitions already evaluated (cross-fitting).

FIxLIP's diagnostics (p-faithfulness: how well the surrogate predicts game values it was not fitted
to, under μ_p) used to need a fresh held-out sample, which costs more tower passes than the fit
itself. Cross-fitting reuses the evaluated coalitions instead, so it costs a few refits (milliseconds)
and no tower pass:

* **Product designs** (the cross-modal grid, `fit_product_surrogate`): the image coalitions and the
  text coalitions are split into the same number K of random folds. Fit k is trained on the grid of
  the image coalitions outside image fold k and the text coalitions outside text fold k, and predicts
  the block (image fold k) × (text fold k), whose joint coalitions are new on *both* sides, as a fresh
  draw from μ_p would be. A side that holds every coalition of its players (enumerated exactly: the
  same set in any sample) is not split: its coalitions are in every training set and every block.
* **Joint samples** (`fit_surrogate`: agnostic FIxLIP, FIxLIP (SI)): the sampled rows are split into K
  folds; rows the sampler enumerated exactly (border sizes, the Shapley sampler's ∅/N anchors) stay in
  every training set and are never scored.
* When nothing is random (the whole game was enumerated), the fit *is* the exact computation and its
  in-sample quality under the μ_p weights is the population value; that is what is reported.

The held-out predictions are scored with the sampler's regression weights (each cell of a grid with
the product of its two weights), so the numbers estimate μ_p-expectations as the held-out sample did.
Each fold's surrogate is fitted on a fraction (1 − 1/K)² (grid) or 1 − 1/K (joint) of the values,
so the scores describe a slightly smaller budget: pessimistic, as cross-validation is. The default
K = 10 keeps 90 % of each side: near a side's identification threshold (as many coalitions as
terms) the out-of-sample fit changes quickly with the number of coalitions (measured on the bundled
model at budget 2^12, 21 text coalitions for 17 text terms: fresh-sample R² −0.70 for the fit, −1.0
with 19 text coalitions, −2.0 with 16), so fewer folds would describe a much worse fit. Well above
it the number of folds hardly matters (2^14: R² 0.731 / 0.734 / 0.736 with K = 4 / 8 / 16; a fresh
held-out sample of 4,096 values gave 0.585 for the same fit).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.games.regression import PairSpec, fit_product_surrogate, fit_surrogate
from dualex.games.surrogate import DEFAULT_CHUNK_BYTES, Surrogate

DEFAULT_FOLDS = 10


def weighted_fit_quality(y: Tensor | np.ndarray, pred: Tensor | np.ndarray, w: Tensor | np.ndarray) -> dict[str, float]:
    """How well ``pred`` matches ``y`` (both ``(K,)``) under weights ``w`` ``(K,)`` (any positive scale).

    Returns:
        ``r2`` (``1 − Σw(y − ŷ)² / Σw(y − ȳ_w)²``, NaN for constant ``y``), ``mse`` (weighted mean),
        ``pearson`` (weighted correlation) and ``spearman`` (weighted correlation of the ranks); the
        correlations are NaN when ``y`` or ``ŷ`` is constant. Equal weights give `fit_quality`'s values.
    """
    from scipy.stats import rankdata

    a = _numpy(y)
    b = _numpy(pred)
    ww = _numpy(w)
    if a.shape != b.shape or a.shape != ww.shape or a.size < 2:
        raise InputError("fit quality needs at least two (target, prediction, weight) triples of equal length")
    if not np.all(np.isfinite(ww)) or np.any(ww < 0) or ww.sum() <= 0:
        raise InputError("fit-quality weights must be finite, non-negative and not all zero")
    ww = ww / ww.sum()
    mean = float(ww @ a)
    tot = float(ww @ (a - mean) ** 2)
    res = float(ww @ (a - b) ** 2)
    out = {"r2": 1.0 - res / tot if tot > 0 else math.nan, "mse": res}
    out["pearson"] = _weighted_corr(a, b, ww)
    out["spearman"] = _weighted_corr(rankdata(a), rankdata(b), ww)
    return out


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    t = x.detach().double().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
    return t.reshape(-1)


def _weighted_corr(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    da, db = a - w @ a, b - w @ b
    va, vb = float(w @ (da * da)), float(w @ (db * db))
    if va <= 1e-300 or vb <= 1e-300 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(w @ (da * db)) / math.sqrt(va * vb)


def _folds(m: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``k`` disjoint random index sets covering ``0..m−1`` (sizes differ by at most one)."""
    return [np.sort(f) for f in np.array_split(rng.permutation(m), k)]


def _complete(coalitions: np.ndarray, n_fixed: int) -> bool:
    """Whether a side's coalitions are all of its players' coalitions, enumerated (not a random sample)."""
    m, n = coalitions.shape
    return bool(n_fixed >= m and n < 62 and m >= 2**n)


def crossfit_product(
    image_coalitions: np.ndarray,
    image_weights: np.ndarray,
    text_coalitions: np.ndarray,
    text_weights: np.ndarray,
    values: Tensor,
    pairs: PairSpec,
    *,
    rng: np.random.Generator,
    folds: int = DEFAULT_FOLDS,
    image_fixed: int = 0,
    text_fixed: int = 0,
    device: torch.device | str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> dict[str, float]:
    """Cross-fitted p-faithfulness of `fit_product_surrogate` on its own grid (see the module docstring).

    Args:
        image_coalitions: ``(m_I, n_I)`` bool, as fitted.
        image_weights: ``(m_I,)`` their regression weights.
        text_coalitions: ``(m_T, n_T)`` bool.
        text_weights: ``(m_T,)``.
        values: ``(m_I, m_T)`` targets of the fit (not recomputed).
        pairs: The pilot fit's pair basis (a selected clique stays fixed).
        rng: Seeded generator of the fold assignment.
        folds: K, the number of folds (≥ 2; fewer when a side has fewer coalitions).
        image_fixed: Leading image coalitions the sampler enumerated exactly.
        text_fixed: Leading text coalitions enumerated exactly.
        device: Where to solve.
        chunk_bytes: Solver block size.

    Returns:
        ``r2``, ``spearman``, ``pearson``, ``mse`` (weighted, on held-out cells), ``crossfit_values``
        (cells scored) and ``crossfit_folds`` (K; 0 when nothing was random and the in-sample quality
        of the exact fit is reported); all NaN when a random side has fewer than 2 coalitions.
    """
    _check_folds(folds)
    Zi, Zt = np.asarray(image_coalitions, dtype=bool), np.asarray(text_coalitions, dtype=bool)
    wi, wt = np.asarray(image_weights, dtype=np.float64), np.asarray(text_weights, dtype=np.float64)
    V = torch.as_tensor(values).double()
    m_i, m_t = Zi.shape[0], Zt.shape[0]
    split_i, split_t = not _complete(Zi, image_fixed), not _complete(Zt, text_fixed)
    sizes = [m for m, s in ((m_i, split_i), (m_t, split_t)) if s]
    kw: dict[str, Any] = {"device": device, "chunk_bytes": chunk_bytes}
    if not sizes:  # the whole game was enumerated: in-sample quality of the exact fit
        sur = fit_product_surrogate(Zi, wi, Zt, wt, V, pairs, **kw)
        out = _score_block(sur, Zi, Zt, V.cpu(), wi, wt)
        return {**out, "crossfit_values": float(m_i * m_t), "crossfit_folds": 0.0}
    k = min([folds, *sizes])
    if k < 2:
        return _nan_quality()
    f_i = _folds(m_i, k, rng) if split_i else [np.arange(m_i)] * k
    f_t = _folds(m_t, k, rng) if split_t else [np.arange(m_t)] * k
    ys, preds, ws = [], [], []
    all_i, all_t = np.ones(m_i, dtype=bool), np.ones(m_t, dtype=bool)
    for hi, ht in zip(f_i, f_t, strict=True):
        tr_i, tr_t = all_i.copy(), all_t.copy()
        if split_i:
            tr_i[hi] = False
        if split_t:
            tr_t[ht] = False
        sub = V[torch.from_numpy(tr_i)][:, torch.from_numpy(tr_t)]
        sur = fit_product_surrogate(Zi[tr_i], wi[tr_i], Zt[tr_t], wt[tr_t], sub, pairs, **kw)
        block = V[torch.from_numpy(hi)][:, torch.from_numpy(ht)].cpu()
        y, pred, w = _block_predictions(sur, Zi[hi], Zt[ht], block, wi[hi], wt[ht])
        ys.append(y)
        preds.append(pred)
        ws.append(w)
    out = weighted_fit_quality(np.concatenate(ys), np.concatenate(preds), np.concatenate(ws))
    return {**out, "crossfit_values": float(sum(y.size for y in ys)), "crossfit_folds": float(k)}


def crossfit_joint(
    coalitions: np.ndarray,
    values: Tensor,
    weights: np.ndarray,
    pairs: PairSpec,
    *,
    rng: np.random.Generator,
    folds: int = DEFAULT_FOLDS,
    n_fixed: int = 0,
    device: torch.device | str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> dict[str, float]:
    """Cross-fitted fit quality of `fit_surrogate` on one joint sample (agnostic FIxLIP, FIxLIP (SI)).

    Args:
        coalitions: ``(m, n)`` bool, as fitted.
        values: ``(m,)`` targets of the fit.
        weights: ``(m,)`` regression weights.
        pairs: The pilot fit's pair basis.
        rng: Seeded generator of the fold assignment.
        folds: K (≥ 2; fewer when there are fewer sampled rows).
        n_fixed: Leading rows enumerated exactly (or anchors): always trained on, never scored.
        device: Where to solve.
        chunk_bytes: Solver block size.

    Returns:
        As `crossfit_product`.
    """
    _check_folds(folds)
    Z = np.asarray(coalitions, dtype=bool)
    w = np.asarray(weights, dtype=np.float64)
    y = torch.as_tensor(values).double().cpu()
    m = Z.shape[0]
    kw: dict[str, Any] = {"device": device, "chunk_bytes": chunk_bytes}
    if n_fixed >= m:  # the whole game was enumerated
        sur = fit_surrogate(Z, y, w, pairs, **kw)
        out = weighted_fit_quality(y, sur.predict(torch.from_numpy(Z)), w)
        return {**out, "crossfit_values": float(m), "crossfit_folds": 0.0}
    k = min(folds, m - n_fixed)
    if k < 2:
        return _nan_quality()
    ys, preds, ws = [], [], []
    for held in _folds(m - n_fixed, k, rng):
        held = held + n_fixed
        train = np.ones(m, dtype=bool)
        train[held] = False
        sur = fit_surrogate(Z[train], y[torch.from_numpy(train)], w[train], pairs, **kw)
        ys.append(y[torch.from_numpy(held)].numpy())
        preds.append(sur.predict(torch.from_numpy(Z[held])).numpy())
        ws.append(w[held])
    out = weighted_fit_quality(np.concatenate(ys), np.concatenate(preds), np.concatenate(ws))
    return {**out, "crossfit_values": float(sum(v.size for v in ys)), "crossfit_folds": float(k)}


def _block_predictions(
    sur: Surrogate, Zi: np.ndarray, Zt: np.ndarray, block: Tensor, wi: np.ndarray, wt: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets, predictions and product weights of the cells ``Zi × Zt`` (image-major), flattened."""
    a, b = Zi.shape[0], Zt.shape[0]
    Z = np.concatenate([np.repeat(Zi, b, 0), np.tile(Zt, (a, 1))], 1)
    pred = sur.predict(torch.from_numpy(Z)).numpy()
    return block.numpy().reshape(-1), pred, np.outer(wi, wt).reshape(-1)


def _score_block(
    sur: Surrogate, Zi: np.ndarray, Zt: np.ndarray, V: Tensor, wi: np.ndarray, wt: np.ndarray
) -> dict[str, float]:
    return weighted_fit_quality(*_block_predictions(sur, Zi, Zt, V, wi, wt))


def _nan_quality() -> dict[str, float]:
    nan = math.nan
    return {"r2": nan, "mse": nan, "pearson": nan, "spearman": nan, "crossfit_values": 0.0, "crossfit_folds": 0.0}


def _check_folds(folds: int) -> None:
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise InputError(f"folds must be an integer ≥ 2, got {folds!r}")


__all__ = ["DEFAULT_FOLDS", "crossfit_joint", "crossfit_product", "weighted_fit_quality"]
