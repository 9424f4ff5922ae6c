"""Weighted least squares for 2-additive surrogates, without a dense samples × parameters matrix.

A 2-additive surrogate of a game v is

    v̂(S) = e_∅ + Σ_{i∈S} e_i + Σ_{(i,j)∈P, i,j∈S} e_ij,

with a chosen set P of pairs. Given coalitions z_a ∈ {0,1}^n, targets y_a and weights w_a, the fit
minimises Σ_a w_a (y_a − v̂(z_a))². FIxLIP (spec §1.4, §2.4) solves it through the dense design matrix;
here it is solved by *graded orthogonalisation*, which is exact and needs only Gram-sized memory:

* Order 1: centre each player, ψ_i = z_i − μ_i (μ = weighted mean). ψ is orthogonal to the constant.
* Order 2: replace each pair feature z_i z_j by its residual r_ij after the weighted projection onto
  span{1, ψ}. The residuals are orthogonal to every order-≤1 feature, so the normal equations split
  into independent blocks: constant, order 1 (an n × n system), pairs (a |P| × |P| system, or its
  m × m dual when there are fewer coalitions than pairs). Each pair coefficient of the orthogonalised
  fit *is* the pair coefficient e_ij; main effects and e_∅ follow by re-expanding the residuals.

**Product designs (the cross-modal estimator, spec §2.3).** Coalitions are a grid: image coalition a
with text coalition b, weight w_a·w'_b, target V[a, b]. Every feature is an image-side feature times a
text-side feature of total order ≤ 2, so the Gram matrix is a sub-block of the Kronecker product of
the two sides' Grams. Orthogonalising each side separately makes the blocks {image order k} ⊗ {text
order l} mutually orthogonal under product weights, hence:

* constant and image-only terms: the single-side fit of the text-averaged targets V·w';
* text-only terms: the single-side fit of Vᵀ·w;
* cross pairs: (A ⊗ A') vec(κ) = vec(Ψᵀ W V W' Ψ'), solved as κ = A⁺ H A'⁺ (n_I × n_I and n_T × n_T
  matrices only) for all cross pairs, or on the chosen sub-block for a restricted set.

Memory is O(m·n + n² + min(m, |P|)²) per side, never O(m_I·m_T·d). Rank-deficient blocks (fewer
coalitions than features on a side) get the minimum-norm solution of that block and are flagged in
``info["rank_deficient"]``.

All arithmetic is float64 on the device of the inputs (CPU or CUDA).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.games.surrogate import DEFAULT_CHUNK_BYTES, Surrogate, all_pairs, side_prediction
from dualex.models.base import SIDES

DEFAULT_RCOND = 1e-10
PairSpec = str | Tensor | np.ndarray | Sequence[tuple[int, int]] | None


# ---------------------------------------------------------------------------------------------- pair sets
def cross_pairs(n_a: int, n_b: int) -> Tensor:
    """Pairs between players ``0..n_a−1`` and ``n_a..n_a+n_b−1``, ``(n_a·n_b, 2)``, a-major."""
    a = torch.arange(n_a).repeat_interleave(n_b)
    b = torch.arange(n_b).repeat(n_a) + n_a
    return torch.stack([a, b], 1)


def clique_pairs(players: Sequence[int] | Tensor) -> Tensor:
    """All pairs among ``players`` (sorted), ``(k(k−1)/2, 2)``."""
    p: Tensor = torch.unique(torch.as_tensor(list(players) if not isinstance(players, Tensor) else players).long())
    return p[all_pairs(int(p.numel()))] if p.numel() > 1 else torch.zeros(0, 2, dtype=torch.long)


def normalise_pairs(pairs: PairSpec, n: int) -> Tensor:
    """Validate a pair set: ``"all"``, ``"none"``/None, or ``(P, 2)`` indices -> sorted unique ``(P, 2)``."""
    if pairs is None or (isinstance(pairs, str) and pairs == "none"):
        return torch.zeros(0, 2, dtype=torch.long)
    if isinstance(pairs, str):
        if pairs == "all":
            return all_pairs(n)
        raise InputError(f"unknown pair set {pairs!r}; use 'all', 'none' or a list of (i, j) pairs")
    try:
        a = np.asarray(pairs.cpu() if isinstance(pairs, Tensor) else pairs, dtype=np.int64)
    except (TypeError, ValueError):
        raise InputError("pairs must be a list of (i, j) player-index pairs") from None
    if a.size == 0:
        return torch.zeros(0, 2, dtype=torch.long)
    if a.ndim != 2 or a.shape[1] != 2:
        raise InputError(f"pairs must be a list of (i, j) player-index pairs, got shape {a.shape}")
    t = torch.from_numpy(a)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
        raise InputError(f"pair indices must lie in 0..{n - 1}")
    if t.numel() and bool((t[:, 0] == t[:, 1]).any()):
        raise InputError("a pair must join two different players")
    t = torch.sort(t, dim=1).values
    if t.numel() == 0:
        return torch.zeros(0, 2, dtype=torch.long)
    key = torch.unique(t[:, 0] * n + t[:, 1])
    return torch.stack([key // n, key % n], 1)


# ---------------------------------------------------------------------------------------------- linear algebra
def solve_psd(M: Tensor, b: Tensor, *, rcond: float = DEFAULT_RCOND) -> tuple[Tensor, bool]:
    """Solve ``M x = b`` for symmetric PSD ``M``: Cholesky, or the minimum-norm solution if singular.

    Args:
        M: ``(d, d)`` symmetric positive semi-definite.
        b: ``(d,)`` or ``(d, k)``.
        rcond: Eigenvalues below ``rcond · max eigenvalue`` count as zero.

    Returns:
        ``(x, rank_deficient)``.
    """
    if M.shape[0] == 0:
        return torch.zeros_like(b), False
    L, info = torch.linalg.cholesky_ex(M)
    if int(info) == 0:
        d = torch.diagonal(L)
        if float(d.min()) > 0 and float((d.min() / d.max()) ** 2) > rcond:
            rhs = b[:, None] if b.dim() == 1 else b
            x = torch.cholesky_solve(rhs, L)
            return (x[:, 0] if b.dim() == 1 else x), False
    del L
    inv, _ = pinv_psd(M, rcond=rcond)
    return inv @ b, True


def pinv_psd(M: Tensor, *, rcond: float = DEFAULT_RCOND) -> tuple[Tensor, int]:
    """Moore–Penrose inverse of a symmetric PSD matrix via its eigendecomposition, and its rank."""
    if M.shape[0] == 0:
        return M.clone(), 0
    lam, U = torch.linalg.eigh(M)
    keep = lam > rcond * max(float(lam.max()), 0.0) + 1e-300
    inv_lam = torch.where(keep, 1.0 / torch.where(keep, lam, torch.ones_like(lam)), torch.zeros_like(lam))
    return (U * inv_lam) @ U.T, int(keep.sum())


def _chunks(total: int, step: int) -> Iterator[slice]:
    step = max(1, int(step))
    for s in range(0, total, step):
        yield slice(s, min(s + step, total))


# ---------------------------------------------------------------------------------------------- one side
@dataclass
class _SideFit:
    """Fit of one player set (all tensors float64 on the working device).

    With k targets at once (``y`` of shape ``(m, k)``), ``intercept`` and ``ybar`` are ``(k,)`` tensors and
    ``main`` / ``pair_values`` have a trailing axis of k.
    """

    intercept: Any  # monomial e_∅ of the side fit: float, or (k,)
    main: Tensor  # (n,) monomial main effects, or (n, k)
    pair_values: Tensor  # (P,), or (P, k)
    mu: Tensor  # (n,) weighted means of z
    A: Tensor  # (n, n) weighted covariance of z
    A_pinv: Tensor
    ybar: Any  # float, or (k,)
    rank_deficient: bool
    solver: str
    rank_a: int


def _fit_side(Z: Tensor, w: Tensor, y: Tensor, pairs: Tensor, *, chunk_bytes: int, rcond: float) -> _SideFit:
    """Exact WLS of ``y`` on ``[1, z, z_i z_j ((i,j) ∈ pairs)]`` with weights ``w`` (Σw = 1).

    Several targets with the same coalitions and weights are solved at once (one factorisation): the
    fit is linear in the targets.

    Args:
        Z: ``(m, n)`` bool coalitions on the working device.
        w: ``(m,)`` float64 weights summing to 1.
        y: ``(m,)`` float64 targets, or ``(m, k)`` for k target vectors.
        pairs: ``(P, 2)`` long pairs on the working device.
    """
    single = y.dim() == 1
    Y = y[:, None] if single else y
    k = int(Y.shape[1])
    m, n = Z.shape
    dev, f64 = Z.device, torch.float64
    P = int(pairs.shape[0])
    row_step = chunk_bytes // (8 * max(1, n + P))
    mu = torch.zeros(n, dtype=f64, device=dev)
    for sl in _chunks(m, row_step):
        mu += w[sl] @ Z[sl].to(f64)
    A = torch.zeros(n, n, dtype=f64, device=dev)
    g = torch.zeros(n, k, dtype=f64, device=dev)
    for sl in _chunks(m, row_step):
        psi = Z[sl].to(f64) - mu
        A += psi.T @ (psi * w[sl, None])
        g += psi.T @ (w[sl, None] * Y[sl])
    ybar = w @ Y  # (k,)
    lam, U = torch.linalg.eigh(A)
    keep = lam > rcond * max(float(lam.max()), 0.0) + 1e-300
    rank_a = int(keep.sum())
    A_pinv = (U[:, keep] / lam[keep]) @ U[:, keep].T
    beta = A_pinv @ g
    deficient = rank_a < n

    def done(intercept: Tensor, main: Tensor, delta: Tensor, bad: bool, solver: str) -> _SideFit:
        if single:
            return _SideFit(
                float(intercept[0]), main[:, 0], delta[:, 0], mu, A, A_pinv, float(ybar[0]), bad, solver, rank_a
            )
        return _SideFit(intercept, main, delta, mu, A, A_pinv, ybar, bad, solver, rank_a)

    if P == 0:
        return done(ybar - mu @ beta, beta, torch.zeros(0, k, dtype=f64, device=dev), deficient, "none")
    ii, jj = pairs[:, 0], pairs[:, 1]
    y1 = torch.empty(m, k, dtype=f64, device=dev)  # y minus its order-≤1 fit
    for sl in _chunks(m, row_step):
        y1[sl] = Y[sl] - ybar - (Z[sl].to(f64) - mu) @ beta
    clique = _clique_players(pairs, n) if m < P else None
    if clique is not None:
        # Dual with a closed-form kernel: Σ_{pairs in a clique} z_i z_j z'_i z'_j = c(c − 1)/2 with
        # c = |S ∩ S' ∩ clique|, so nothing of size m × |P| or |P| × n is ever formed.
        sw = w.sqrt()
        Q = _orthonormal_order1(Z, sw, mu, lam, U, keep)
        Zc = Z[:, clique].to(f64)
        K = Zc @ Zc.T
        del Zc
        K.sub_(0.5).square_().sub_(0.25).mul_(0.5).mul_(sw[:, None]).mul_(sw[None, :])
        KQ = K @ Q
        K.addmm_(Q, KQ.T, alpha=-1.0).addmm_(KQ, Q.T, alpha=-1.0).addmm_(Q @ (Q.T @ KQ), Q.T)
        del KQ
        # K vanishes on span(Q); add that span back so that K is invertible on the rest.
        K.addmm_(Q, Q.T, alpha=float(torch.diagonal(K).mean()) or 1.0)
        u, _ = solve_psd(K, sw[:, None] * y1, rcond=rcond)
        del K
        v = sw[:, None] * (u - Q @ (Q.T @ u))  # (m, k)
        Zf = Z.to(f64)
        delta = torch.empty(P, k, dtype=f64, device=dev)
        q = torch.empty(m, k, dtype=f64, device=dev)
        D = torch.zeros(n, n, dtype=f64, device=dev)
        for t in range(k):
            delta[:, t] = (Zf.T @ (Zf * v[:, t : t + 1]))[ii, jj]  # Σ_a v_a z_ai z_aj
            # re-expansion needs only C·δ and c0·δ: both are moments of q(S) = Σ_pairs δ_ij z_i z_j
            D[ii, jj] = delta[:, t]
            q[:, t] = ((Zf @ D) * Zf).sum(1)
        main = beta - A_pinv @ ((Zf - mu).T @ (w[:, None] * q))
        intercept = ybar - mu @ main - w @ q
        return done(intercept, main, delta, True, "dual")
    # weighted moments of the pair features: c0 = E[z_i z_j], M = Cov(z_k, z_i z_j)
    if n * n // 4 < P:  # dense pair set: full moment matrices by BLAS, O(m n³), then pick the pairs
        second = torch.zeros(n, n, dtype=f64, device=dev)
        third = torch.zeros(n, n, n, dtype=f64, device=dev)
        k_step = max(1, chunk_bytes // (8 * n * max(1, min(m, row_step))))
        for sl in _chunks(m, row_step):
            z = Z[sl].to(f64)
            second += z.T @ (z * w[sl, None])
            wpsi = (z - mu) * w[sl, None]
            for ks in _chunks(n, k_step):
                X = (wpsi[:, ks, None] * z[:, None, :]).reshape(z.shape[0], -1)  # (rows, k·n)
                third[ks] += (X.T @ z).reshape(-1, n, n)
        c0 = second[ii, jj]
        M = third[:, ii, jj]
        del third
    else:
        c0 = torch.zeros(P, dtype=f64, device=dev)
        M = torch.zeros(n, P, dtype=f64, device=dev)
        for sl in _chunks(m, row_step):
            z = Z[sl].to(f64)
            F = z[:, ii] * z[:, jj]
            c0 += w[sl] @ F
            M += (z - mu).T @ (F * w[sl, None])
    C = A_pinv @ M  # (n, P): projection of each pair feature onto the centred singletons
    del M

    def residual_rows(sl: slice, cols: slice = slice(None)) -> Tensor:
        z = Z[sl].to(f64)
        rows: Tensor = z[:, ii[cols]] * z[:, jj[cols]] - c0[cols] - (z - mu) @ C[:, cols]
        return rows

    if m >= P:  # primal: |P| × |P| Gram of the residual pair features
        solver = "primal"
        S = torch.zeros(P, P, dtype=f64, device=dev)
        r = torch.zeros(P, k, dtype=f64, device=dev)
        for sl in _chunks(m, row_step):
            R = residual_rows(sl)
            S += R.T @ (R * w[sl, None])
            r += R.T @ (w[sl, None] * y1[sl])
        delta, bad = solve_psd(S, r, rcond=rcond)
        del S
    else:  # dual for a general pair set: the m × m kernel of the residual pair features
        solver = "dual"
        sw = w.sqrt()
        Q = _orthonormal_order1(Z, sw, mu, lam, U, keep)
        col_step = chunk_bytes // (8 * max(1, m))
        K = torch.zeros(m, m, dtype=f64, device=dev)
        for cs in _chunks(P, col_step):
            R = residual_rows(slice(None), cs) * sw[:, None]
            K += R @ R.T
        K.addmm_(Q, Q.T, alpha=float(torch.diagonal(K).mean()) or 1.0)
        u, _ = solve_psd(K, sw[:, None] * y1, rcond=rcond)
        del K
        delta = torch.zeros(P, k, dtype=f64, device=dev)
        for cs in _chunks(P, col_step):
            delta[cs] = (residual_rows(slice(None), cs) * sw[:, None]).T @ u
        bad = True  # fewer coalitions than pair terms: the pair block is underdetermined
    main = beta - C @ delta
    intercept = ybar - mu @ main - c0 @ delta
    return done(intercept, main, delta, deficient or bad, solver)


def _orthonormal_order1(Z: Tensor, sw: Tensor, mu: Tensor, lam: Tensor, U: Tensor, keep: Tensor) -> Tensor:
    """Orthonormal basis ``(m, 1 + rank)`` of span(√w ⊙ [1, z − μ]) from the eigenpairs of the covariance."""
    psi = (Z.to(torch.float64) - mu) * sw[:, None]
    return torch.cat([sw[:, None], psi @ (U[:, keep] / lam[keep].sqrt())], 1)


def _clique_players(pairs: Tensor, n: int) -> Tensor | None:
    """The players if ``pairs`` (sorted, unique) are all pairs among them, else None."""
    players = torch.unique(pairs.flatten())
    k = int(players.numel())
    return players if pairs.shape[0] == k * (k - 1) // 2 else None


def _prepare(coalitions: Any, weights: Any, device: torch.device | str | None) -> tuple[Tensor, Tensor]:
    Z = torch.as_tensor(coalitions)
    if Z.dim() != 2:
        raise InputError(f"coalitions must be a (m, n) bool matrix, got shape {tuple(Z.shape)}")
    dev = torch.device(device) if device is not None else Z.device
    Z = Z.to(device=dev, dtype=torch.bool)
    w = torch.as_tensor(weights).to(device=dev, dtype=torch.float64).flatten()
    if w.shape[0] != Z.shape[0]:
        raise InputError(f"got {Z.shape[0]} coalitions but {w.shape[0]} weights")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise InputError("weights must be finite, non-negative and not all zero")
    return Z, w / w.sum()


def fit_surrogate(
    coalitions: Tensor | np.ndarray,
    values: Tensor | np.ndarray,
    weights: Tensor | np.ndarray,
    pairs: PairSpec = "all",
    *,
    device: torch.device | str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    rcond: float = DEFAULT_RCOND,
) -> Surrogate:
    """Fit a 2-additive surrogate to game values with given coalition weights (exact WLS).

    This is the model-agnostic solver: any sampler and any weights (weighted Banzhaf: `sample_banzhaf`;
    Shapley kernel for FSII / "FIxLIP (SI)": `sample_shapley`).

    Args:
        coalitions: ``(m, n)`` bool, the evaluated coalitions.
        values: ``(m,)`` targets, e.g. ``v(S) − v(∅)``.
        weights: ``(m,)`` non-negative regression weights (rescaling them changes nothing).
        pairs: ``"all"``, ``"none"`` (first-order fit) or ``(P, 2)`` player pairs.
        device: Where to compute (default: the device of ``coalitions``).
        chunk_bytes: Size of temporary blocks; bounds the working memory beyond the Gram matrices.
        rcond: Relative eigenvalue cut-off for singular blocks.

    Returns:
        The `Surrogate` (on CPU) with ``info`` holding ``r2_train`` (weighted, in-sample),
        ``rank_deficient`` (0/1), ``n_coalitions`` and ``n_parameters``.
    """
    Z, w = _prepare(coalitions, weights, device)
    m, n = Z.shape
    y = torch.as_tensor(values).to(device=Z.device, dtype=torch.float64).flatten()
    if y.shape[0] != m:
        raise InputError(f"got {m} coalitions but {y.shape[0]} values")
    P = normalise_pairs(pairs, n)
    side = _fit_side(Z, w, y, P.to(Z.device), chunk_bytes=chunk_bytes, rcond=rcond)
    sur = Surrogate(
        side.intercept,
        side.main.cpu(),
        P.cpu(),
        side.pair_values.cpu(),
        {
            "rank_deficient": float(side.rank_deficient),
            "n_coalitions": float(m),
            "n_parameters": float(1 + n + P.shape[0]),
        },
    )
    pred = sur.predict(Z.cpu(), chunk_bytes=chunk_bytes).to(Z.device)
    sur.info["r2_train"] = _weighted_r2(y, pred, w)
    return sur


def _weighted_r2(y: Tensor, pred: Tensor, w: Tensor) -> float:
    mean = (w * y).sum() / w.sum()
    tot = float((w * (y - mean) ** 2).sum())
    res = float((w * (y - pred) ** 2).sum())
    return 1.0 - res / tot if tot > 0 else (1.0 if res <= 1e-24 else -math.inf)


# ---------------------------------------------------------------------------------------------- product design
def split_pairs(pairs: Tensor, n_a: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split joint pairs into (within a, within b (re-indexed from 0), cross (a index, b index))."""
    in_a = pairs < n_a
    a_pairs = pairs[in_a.all(1)]
    b_pairs = pairs[(~in_a).all(1)] - n_a
    c = pairs[in_a[:, 0] & ~in_a[:, 1]]
    return a_pairs, b_pairs, torch.stack([c[:, 0], c[:, 1] - n_a], 1) if c.numel() else c.reshape(0, 2)


