"""Standard errors of sampled surrogate fits (FIxLIP, FIxLIP (SI), InteractionLIME) and budget hints.

A sampled explanation is a deterministic function of the game and of the coalitions that were drawn;
all of its error comes from which coalitions the sampler drew (the game itself is noise-free). Two
estimates of that error suggest themselves; this module uses the second.

* **The weighted-least-squares covariance** ``σ² (XᵀWX)⁻¹`` (or its sandwich form) treats the residuals
  as independent noise around a true surrogate. Here they are neither: the residual of a coalition is
  the surrogate's misfit, a fixed function of the coalition; in the cross-modal grid every cell shares
  its image coalition with a whole row and its text coalition with a whole column, so cells are
  strongly dependent; and on a side with fewer coalitions than terms (the common case for images,
  which have ~n²/2 intra-modal pairs) ``XᵀWX`` is singular and the fit is a minimum-norm solution, for
  which no such covariance exists.
* **A seeded multiplier bootstrap over the sampled coalitions** (used here) re-weights the coalitions
  that were actually drawn and refits, which is cheap (the fit costs milliseconds beside the game
  values, which are not recomputed). It mirrors the sampling: in the cross-modal grid the image and the
  text coalitions are two independent samples, so each side is re-weighted on its own (rows with the
  text weights fixed, then columns with the image weights fixed) and the two variances are added — the
  two-way ("pigeonhole") bootstrap of crossed designs (Owen, Ann. Appl. Stat. 2007), mildly
  conservative because the row × column part is counted on both sides. Multipliers are i.i.d.
  Exp(1) (the Bayesian bootstrap, Rubin 1981) rescaled to mean 1 over the sampled coalitions, rather
  than with-replacement counts: every drawn coalition keeps a positive weight, so a side keeps its
  rank and its solver path (primal or dual) and a minimum-norm fit is not replaced by a different,
  sparser one (resampling with replacement drops ~37 % of the coalitions). Coalitions the sampler
  enumerated exactly (its border trick, or ∅ and N of the Shapley sampler) are not random and keep
  multiplier 1.

What it cannot see: how a rank-deficient (minimum-norm) fit would change with other coalitions, since
re-weighting never leaves the span of the drawn ones. The intra-modal pairs of such a side are therefore
reported with an infinite error (not identified by the sample; ``diagnostics["unidentified"]`` counts
them). A side with fewer coalitions than its intercept and main effects is worse: even the token ×
patch errors understate the spread (bundled model, 2^10: 0.30×), which the approximator flags
(`dualex.games.approximator`: ``underdetermined``, ``budget_needed`` and a `UserWarning`).

Two corrections scale each source's variance: HC1's ``m / (m − terms)`` (below) and the
finite-population factor ``(N − m) / (N − 1)`` of sampling m distinct coalitions out of N
(`finite_population`; 1 for any side with more than a few dozen players). Against exact FIxLIP on a
tiny model (9 patches, 6 tokens, every side full rank) 95 % intervals then cover 0.93 of the terms
(token × patch 0.94), with median |z| 1.02; main effects cover less (0.84 there, 0.5–0.7 when a side
has about as many coalitions as terms, where they absorb the minimum-norm intra-modal solution).
Measured on the bundled model (``tests/games/test_uncertainty.py``, 95 % intervals of the difference
between two seeds): with ≥ 3 sampled coalitions per fitted term on each side the errors match the
seed-to-seed spread (SE / spread 1.0–1.15, coverage 0.93–0.97 for the token × patch terms);
near 1 coalition per term they under-cover (0.75–0.8), and the main effects of a side solved in the
dual (more terms than coalitions) are under-estimated (SE / spread ≈ 0.6). ``coalitions_per_term``
(the smallest m / terms over the sides) says which regime a fit is in.

The **budget hint** extrapolates the per-source variances of a pilot fit: a source with m sampled
coalitions contributes variance ∝ 1/m (full-rank regime), and the number of coalitions per source at
another budget comes from the method's own split. The hint is the smallest budget whose projected
median relative error of the top-k interactions (largest |value|) is at most the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.games.regression import DEFAULT_CHUNK_BYTES, Surrogate, fit_surrogate, product_refits

DEFAULT_BOOT = 32
Z95 = 1.959963984540054  # two-sided 95 % normal quantile
_MAX_BUDGET = 2**34


@dataclass(frozen=True)
class Source:
    """One independently sampled set of coalitions, as the bootstrap re-weights it.

    Attributes:
        weights: ``(m,)`` the regression weights of the pilot fit.
        n_fixed: How many of the first rows were enumerated exactly (not random; multiplier 1).
        n_players: Players of this source (``2**n_players`` caps how many coalitions it can have).
        n_terms: Terms fitted from this source alone (its degrees of freedom): its variance is scaled by
            ``m / (m − n_terms)`` when ``m > n_terms + 1``, the small-sample correction of
            heteroskedasticity-robust variances (HC1), without which a side with few coalitions per
            term is under-covered (measured: 42 text coalitions for 17 terms gave 0.78 × the seed spread).
    """

    weights: np.ndarray
    n_fixed: int = 0
    n_players: int = 64
    n_terms: int = 0

    @property
    def m(self) -> int:
        """Number of coalitions of the fit."""
        return int(np.asarray(self.weights).shape[0])

    @property
    def m_random(self) -> int:
        """Number of randomly drawn coalitions (those beyond the ``n_fixed`` fixed ones)."""
        return max(self.m - self.n_fixed, 0)


@dataclass
class TermErrors:
    """Bootstrap standard errors of a flat vector of estimated terms.

    Attributes:
        se: ``(d,)`` standard error of each term (float64), same layout as the estimate.
        variance: Per source, ``(d,)`` variance from re-weighting that source alone.
        coalitions: Per source, the number of sampled (random) coalitions of the pilot fit.
        se_total: Standard error of the sum of all terms (the attributed total).
        n_boot: Replicates per source.
        info: Anything else (e.g. ``failed`` replicates).
    """

    se: np.ndarray
    variance: dict[str, np.ndarray]
    coalitions: dict[str, int]
    se_total: float
    n_boot: int
    info: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- bootstrap
def multipliers(m: int, n_boot: int, rng: np.random.Generator, *, n_fixed: int = 0) -> np.ndarray:
    """Bayesian-bootstrap multipliers ``(n_boot, m)``: Exp(1), mean 1 over the random rows, 1 on fixed rows.

    Args:
        m: Number of coalitions.
        n_boot: Number of replicates.
        rng: NumPy generator (seeded by the caller).
        n_fixed: The first ``n_fixed`` rows were enumerated exactly and keep multiplier 1.
    """
    out = np.ones((n_boot, m))
    k = m - n_fixed
    if k > 0:
        xi = rng.exponential(1.0, size=(n_boot, k))
        out[:, n_fixed:] = xi / xi.mean(1, keepdims=True)
    return out


def bootstrap_terms(
    refit: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None,
    sources: Mapping[str, Source],
    *,
    n_boot: int = DEFAULT_BOOT,
    rng: np.random.Generator,
    refit_batch: Callable[[str, np.ndarray], np.ndarray] | None = None,
) -> TermErrors:
    """Standard errors of ``refit``'s terms by re-weighting each source's coalitions on its own.

    Args:
        refit: Maps per-source weights ``{name: (m,)}`` to the flat ``(d,)`` vector of terms; it must
            treat a missing source as its pilot weights (may be None when ``refit_batch`` is given).
        refit_batch: Optional faster form: ``(name, (B, m) weights of that source) -> (B, d)`` terms,
            all replicates of one source at once (e.g. `dualex.games.regression.product_refits`).
        sources: The independently sampled coalition sets (one for a joint sample, ``image`` and
            ``text`` for a grid).
        n_boot: Replicates per source (≥ 2).
        rng: Seeded generator; the same seed gives the same errors.

    Returns:
        `TermErrors`; ``se² = Σ_source variance`` (see the module docstring).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise InputError(f"n_boot must be an integer ≥ 2, got {n_boot!r}")
    variance: dict[str, np.ndarray] = {}
    totals_var = 0.0
    d: int | None = None
    for name, src in sources.items():
        w0 = np.asarray(src.weights, dtype=np.float64)
        xi = multipliers(src.m, int(n_boot), rng, n_fixed=src.n_fixed)
        if refit_batch is not None:
            reps = np.asarray(refit_batch(name, w0[None, :] * xi), dtype=np.float64)
        elif refit is not None:
            reps = np.stack([np.asarray(refit({name: w0 * x}), dtype=np.float64) for x in xi])
        else:
            raise InputError("bootstrap_terms needs refit or refit_batch")
        d = reps.shape[1]
        df = src.m / (src.m - src.n_terms) if src.m > src.n_terms + 1 else 1.0
        df *= finite_population(src)
        variance[name] = df * reps.var(0, ddof=1) if src.m_random > 1 else np.zeros(d)
        totals_var += df * float(reps.sum(1).var(ddof=1)) if src.m_random > 1 else 0.0
    se = np.sqrt(sum(variance.values())) if variance else np.zeros(0 if d is None else d)
    random = [s for s in sources.values() if s.m_random > 0 and s.n_terms > 0]
    per_term = min((s.m / s.n_terms for s in random), default=math.inf)
    return TermErrors(
        se=np.asarray(se, dtype=np.float64),
        variance=variance,
        coalitions={k: s.m_random for k, s in sources.items()},
        se_total=math.sqrt(totals_var),
        n_boot=int(n_boot),
        info={"coalitions_per_term": per_term},
    )


