"""Coalition samplers: weighted samples for fits, and plain draws from μ_p for held-out evaluation.

Vocabulary (one meaning per name):

* ``sample_*`` return a `CoalitionSample`: *distinct* coalitions with regression weights, for fitting
  (`sample_kernel` for any size kernel, `sample_banzhaf` for μ_p, `sample_shapley` for the Shapley kernel).
* ``draw_*`` return plain bool matrices of coalitions drawn from μ_p (each player kept independently
  with probability p), for evaluation: `draw_iid` (independent draws, repeats allowed; each row, and
  each cell of a product of two such draws, is a draw from μ_p) and `draw_distinct` (distinct draws).
* `split_budget` (fits) and `split_grid` (evaluation grids) split a number of game values into
  ``m_image × m_text`` coalitions.

The weighted samplers:

A *kernel* gives the weight of one coalition as a function of its size, ``kernel[k]`` for
``k = 0..n``; the probability mass of size k is ``binom(n, k) * kernel[k]``. Sampling follows the
FIxLIP reference (spec §2.1), written anew:

1. **Border trick.** While some size k would receive at least ``binom(n, k)`` of the remaining budget
   in expectation, enumerate all coalitions of that size (exact kernel weight), remove k, and
   renormalise the remaining sizes.
2. Draw a size from the remaining size masses, then a uniformly random coalition of that size, until
   ``budget`` *distinct* coalitions exist (duplicates raise their count but use no budget).
3. Weight of a sampled coalition: its empirical frequency among the draws, **times the probability
   mass of the sampled sizes** (the reference omits that factor, which puts sampled and enumerated
   coalitions on different scales when both occur; spec §7.7). Weights therefore sum to the total
   kernel mass (1 for a normalised kernel).

For the weighted Banzhaf law ``kernel[k] = p^k (1-p)^(n-k)`` this is i.i.d. Bernoulli(p) membership
per player, so the coalitions of two player sets sampled independently combine into coalitions of
the union that again follow the law (the basis of the cross-modal estimator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from dualex.errors import InputError
from dualex.options import fraction, positive_int

_MAX_DRAW_FACTOR = 1000  # give up after this many draws per requested coalition (near saturation)
MAX_SAMPLE = 2**22  # distinct coalitions one sample may hold (each is kept, and embedded once, in memory)


@dataclass(frozen=True)
class CoalitionSample:
    """Distinct coalitions with regression weights.

    Attributes:
        coalitions: ``(m, n)`` bool, row a is coalition a (True = player kept).
        weights: ``(m,)`` float64 regression weights, summing to the kernel mass covered (≈ 1).
        n_draws: Number of random draws made for the sampled part (0 if all were enumerated).
        n_enumerated: Number of coalitions that were enumerated by the border trick.
    """

    coalitions: np.ndarray
    weights: np.ndarray
    n_draws: int
    n_enumerated: int

    @property
    def m(self) -> int:
        """Number of sampled coalitions."""
        return int(self.coalitions.shape[0])

    @property
    def n_players(self) -> int:
        """Number of players."""
        return int(self.coalitions.shape[1])


def _log_binom(n: int, k: np.ndarray | int) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    out: np.ndarray = math.lgamma(n + 1) - np.vectorize(math.lgamma)(k + 1) - np.vectorize(math.lgamma)(n - k + 1)
    return out


def banzhaf_kernel(n: int, p: float) -> np.ndarray:
    """Per-coalition weight of each size under μ_p: ``p^k (1-p)^(n-k)``, ``(n+1,)`` float64.

    Args:
        n: Number of players.
        p: Keep probability of each player, in (0, 1).
    """
    check_p(p)
    k = np.arange(n + 1, dtype=np.float64)
    return np.exp(k * math.log(p) + (n - k) * math.log1p(-p))


def shapley_kernel(n: int) -> np.ndarray:
    """The KernelSHAP weight of one coalition of each size, normalised to total mass 1, ``(n+1,)``.

    ``kernel[k] ∝ (n-1) / (binom(n, k) k (n-k))`` for ``0 < k < n``; sizes 0 and n get 0 here (they
    are infinite in the Shapley kernel: `sample_shapley` adds them as anchors with a large weight).
    """
    if n < 2:
        raise InputError(f"the Shapley kernel needs at least 2 players, got {n}")
    k = np.arange(n + 1, dtype=np.float64)
    out = np.zeros(n + 1)
    inner = k[1:-1]
    log_w = math.log(n - 1) - _log_binom(n, inner) - np.log(inner) - np.log(n - inner)
    out[1:-1] = np.exp(log_w)
    mass = float(np.exp(_log_binom(n, inner) + log_w).sum())
    weights: np.ndarray = out / mass
    return weights


def check_p(p: float) -> float:
    """``p`` checked: a keep probability strictly between 0 and 1 (`dualex.options.fraction`)."""
    return fraction("p", p, what="the keep probability of each player")


def _check_budget(budget: int, *, minimum: int = 1) -> int:
    return positive_int("budget", budget, minimum=minimum)


def count_coalitions(n: int, kernel: np.ndarray) -> int:
    """Number of distinct coalitions of ``n`` players whose size has a positive ``kernel`` weight (exact)."""
    return sum(math.comb(n, k) for k in range(n + 1) if kernel[k] > 0)


def check_sample_size(m: int, *, what: str = "coalitions") -> None:
    """Refuse at once a sample of more than `MAX_SAMPLE` distinct coalitions.

    Each distinct coalition is drawn, stored and sent through a tower once, and its embedding is
    cached for the game; beyond 2^22 of them that no longer fits a machine (nor finishes).

    Args:
        m: Distinct coalitions the sample would need.
        what: What they are, for the message (e.g. ``"image coalitions"``).
    """
    if m > MAX_SAMPLE:
        raise InputError(
            f"this budget needs {m:,} distinct {what}, more than the {MAX_SAMPLE:,} one explanation can hold "
            "(each is stored and masked through a tower once); choose a smaller budget"
        )


def _enumerate_size(n: int, k: int) -> np.ndarray:
    out = np.zeros((math.comb(n, k), n), dtype=bool)
    for r, members in enumerate(combinations(range(n), k)):
        out[r, list(members)] = True
    return out


def sample_kernel(
    n: int,
    budget: int,
    kernel: np.ndarray,
    rng: np.random.Generator,
    *,
    border_trick: bool = True,
) -> CoalitionSample:
    """Sample ``min(budget, #coalitions with kernel > 0)`` distinct coalitions with regression weights.

    Args:
        n: Number of players (n ≥ 0).
        budget: Number of distinct coalitions wanted.
        kernel: ``(n+1,)`` non-negative per-coalition weight by size (e.g. `banzhaf_kernel`); only
            relative values matter for the sampled part, absolute values for enumerated sizes, so
            pass a kernel whose total mass ``Σ_k binom(n,k) kernel[k]`` is 1.
        rng: NumPy random generator (the only source of randomness).
        border_trick: Enumerate sizes whose expected count reaches their number of coalitions.

    Returns:
        A `CoalitionSample`; enumerated coalitions come first. A budget at or above the number of
        coalitions enumerates them all (the exact computation); one that needs more than `MAX_SAMPLE`
        distinct coalitions is refused at once (`check_sample_size`).
    """
    budget = _check_budget(budget)
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.shape != (n + 1,) or not np.all(np.isfinite(kernel)) or np.any(kernel < 0):
        raise InputError(f"kernel must be {n + 1} finite non-negative weights, one per coalition size")
    budget = min(budget, count_coalitions(n, kernel))  # all of them: the border trick enumerates each size
    check_sample_size(budget)
    sizes = [k for k in range(n + 1) if kernel[k] > 0]
    log_count = {k: float(_log_binom(n, k)) for k in sizes}
    # size masses in log space (binom(n, k) overflows floats for a few hundred players)
    log_mass = {k: log_count[k] + math.log(kernel[k]) for k in sizes}
    parts: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    remaining = budget
    n_enum = 0
    if border_trick:
        changed = True
        while changed and sizes and remaining > 0:
            changed = False
            top = max(log_mass[k] for k in sizes)
            total = sum(math.exp(log_mass[k] - top) for k in sizes)
            for k in list(sizes):
                share = math.log(remaining) + log_mass[k] - top - math.log(total)
                if share >= log_count[k] - 1e-9:
                    block = _enumerate_size(n, k)
                    parts.append(block)
                    weights.append(np.full(block.shape[0], kernel[k]))
                    remaining -= block.shape[0]
                    n_enum += block.shape[0]
                    sizes.remove(k)
                    changed = True
                    break
    n_draws = 0
    if sizes and remaining > 0:
        top = max(log_mass[k] for k in sizes)
        rel = np.array([math.exp(log_mass[k] - top) for k in sizes])
        sampled_mass = float(sum(binom_kernel_mass(n, k, kernel[k]) for k in sizes))
        probs = rel / rel.sum()
        want = int(min(remaining, sum(math.comb(n, k) for k in sizes)))
        rows, counts, n_draws = _draw_distinct(n, want, np.array(sizes), probs, rng)
        parts.append(rows)
        weights.append(counts / max(n_draws, 1) * sampled_mass)
    if not parts:
        return CoalitionSample(np.zeros((0, n), dtype=bool), np.zeros(0), 0, 0)
    return CoalitionSample(np.concatenate(parts), np.concatenate(weights), n_draws, n_enum)


def binom_kernel_mass(n: int, k: int, weight: float) -> float:
    """``binom(n, k) * weight`` computed without overflow."""
    if weight <= 0:
        return 0.0
    return math.exp(float(_log_binom(n, k)) + math.log(weight))


def _draw_distinct(
    n: int, want: int, sizes: np.ndarray, probs: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """Draw (size, uniform subset) until ``want`` distinct coalitions exist: rows, counts, draws."""
    index: dict[bytes, int] = {}
    rows: list[np.ndarray] = []
    counts: list[int] = []
    draws = 0
    limit = _MAX_DRAW_FACTOR * max(want, 1)
    while len(rows) < want and draws < limit:
        batch = int(min(max(1.2 * (want - len(rows)) + 64, 256), 1 << 16))
        k = rng.choice(sizes, size=batch, p=probs)
        ranks = np.argsort(np.argsort(rng.random((batch, n)), axis=1), axis=1)
        block = ranks < k[:, None]
        packed = np.packbits(block, axis=1)
        for r in range(batch):
            key = packed[r].tobytes()
            draws += 1
            j = index.get(key)
            if j is None:
                index[key] = len(rows)
                rows.append(block[r])
                counts.append(1)
                if len(rows) == want:
                    break
            else:
                counts[j] += 1
    out = np.stack(rows) if rows else np.zeros((0, n), dtype=bool)
    return out, np.asarray(counts, dtype=np.float64), draws


def sample_banzhaf(n: int, budget: int, p: float, rng: np.random.Generator) -> CoalitionSample:
    """Distinct coalitions from μ_p (each player kept with probability p) with WLS weights.

    Args:
        n: Number of players.
        budget: Number of distinct coalitions (capped at 2^n, where all are enumerated exactly).
        p: Keep probability, in (0, 1).
        rng: NumPy random generator.
    """
    return sample_kernel(n, budget, banzhaf_kernel(n, p), rng)


def sample_shapley(n: int, budget: int, rng: np.random.Generator, *, anchor_weight: float = 1e6) -> CoalitionSample:
    """Distinct coalitions from the Shapley kernel, with ∅ and N always included.

    The Shapley kernel gives the empty and the full coalition infinite weight; as in the FIxLIP
    reference ("FIxLIP (SI)", spec §1.7) they are added with a large finite ``anchor_weight``
    (relative to a total mass of 1 for all other coalitions), a soft constraint. The rest of the
    budget is sampled with KernelSHAP size probabilities ∝ 1/(k(n−k)) and the border trick.

    Args:
        n: Number of players (≥ 2).
        budget: Number of distinct coalitions including ∅ and N (≥ 2).
        rng: NumPy random generator.
        anchor_weight: Regression weight of ∅ and of N.

    Returns:
        A `CoalitionSample` whose first two rows are ∅ and N.
    """
    budget = _check_budget(budget, minimum=2)
    if n < 2:
        raise InputError(f"the Shapley kernel needs at least 2 players, got {n}")
    anchors = np.zeros((2, n), dtype=bool)
    anchors[1] = True
    rest = (
        sample_kernel(n, budget - 2, shapley_kernel(n), rng)
        if budget > 2
        else CoalitionSample(np.zeros((0, n), dtype=bool), np.zeros(0), 0, 0)
    )
    return CoalitionSample(
        np.concatenate([anchors, rest.coalitions]),
        np.concatenate([[anchor_weight, anchor_weight], rest.weights]),
        rest.n_draws,
        rest.n_enumerated + 2,
    )


def draw_iid(n: int, m: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """``m`` independent draws from μ_p over ``n`` players, ``(m, n)`` bool (repeats allowed)."""
    return rng.random((m, n)) < p


def draw_distinct(n: int, m: int, *, p: float = 0.5, seed: int = 0) -> np.ndarray:
    """Distinct coalitions drawn from μ_p, ``(K, n)`` bool, in order of first appearance.

    Draws repeat until ``m`` distinct coalitions exist or ``50 · m`` draws were made (with very few
    players fewer coalitions may result). Seeded by ``seed``.
    """
    if n < 1:
        raise InputError("there are no players to form coalitions of")
    check_p(p)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 2:
        raise InputError(f"the number of coalitions must be an integer ≥ 2, got {m!r}")
    rng = np.random.default_rng(seed)
    seen: dict[bytes, np.ndarray] = {}
    drawn, limit = 0, 50 * int(m)
    while len(seen) < m and drawn < limit:
        batch = rng.random((max(64, 2 * (m - len(seen))), n)) < p
        drawn += batch.shape[0]
        for r in batch:
            if len(seen) >= m:
                break
            seen.setdefault(np.packbits(r).tobytes(), r)
    return np.stack(list(seen.values()))


def split_grid(size: int, n_image: int, n_text: int, *, shape: str = "reference") -> tuple[int, int]:
    """``(m_image, m_text)`` with ``m_image · m_text ≤ size`` for an evaluation grid of i.i.d. draws.

    Args:
        size: Number of grid cells wanted.
        n_image, n_text: Numbers of players of each side.
        shape: ``"reference"``: the reference's budget split (`split_budget`) without its 2^n caps
            (draws may repeat): the side with fewer players gets ``max(4, ceil(sqrt(size) · n_small /
            n_large))`` coalitions, the other the rest (FIxLIP's held-out diagnostics). ``"square"``:
            ``floor(sqrt(size))`` text coalitions and the rest image coalitions, so that both sides'
            effects are sampled equally often (the product design of p-faithfulness).
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"the grid size must be a positive integer, got {size!r}")
    if shape == "square":
        m_t = max(1, math.isqrt(int(size)))
        return max(1, int(size) // m_t), m_t
    if shape != "reference":
        raise InputError(f"shape must be 'reference' or 'square', got {shape!r}")
    small, large = sorted((n_image, n_text))
    m_small = min(int(size), max(4, math.ceil(math.sqrt(size) * small / max(large, 1))))
    m_large = max(1, int(size) // m_small)
    return (m_large, m_small) if n_image >= n_text else (m_small, m_large)


def split_budget(budget: int, n_image: int, n_text: int) -> tuple[int, int]:
    """The reference's split of a cross-modal budget into ``(m_image, m_text)`` coalitions.

    The side with fewer players gets ``m = min(2^n, ceil(max(4, sqrt(budget) · n_small / n_large)))``
    coalitions, the other ``min(2^n, budget // m)``; ``m_image · m_text ≤ budget`` game values.
    """
    budget = _check_budget(budget, minimum=4)
    swap = n_text > n_image
    n_large, n_small = (n_text, n_image) if swap else (n_image, n_text)
    small = math.ceil(max(4.0, math.sqrt(budget) * n_small / max(n_large, 1)))
    small = min(small, 2**n_small if n_small < 62 else small, budget)
    large = max(1, budget // small)
    if n_large < 62:
        large = min(large, 2**n_large)
    return (small, large) if swap else (large, small)


__all__ = [
    "MAX_SAMPLE",
    "CoalitionSample",
    "banzhaf_kernel",
    "check_p",
    "check_sample_size",
    "count_coalitions",
    "draw_distinct",
    "draw_iid",
    "sample_banzhaf",
    "sample_kernel",
    "sample_shapley",
    "shapley_kernel",
    "split_budget",
    "split_grid",
]