def fit_product_surrogate(
    image_coalitions: Tensor | np.ndarray,
    image_weights: Tensor | np.ndarray,
    text_coalitions: Tensor | np.ndarray,
    text_weights: Tensor | np.ndarray,
    values: Tensor | np.ndarray,
    pairs: PairSpec = "all",
    *,
    device: torch.device | str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    rcond: float = DEFAULT_RCOND,
) -> Surrogate:
    """Exact WLS of a 2-additive surrogate on a product design (the cross-modal estimator's fit).

    The design holds every combination of an image coalition a and a text coalition b, with weight
    ``w_a · w'_b`` and target ``values[a, b]``. Players are indexed jointly: image players
    ``0..n_I−1``, then text players ``n_I..n_I+n_T−1``. The result equals `fit_surrogate` on the
    flattened ``m_I·m_T`` rows with outer-product weights, without ever forming them.

    Args:
        image_coalitions: ``(m_I, n_I)`` bool.
        image_weights: ``(m_I,)`` non-negative.
        text_coalitions: ``(m_T, n_T)`` bool.
        text_weights: ``(m_T,)`` non-negative.
        values: ``(m_I, m_T)`` targets.
        pairs: ``"all"``, ``"crossmodal"`` (image × text pairs only), ``"none"``, or ``(P, 2)`` joint pairs.
        device: Where to compute (default: the device of ``values``).
        chunk_bytes: Size of temporary blocks.
        rcond: Relative eigenvalue cut-off for singular blocks.

    Returns:
        The joint `Surrogate` (on CPU); ``info`` adds ``solver_image``/``solver_text`` codes
        (0 none, 1 primal, 2 dual) besides the `fit_surrogate` entries.
    """
    V = torch.as_tensor(values)
    dev = torch.device(device) if device is not None else V.device
    Zi, wi = _prepare(image_coalitions, image_weights, dev)
    Zt, wt = _prepare(text_coalitions, text_weights, dev)
    V = V.to(device=dev, dtype=torch.float64)
    (mi, ni), (mt, nt) = Zi.shape, Zt.shape
    if V.shape != (mi, mt):
        raise InputError(f"values must have shape ({mi}, {mt}) = (image coalitions, text coalitions)")
    n = ni + nt
    if isinstance(pairs, str) and pairs == "crossmodal":
        P = cross_pairs(ni, nt)
    else:
        P = normalise_pairs(pairs, n)
    Pi, Pt, Pc = (t.to(dev) for t in split_pairs(P, ni))
    alpha = float(wi @ V @ wt)
    fi = _fit_side(Zi, wi, V @ wt, Pi, chunk_bytes=chunk_bytes, rcond=rcond)
    ft = _fit_side(Zt, wt, V.T @ wi, Pt, chunk_bytes=chunk_bytes, rcond=rcond)
    # cross block: H = Ψ_Iᵀ W_I V W_T Ψ_T, then (A_I ⊗ A_T) vec κ = vec H on the chosen cross pairs
    kappa = torch.zeros(ni, nt, dtype=torch.float64, device=dev)
    cross_bad = False
    if Pc.shape[0]:
        right = (Zt.to(torch.float64) - ft.mu) * wt[:, None]  # (m_T, n_T)
        H = torch.zeros(ni, nt, dtype=torch.float64, device=dev)
        for sl in _chunks(mi, chunk_bytes // (8 * max(1, mt + ni))):
            H += ((Zi[sl].to(torch.float64) - fi.mu) * wi[sl, None]).T @ (V[sl] @ right)
        if Pc.shape[0] == ni * nt:
            kappa = fi.A_pinv @ H @ ft.A_pinv
            cross_bad = fi.rank_a < ni or ft.rank_a < nt
        else:
            a, b = Pc[:, 0], Pc[:, 1]
            G = fi.A[a][:, a] * ft.A[b][:, b]
            vals, cross_bad = solve_psd(G, H[a, b], rcond=rcond)
            kappa[a, b] = vals
    main_i = fi.main - kappa @ ft.mu
    main_t = ft.main - kappa.T @ fi.mu
    intercept = fi.intercept + ft.intercept - alpha + float(fi.mu @ kappa @ ft.mu)
    P_all = torch.cat([Pi, Pt + ni, torch.stack([Pc[:, 0], Pc[:, 1] + ni], 1)]).cpu()
    vals_all = torch.cat([fi.pair_values, ft.pair_values, kappa[Pc[:, 0], Pc[:, 1]]]).cpu()
    order = torch.argsort(P_all[:, 0] * n + P_all[:, 1])
    code = {"none": 0.0, "primal": 1.0, "dual": 2.0}
    sur = Surrogate(
        intercept,
        torch.cat([main_i, main_t]).cpu(),
        P_all[order],
        vals_all[order],
        {
            "rank_deficient": float(fi.rank_deficient or ft.rank_deficient or cross_bad),
            "n_coalitions": float(mi * mt),
            "n_parameters": float(1 + n + P_all.shape[0]),
            "solver_image": code[fi.solver],
            "solver_text": code[ft.solver],
        },
        ni,
    )
    # weighted in-sample R² on the grid: prediction = c + p_I(a) + p_T(b) + z_I(a)ᵀ κ z_T(b)
    pi = side_prediction(Zi, main_i, Pi, fi.pair_values, chunk_bytes)
    pt = side_prediction(Zt, main_t, Pt, ft.pair_values, chunk_bytes)
    ZtT = Zt.to(torch.float64).T
    res = 0.0
    tot = 0.0
    for sl in _chunks(mi, chunk_bytes // (8 * max(1, mt))):
        pred = intercept + pi[sl, None] + pt[None, :] + (Zi[sl].to(torch.float64) @ kappa) @ ZtT
        ww = wi[sl, None] * wt[None, :]
        res += float((ww * (V[sl] - pred) ** 2).sum())
        tot += float((ww * (V[sl] - alpha) ** 2).sum())
    sur.info["r2_train"] = 1.0 - res / tot if tot > 0 else (1.0 if res <= 1e-24 else -math.inf)
    return sur


def product_refits(
    image_coalitions: Tensor | np.ndarray,
    image_weights: Tensor | np.ndarray,
    text_coalitions: Tensor | np.ndarray,
    text_weights: Tensor | np.ndarray,
    values: Tensor | np.ndarray,
    pairs: PairSpec,
    replicate_weights: np.ndarray | Tensor,
    *,
    side: str,
    device: torch.device | str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    rcond: float = DEFAULT_RCOND,
) -> Tensor:
    """`fit_product_surrogate` refitted with B alternative weight vectors of one side, the other side fixed.

    This is what a bootstrap that re-weights one side of the grid needs, without its waste: the fixed
    side's fit is linear in its targets (``V·w`` of each replicate), so it is solved once for all B
    targets with one factorisation; only the re-weighted side is refitted per replicate, and nothing
    else (no in-sample R², no pair validation) is recomputed. Equals B calls of `fit_product_surrogate`
    (tested to 1e-10).

    Args:
        image_coalitions: ``(m_I, n_I)`` bool.
        image_weights: ``(m_I,)`` the pilot's image weights (used when the text side varies).
        text_coalitions: ``(m_T, n_T)`` bool.
        text_weights: ``(m_T,)`` the pilot's text weights (used when the image side varies).
        values: ``(m_I, m_T)`` targets.
        pairs: The pair basis, as for `fit_product_surrogate`.
        replicate_weights: ``(B, m_side)`` non-negative weights of ``side``, one row per refit.
        side: ``"image"`` or ``"text"``: which side's weights vary.
        device: Where to compute.
        chunk_bytes: Solver block size.
        rcond: Relative eigenvalue cut-off.

    Returns:
        ``(B, 1 + n + P)`` float64 on CPU: ``[e_∅, main effects, pair values (sorted pairs)]`` per refit
        (the layout of `dualex.games.uncertainty.surrogate_vector`).
    """
    if side not in SIDES:
        raise InputError(f"side must be 'image' or 'text', got {side!r}")
    other = SIDES[1 - SIDES.index(side)]
    V = torch.as_tensor(values)
    dev = torch.device(device) if device is not None else V.device
    Zi, wi = _prepare(image_coalitions, image_weights, dev)
    Zt, wt = _prepare(text_coalitions, text_weights, dev)
    V = V.to(device=dev, dtype=torch.float64)
    (mi, ni), (mt, nt) = Zi.shape, Zt.shape
    if V.shape != (mi, mt):
        raise InputError(f"values must have shape ({mi}, {mt}) = (image coalitions, text coalitions)")
    R = torch.as_tensor(replicate_weights).to(device=dev, dtype=torch.float64)
    m_side = {"image": mi, "text": mt}[side]
    if R.dim() != 2 or R.shape[1] != m_side:
        raise InputError(f"replicate_weights must have shape (B, {m_side}), got {tuple(R.shape)}")
    if not bool(torch.isfinite(R).all()) or bool((R < 0).any()) or bool((R.sum(1) <= 0).any()):
        raise InputError("replicate weights must be finite, non-negative and not all zero in any row")
    R = R / R.sum(1, keepdim=True)
    n = ni + nt
    P = cross_pairs(ni, nt) if isinstance(pairs, str) and pairs == "crossmodal" else normalise_pairs(pairs, n)
    Pi, Pt, Pc = (t.to(dev) for t in split_pairs(P, ni))
    P_all = torch.cat([Pi.cpu(), Pt.cpu() + ni, torch.stack([Pc[:, 0].cpu(), Pc[:, 1].cpu() + ni], 1)])
    order = torch.argsort(P_all[:, 0] * n + P_all[:, 1]).to(dev)
    kw: dict[str, Any] = {"chunk_bytes": chunk_bytes, "rcond": rcond}
    # per side: coalitions, pilot weights, within-side pairs, the targets with its coalitions as rows, and
    # the column of its part in a cross pair; the varying side (v) and the fixed one (f) are lookups here
    per_side = {"image": (Zi, wi, Pi, V, 0), "text": (Zt, wt, Pt, V.T, 1)}
    Zv, _, Pv, Vv, cv = per_side[side]
    Zf, wf, Pf, Vf, cf = per_side[other]
    # one side fixed: its fit of the B targets at once; the varying side refitted per replicate
    fixed = _fit_side(Zf, wf, Vf @ R.T, Pf, **kw)  # (m_f, B) targets: the fixed side's V w_v per replicate
    Zf64 = Zf.to(torch.float64)
    right = (Zf64 - fixed.mu) * wf[:, None]  # fixed side's centred, weighted coalitions (m_f, n_f)
    VR = Vv @ right  # (m_v, n_f)
    a, b = Pc[:, cv], Pc[:, cf]  # cross pairs' parts on the varying and on the fixed side
    out = torch.empty(R.shape[0], 1 + n + P_all.shape[0], dtype=torch.float64, device=dev)
    for r in range(R.shape[0]):
        w_r = R[r]
        fv = _fit_side(Zv, w_r, Vv @ wf, Pv, **kw)
        H = ((Zv.to(torch.float64) - fv.mu) * w_r[:, None]).T @ VR  # (n_v, n_f)
        kappa = torch.zeros_like(H)
        if Pc.shape[0]:
            if Pc.shape[0] == ni * nt:
                kappa = fv.A_pinv @ H @ fixed.A_pinv
            else:
                G = fv.A[a][:, a] * fixed.A[b][:, b]
                kappa[a, b] = solve_psd(G, H[a, b], rcond=rcond)[0]
        main_v = fv.main - kappa @ fixed.mu
        main_f = fixed.main[:, r] - kappa.T @ fv.mu
        alpha = float(w_r @ Vv @ wf)
        intercept = fv.intercept + float(fixed.intercept[r]) - alpha + float(fv.mu @ kappa @ fixed.mu)
        mains = {side: main_v, other: main_f}
        within = {side: fv.pair_values, other: fixed.pair_values[:, r]}
        main = torch.cat([mains["image"], mains["text"]])
        vals = torch.cat([within["image"], within["text"], kappa[a, b]])  # kappa is (n_v, n_f)
        out[r, 0] = intercept
        out[r, 1 : 1 + n] = main
        out[r, 1 + n :] = vals[order]
    return out.cpu()


__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "Surrogate",
    "all_pairs",
    "clique_pairs",
    "cross_pairs",
    "fit_product_surrogate",
    "fit_surrogate",
    "normalise_pairs",
    "pinv_psd",
    "product_refits",
    "solve_psd",
    "split_pairs",
]