def finite_population(src: Source) -> float:
    """Finite-population correction ``(N − m) / (N − 1)`` of a source's variance (1 for large games).

    The samplers draw *distinct* coalitions: ``m`` random ones out of the ``N = 2^n − n_fixed``
    coalitions that were not enumerated. When ``m`` is a sizeable share of ``N`` (small games) the
    sample varies less than an i.i.d. one, which the bootstrap assumes; without the correction the
    errors of a tiny model with 43 of its 64 text coalitions sampled were 1.6× the seed spread.
    """
    if src.n_players >= 62:
        return 1.0
    N = 2**src.n_players - src.n_fixed
    m = src.m_random
    if N <= 1 or m <= 0:
        return 1.0
    return float(max(N - m, 0) / (N - 1))


# ---------------------------------------------------------------------------------------------- surrogates
def surrogate_vector(sur: Surrogate) -> np.ndarray:
    """``[e_∅, main (n,), pair values (P,)]`` of a surrogate as one float64 vector."""
    return np.concatenate([[sur.intercept], sur.main.double().cpu().numpy(), sur.pair_values.double().cpu().numpy()])


def vector_surrogate(vec: np.ndarray, like: Surrogate) -> Surrogate:
    """The inverse of `surrogate_vector`, with the pairs of ``like``."""
    n = like.n_players
    v = torch.from_numpy(np.asarray(vec, dtype=np.float64))
    return Surrogate(float(v[0]), v[1 : 1 + n].clone(), like.pairs.clone(), v[1 + n :].clone())


def pair_slice(sur: Surrogate) -> slice:
    """Where the pair terms sit in `surrogate_vector`."""
    return slice(1 + sur.n_players, None)


def product_errors(
    image_coalitions: np.ndarray,
    image_weights: np.ndarray,
    text_coalitions: np.ndarray,
    text_weights: np.ndarray,
    values: Tensor,
    pairs: Tensor,
    *,
    n_boot: int = DEFAULT_BOOT,
    rng: np.random.Generator,
    image_fixed: int = 0,
    text_fixed: int = 0,
    device: torch.device | str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> TermErrors:
    """Two-way bootstrap errors of `fit_product_surrogate` (the cross-modal grid), in `surrogate_vector` layout.

    Args:
        image_coalitions: ``(m_I, n_I)`` bool, as fitted.
        image_weights: ``(m_I,)`` their weights.
        text_coalitions: ``(m_T, n_T)`` bool.
        text_weights: ``(m_T,)``.
        values: ``(m_I, m_T)`` the grid of targets (not recomputed).
        pairs: ``(P, 2)`` joint pairs of the pilot fit (a selected clique stays fixed).
        n_boot: Replicates per side.
        rng: Seeded generator.
        image_fixed: Leading image coalitions enumerated exactly by the sampler.
        text_fixed: Leading text coalitions enumerated exactly.
        device: Where to solve.
        chunk_bytes: Solver block size.
    """
    base = {"image": np.asarray(image_weights, dtype=np.float64), "text": np.asarray(text_weights, dtype=np.float64)}

    def refit_batch(name: str, weights: np.ndarray) -> np.ndarray:
        # the untouched side is solved once for all replicates (its fit is linear in the targets)
        out = product_refits(
            image_coalitions, base["image"], text_coalitions, base["text"], values, pairs, weights,
            side=name, device=device, chunk_bytes=chunk_bytes,
        )  # fmt: skip
        return out.numpy()

    n_i, n_t = int(np.asarray(image_coalitions).shape[1]), int(np.asarray(text_coalitions).shape[1])
    P = pairs.cpu()
    p_i = int((n_i > P).all(1).sum()) if P.numel() else 0
    p_t = int((n_i <= P).all(1).sum()) if P.numel() else 0
    m_i, m_t = base["image"].shape[0], base["text"].shape[0]
    d_i = 1 + n_i + (p_i if m_i > 1 + n_i + p_i else 0)
    d_t = 1 + n_t + (p_t if m_t > 1 + n_t + p_t else 0)
    sources = {
        "image": Source(base["image"], image_fixed, n_i, d_i),
        "text": Source(base["text"], text_fixed, n_t, d_t),
    }
    out = bootstrap_terms(None, sources, n_boot=n_boot, rng=rng, refit_batch=refit_batch)
    # intra-modal pairs of a side with fewer coalitions than terms are a minimum-norm solution: not identified
    if P.numel():
        under = torch.zeros(P.shape[0], dtype=torch.bool)
        if image_fixed < m_i <= 1 + n_i + p_i:
            under |= (n_i > P).all(1)
        if text_fixed < m_t <= 1 + n_t + p_t:
            under |= (n_i <= P).all(1)
        _mark_unidentified(out, 1 + n_i + n_t, under.numpy())
    return out


def joint_errors(
    coalitions: np.ndarray,
    values: Tensor,
    weights: np.ndarray,
    pairs: Tensor,
    *,
    n_boot: int = DEFAULT_BOOT,
    rng: np.random.Generator,
    n_fixed: int = 0,
    device: torch.device | str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> TermErrors:
    """Bootstrap errors of `fit_surrogate` on one joint sample (agnostic FIxLIP, FIxLIP (SI)).

    Args:
        coalitions: ``(m, n)`` bool, as fitted.
        values: ``(m,)`` targets (not recomputed).
        weights: ``(m,)`` regression weights.
        pairs: ``(P, 2)`` pairs of the pilot fit.
        n_boot: Replicates.
        rng: Seeded generator.
        n_fixed: Leading coalitions that are not random (enumerated sizes, the ∅/N anchors).
        device: Where to solve.
        chunk_bytes: Solver block size.
    """
    w0 = np.asarray(weights, dtype=np.float64)

    def refit(w: Mapping[str, np.ndarray]) -> np.ndarray:
        sur = fit_surrogate(coalitions, values, w.get("joint", w0), pairs, device=device, chunk_bytes=chunk_bytes)
        return surrogate_vector(sur)

    n = int(np.asarray(coalitions).shape[1])
    d = 1 + n + int(pairs.shape[0])
    m = w0.shape[0]
    out = bootstrap_terms(refit, {"joint": Source(w0, n_fixed, n, d if m > d else 1 + n)}, n_boot=n_boot, rng=rng)
    if n_fixed < m <= d and pairs.shape[0]:
        _mark_unidentified(out, 1 + n, np.ones(int(pairs.shape[0]), dtype=bool))
    return out


def _mark_unidentified(errors: TermErrors, offset: int, mask: np.ndarray) -> None:
    """Set the errors of pair terms ``mask`` (pairs start at ``offset``) to inf: no sampling error is estimable."""
    idx = offset + np.nonzero(mask)[0]
    if idx.size:
        errors.se[idx] = np.inf
        for v in errors.variance.values():
            v[idx] = np.inf
        errors.info["unidentified"] = float(idx.size)


# ---------------------------------------------------------------------------------------------- summaries
def top_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest ``|values|`` (all if fewer), largest first."""
    v = np.abs(np.asarray(values, dtype=np.float64))
    k = min(int(k), v.size)
    return np.argsort(-v, kind="stable")[:k]


def relative_error(values: np.ndarray, se: np.ndarray, k: int = 10) -> float:
    """Median of ``se / |value|`` over the ``k`` terms with the largest ``|value|`` (NaN if none)."""
    idx = top_indices(values, k)
    if idx.size == 0:
        return float("nan")
    v = np.abs(np.asarray(values, dtype=np.float64)[idx])
    return float(np.median(np.asarray(se, dtype=np.float64)[idx] / np.maximum(v, 1e-300)))


def summarise(values: np.ndarray, se: np.ndarray, *, top_k: int = 10, prefix: str = "se_") -> dict[str, float]:
    """Diagnostics of interaction errors: ``se_median``, ``se_rel_top`` and ``significant_share``.

    Args:
        values: ``(d,)`` estimated interactions.
        se: ``(d,)`` their standard errors.
        top_k: How many of the largest interactions ``se_rel_top`` (median SE / |value|) looks at.
        prefix: Key prefix.

    Returns:
        ``{prefix}median`` (median SE), ``{prefix}rel_top`` and ``significant_share`` (share of terms
        whose 95 % normal interval ``value ± 1.96 SE`` excludes 0).
    """
    v = np.asarray(values, dtype=np.float64)
    s = np.asarray(se, dtype=np.float64)
    if v.size == 0:
        return {}
    return {
        f"{prefix}median": float(np.median(s)),
        f"{prefix}rel_top": relative_error(v, s, top_k),
        "significant_share": float(np.mean(np.abs(v) > Z95 * s)),
    }


def budget_hint(
    values: np.ndarray,
    errors: TermErrors,
    coalitions_at: Callable[[int], Mapping[str, int]],
    *,
    target: float = 0.1,
    top_k: int = 10,
    index: slice | np.ndarray | None = None,
    sizes: Mapping[str, int] | None = None,
) -> float:
    """Smallest budget whose projected median relative error of the top-k interactions is ≤ ``target``.

    Each source's variance is scaled by ``m_pilot / m(budget)``, where ``m(budget)`` is how many
    coalitions the method would draw for that source at that budget (``coalitions_at``); a source that
    would be enumerated completely (``m ≥ 2^n_players``, ``sizes``) contributes nothing. Budgets are
    searched on a grid of quarter powers of two up to 2^34.

    Args:
        values: ``(d,)`` pilot estimates (the same layout as ``errors.se``).
        errors: Bootstrap errors of the pilot.
        coalitions_at: Budget → coalitions per source (the method's split of a budget).
        target: Wanted median relative error (e.g. 0.1 = 10 %).
        top_k: How many of the largest interactions count.
        index: Which entries of ``values`` are interactions (default: all).
        sizes: Players per source (for the 2^n cap).

    Returns:
        The budget (a float so that it fits diagnostics; ``inf`` when even 2^34 is not enough).
    """
    if not target > 0:
        raise InputError(f"the target relative error must be positive, got {target}")
    sel = np.arange(np.asarray(values).size) if index is None else index
    v = np.asarray(values, dtype=np.float64)[sel]
    idx = top_indices(v, top_k)
    if idx.size == 0:
        return float("nan")
    v_top = np.maximum(np.abs(v[idx]), 1e-300)
    var_top = {k: np.asarray(var, dtype=np.float64)[sel][idx] for k, var in errors.variance.items()}
    for b in sorted({round(2 ** (e / 4)) for e in range(16, 4 * 34 + 1)}):
        m_new = coalitions_at(b)
        total = np.zeros_like(v_top)
        for k, var in var_top.items():
            m0 = errors.coalitions.get(k, 0)
            m1 = int(m_new.get(k, 0))
            full = sizes is not None and k in sizes and sizes[k] < 62 and m1 >= 2 ** sizes[k]
            if m0 <= 0 or full:
                continue
            total = total + var * m0 / max(m1, 1)
        if float(np.median(np.sqrt(total) / v_top)) <= target:
            return float(b)
    return math.inf


def term_diagnostics(
    sur: Surrogate,
    errors: TermErrors,
    coalitions_at: Callable[[int], Mapping[str, int]],
    *,
    target: float = 0.1,
    top_k: int = 10,
    sizes: Mapping[str, int] | None = None,
) -> tuple[Surrogate, dict[str, float]]:
    """Standard errors of a surrogate's terms as a `Surrogate`, and the diagnostics an explanation keeps.

    Args:
        sur: The pilot fit.
        errors: Its bootstrap errors (`surrogate_vector` layout).
        coalitions_at: Budget → coalitions per source (for `budget_hint`).
        target: Relative error the budget hint aims at.
        top_k: Interactions counted as "top".
        sizes: Players per source.

    Returns:
        ``(se, diagnostics)``: ``se`` holds standard errors in place of values; diagnostics are
        ``se_total``, ``se_intercept``, ``se_median``, ``se_rel_top``, ``significant_share`` (over the
        identified pair terms; the main effects when there are none), ``budget_hint``, ``n_boot``,
        ``coalitions_per_term`` and ``unidentified``.
    """
    vec = surrogate_vector(sur)
    sl = pair_slice(sur) if sur.pairs.shape[0] else slice(1, 1 + sur.n_players)
    idx = np.arange(vec.size)[sl]
    idx = idx[np.isfinite(errors.se[idx])]
    if idx.size == 0:  # no identified pair term: summarise the main effects instead
        idx = np.arange(1, 1 + sur.n_players)
    diag = {
        "se_total": errors.se_total,
        "se_intercept": float(errors.se[0]),
        "n_boot": float(errors.n_boot),
        "coalitions_per_term": errors.info.get("coalitions_per_term", float("nan")),
        "unidentified": errors.info.get("unidentified", 0.0),
    }
    diag.update(summarise(vec[idx], errors.se[idx], top_k=top_k))
    diag["budget_hint"] = budget_hint(vec, errors, coalitions_at, target=target, top_k=top_k, index=idx, sizes=sizes)
    return vector_surrogate(errors.se, sur), diag


def interval_covers_zero(values: Tensor, se: Tensor, z: float = Z95) -> Tensor:
    """Bool mask of terms whose interval ``value ± z·se`` contains 0 (same shape as ``values``)."""
    return values.abs() <= z * se


__all__ = [
    "DEFAULT_BOOT",
    "Z95",
    "Source",
    "TermErrors",
    "bootstrap_terms",
    "budget_hint",
    "finite_population",
    "interval_covers_zero",
    "joint_errors",
    "multipliers",
    "pair_slice",
    "product_errors",
    "relative_error",
    "summarise",
    "surrogate_vector",
    "term_diagnostics",
    "top_indices",
    "vector_surrogate",
]
