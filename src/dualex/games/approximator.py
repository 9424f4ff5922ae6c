"""FIxLIP's estimator as an approximator over a game: budget, index and order in, interaction values out.

The shape follows shapiq's ``Approximator``: ``RegressionApproximator(index, max_order, ...)
.approximate(budget, game)``. The methods ``fixlip`` and ``fixlip_si`` are thin wrappers that build the
game of a (caption, image) pair and turn the result into an `Explanation`; anything that implements
`dualex.games.game.Game` can be approximated the same way.

Indices (the surrogate is always the weighted least-squares 2-additive fit of ``v(S) − v(∅)``):

* ``"FBII"`` / ``"FWBII"``: Faith-(weighted-)Banzhaf interactions, coalition weights μ_p (each player
  kept with probability ``p``; FBII is p = 0.5). Estimators: ``"crossmodal"`` (default; image and text
  coalitions sampled independently, the ``m_I × m_T`` grid of values from ``m_I + m_T`` tower passes
  through ``game.grid``, `fit_product_surrogate`) or ``"agnostic"`` (joint coalitions, `fit_surrogate`).
* ``"FSII"``: Faith-Shapley interactions (FIxLIP (SI)): Shapley-kernel joint coalitions with ∅ and N
  as heavy anchors (`sample_shapley`); the kernel does not factorise, so only ``"agnostic"``.

Besides the fit, an approximation carries (all without tower passes beyond the fit's, by default):

* standard errors of every term (`dualex.games.uncertainty`, ``n_boot`` re-weightings per sampled set);
* out-of-sample fit quality (p-faithfulness) by cross-fitting on the evaluated coalitions
  (`dualex.games.crossfit`), or on a fresh held-out sample when ``holdout`` > 0 (the old mode);
* an identification check: a side (or the joint sample) with fewer sampled coalitions than its
  order-≤1 terms (intercept and one main effect per player) leaves the fit underdetermined, and
  bootstrap errors then understate the spread over seeds (measured on the bundled model: SE / spread
  0.30 at budget 2^10, 11 text coalitions for 17 text terms; 1.0–1.3 once every side has as many
  coalitions as terms). ``diagnostics["underdetermined"]`` is then 1, ``diagnostics["budget_needed"]``
  the smallest budget whose split gives every side enough coalitions, and a `UserWarning` says so when
  standard errors are reported.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.games.basis import ESTIMATORS, check_pairs, choose_split, pair_label, resolve_pairs
from dualex.games.crossfit import DEFAULT_FOLDS, crossfit_joint, crossfit_product
from dualex.games.game import Game
from dualex.games.regression import fit_product_surrogate, fit_surrogate
from dualex.games.sampler import (
    CoalitionSample,
    check_p,
    check_sample_size,
    draw_iid,
    sample_banzhaf,
    sample_shapley,
    split_grid,
)
from dualex.games.surrogate import DEFAULT_CHUNK_BYTES, Surrogate, fit_quality
from dualex.games.uncertainty import DEFAULT_BOOT, TermErrors, joint_errors, product_errors, term_diagnostics

INDICES = ("FBII", "FWBII", "FSII")
_MAX_BUDGET = 2**40  # search limit of `budget_needed`


@dataclass
class Approximation:
    """The result of `RegressionApproximator.approximate`.

    Attributes:
        surrogate: The fitted 2-additive surrogate of ``v(S) − v(∅)`` (joint player order; ``n_image``
            set when the game has sides).
        stderr: Standard errors in the same layout (values replaced by errors; ``inf`` where a term is
            not identified by the sample), or None without ``n_boot``.
        diagnostics: ``v_empty``, ``v_full``, ``n_values``, fit quality, timings, error summaries,
            ``underdetermined``, ``budget_needed`` (see `RegressionApproximator.approximate`).
        index: ``"FBII"``, ``"FWBII"`` or ``"FSII"``.
        p: The keep probability of the index (0.5 for FBII and FSII).
        budget: The budget that was asked for.
    """

    surrogate: Surrogate
    stderr: Surrogate | None
    diagnostics: dict[str, float] = field(default_factory=dict)
    index: str = "FBII"
    p: float = 0.5
    budget: int = 0

    def interaction_values(self) -> Any:
        """The surrogate as a ``shapiq.InteractionValues`` (needs shapiq)."""
        from dualex.games.shapiq_io import surrogate_to_interaction_values

        return surrogate_to_interaction_values(
            self.surrogate,
            p=self.p,
            budget=int(self.diagnostics.get("n_values", self.budget)),
            estimated=bool(self.diagnostics.get("exact", 0.0) == 0.0),
        )


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise InputError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _complete(m: int, n: int) -> bool:
    """Whether ``m`` distinct coalitions of ``n`` players are all of them."""
    return n < 62 and m >= 2**n


class RegressionApproximator:
    """Weighted least-squares 2-additive approximator of FBII / FWBII / FSII (FIxLIP's estimator).

    Args:
        index: ``"FBII"`` (p = 0.5), ``"FWBII"`` (keep probability ``p``) or ``"FSII"`` (Shapley kernel).
        max_order: 2 (pairs per ``pairs``) or 1 (main effects only: the weighted Banzhaf / Shapley values).
        p: Keep probability for FWBII, in (0, 1) (FBII: 0.5 or None; FSII: None).
        estimator: ``"crossmodal"`` (Banzhaf default; needs a game with ``grid`` and ``n_image``) or
            ``"agnostic"`` (joint coalitions; the only choice for FSII).
        pairs: Pair basis (`dualex.games.basis.resolve_pairs`): ``"all"``, ``"crossmodal"``, ``"none"``,
            an integer k (top-k clique by first-order value, from the same samples) or explicit pairs.
        split: How a cross-modal budget becomes a grid (`choose_split`): ``"auto"`` or ``"reference"``.
        m_image: Explicit image coalitions (cross-modal; overrides the split).
        m_text: Explicit text coalitions (cross-modal).
        n_boot: Bootstrap re-weightings per sampled coalition set for standard errors (0: none; else ≥ 2).
        holdout: Out-of-sample diagnostics: None (default) cross-fits on the evaluated coalitions
            (``folds`` folds, no extra game values); 0 skips them; N ≥ 4 scores a fresh sample of N
            values (the old held-out mode: more tower passes than the fit at small budgets).
        folds: Folds of the cross-fitting (≥ 2).
        hint_target: Relative error of the top-10 interactions that ``budget_hint`` aims at.
        anchor_weight: FSII: regression weight of ∅ and N.
        device: Where to solve (default: where the game's values are).
        chunk_bytes: Solver block size.
    """

    def __init__(
        self,
        index: str = "FBII",
        max_order: int = 2,
        *,
        p: float | None = None,
        estimator: str | None = None,
        pairs: Any = "all",
        split: str = "auto",
        m_image: int | None = None,
        m_text: int | None = None,
        n_boot: int = DEFAULT_BOOT,
        holdout: int | None = None,
        folds: int = DEFAULT_FOLDS,
        hint_target: float = 0.1,
        anchor_weight: float = 1e6,
        device: torch.device | str | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if index not in INDICES:
            raise InputError(f"index must be one of {', '.join(INDICES)}, got {index!r}")
        if max_order not in (1, 2) or isinstance(max_order, bool):
            raise InputError(f"max_order must be 1 or 2, got {max_order!r}")
        if index == "FSII":
            if p not in (None, 0.5):
                raise InputError("FSII (Shapley kernel) has no keep probability p")
            p = 0.5
            estimator = estimator or "agnostic"
            if estimator != "agnostic":
                raise InputError(
                    "the Shapley kernel does not factorise over the two sides: FSII needs estimator='agnostic'"
                )
        elif index == "FBII":
            if p not in (None, 0.5):
                raise InputError(f"FBII is the index of p = 0.5; use index='FWBII' for p = {p}")
            p = 0.5
        else:
            p = check_p(0.5 if p is None else p)
        estimator = estimator or "crossmodal"
        if estimator not in ESTIMATORS:
            raise InputError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        check_pairs(pairs)
        if split not in ("auto", "reference"):
            raise InputError(f"split must be 'auto' or 'reference', got {split!r}")
        n_boot = _int("n_boot", n_boot, 0)
        if n_boot == 1:
            raise InputError("n_boot must be 0 (no standard errors) or at least 2")
        if holdout is not None:
            holdout = _int("holdout", holdout, 0)
            if 0 < holdout < 4:
                raise InputError(f"holdout must be 0 (off) or at least 4, got {holdout}")
        if not (isinstance(hint_target, (int, float)) and not isinstance(hint_target, bool) and hint_target > 0):
            raise InputError(f"hint_target must be a positive number, got {hint_target!r}")
        self.index, self.max_order, self.p, self.estimator = index, int(max_order), float(p), estimator
        self.pairs: Any = "none" if max_order == 1 else pairs
        self.split = split
        self.m_image = None if m_image is None else _int("m_image", m_image, 1)
        self.m_text = None if m_text is None else _int("m_text", m_text, 1)
        self.n_boot, self.holdout, self.folds = n_boot, holdout, _int("folds", folds, 2)
        self.hint_target, self.anchor_weight = float(hint_target), float(anchor_weight)
        self.device = None if device is None else torch.device(device)
        self.chunk_bytes = _int("chunk_bytes", chunk_bytes, 1)

    # ------------------------------------------------------------------------------------------ sizes
    @property
    def min_budget(self) -> int:
        """The smallest budget the index can be estimated from (2 for FSII, else 4 coalitions)."""
        return 2 if self.index == "FSII" else 4

    @property
    def pair_label(self) -> str:
        """``pairs`` as a short label for explanation params."""
        return pair_label(self.pairs)

    def grid_shape(self, budget: int, n_image: int, n_text: int) -> tuple[int, int]:
        """``(m_image, m_text)`` coalitions of a cross-modal budget (explicit sizes win over the split)."""
        if self.m_image is not None and self.m_text is not None:
            return self.m_image, self.m_text
        if self.m_image is not None:
            return self.m_image, max(1, budget // self.m_image)
        if self.m_text is not None:
            return max(1, budget // self.m_text), self.m_text
        return choose_split(budget, n_image, n_text, self.pairs, self.split)

    def sample_sizes(self, budget: int, n_image: int, n_text: int) -> dict[str, tuple[int, int]]:
        """Distinct coalitions per sampled set at ``budget``: ``{name: (coalitions, players)}``."""
        if self.estimator == "crossmodal":
            m_i, m_t = self.grid_shape(budget, n_image, n_text)
            return {"image": (m_i, n_image), "text": (m_t, n_text)}
        return {"joint": (budget, n_image + n_text)}

    def check(self, budget: int, n_image: int, n_text: int = 0) -> int:
        """Validate ``budget`` for a game of these sizes before any game value is computed.

        Refuses at once (`InputError`) a budget below the minimum or one whose sample would need more
        than `dualex.games.sampler.MAX_SAMPLE` distinct coalitions of a side; a budget at or above the
        number of distinct coalitions is fine (all are enumerated: the exact computation).

        Returns:
            The budget as an int.
        """
        budget = _int("budget", budget, self.min_budget)
        if self.estimator == "crossmodal" and (n_image < 1 or n_text < 1):
            raise InputError("the cross-modal estimator needs players on both sides (n_image ≥ 1, n_text ≥ 1)")
        for name, (m, n) in self.sample_sizes(budget, n_image, n_text).items():
            cap = 2**n if n < 62 else m
            label = "joint" if name == "joint" else name
            check_sample_size(min(m, cap), what=f"{label} coalitions (budget {budget:,})")
        return budget

    def _short_sides(self, budget: int, n_image: int, n_text: int) -> dict[str, tuple[int, int]]:
        """Sets whose random coalitions are fewer than their order-≤1 terms: ``{name: (m, terms)}``."""
        out = {}
        for name, (m, n) in self.sample_sizes(budget, n_image, n_text).items():
            anchors = 2 if self.index == "FSII" else 0
            m_eff = min(m, 2**n if n < 62 else m)
            if _complete(m_eff - anchors, n) or _complete(m_eff, n):
                continue
            if m_eff - anchors < 1 + n:
                out[name] = (m_eff - anchors, 1 + n)
        return out

    def budget_needed(self, budget: int, n_image: int, n_text: int) -> float:
        """Smallest budget ≥ ``budget`` whose sample gives every set as many coalitions as order-≤1 terms.

        Returns ``budget`` itself when it already does, ``inf`` when no budget up to 2^40 does (e.g.
        explicit ``m_image``/``m_text`` that are too small).
        """
        if not self._short_sides(budget, n_image, n_text):
            return float(budget)
        lo, hi = budget, budget
        while self._short_sides(hi, n_image, n_text):
            if hi >= _MAX_BUDGET:
                return math.inf
            lo, hi = hi, min(2 * hi, _MAX_BUDGET)
        while hi - lo > 1:  # lo fails, hi passes
            mid = (lo + hi) // 2
            if self._short_sides(mid, n_image, n_text):
                lo = mid
            else:
                hi = mid
        return float(hi)

    # ------------------------------------------------------------------------------------------ approximate
    def approximate(
        self,
        budget: int,
        game: Game,
        *,
        seed: int | np.random.SeedSequence | np.random.Generator = 0,
        n_image: int | None = None,
    ) -> Approximation:
        """Approximate the index of ``game`` from ``budget`` game values.

        Args:
            budget: Cross-modal: ``m_I · m_T ≤ budget`` values from ``m_I + m_T`` side evaluations;
                joint (agnostic, FSII): ``budget`` distinct coalitions (∅ and N included for FSII).
            game: The game (players: image players first). The cross-modal estimator needs
                ``game.grid(image_coalitions, text_coalitions) -> (m_I, m_T)`` values and ``n_image``.
            seed: Seed, `numpy.random.SeedSequence` or `numpy.random.Generator` of the samplers, folds
                and bootstrap (a generator: FSII samples and bootstraps from it directly).
            n_image: Image players, when the game has no ``n_image`` attribute (default: all players,
                for a game without sides).

        Returns:
            An `Approximation`. Diagnostics: ``v_empty``, ``v_full``, ``n_values``, ``m_image`` /
            ``m_text`` (grid), ``r2_train``, ``rank_deficient``, ``n_pairs``, ``exact`` (1 when every
            coalition was enumerated), out-of-sample ``r2``, ``spearman``, ``pearson``, ``mse`` (with
            ``crossfit_values``/``crossfit_folds`` or ``holdout_values``), ``underdetermined``,
            ``budget_needed``, the error summaries of `term_diagnostics` with ``n_boot``, and timings
            (``game_seconds``, ``fit_seconds``, ``bootstrap_seconds``, ``crossfit_seconds`` /
            ``holdout_seconds``).
        """
        n = int(game.n_players)
        n_i = int(n_image) if n_image is not None else int(getattr(game, "n_image", n))
        n_t = n - n_i
        if self.index == "FSII" and n < 2:
            raise InputError(f"Shapley interactions need at least 2 players, got {n}")
        sided = not isinstance(self.pairs, str) or self.pairs == "crossmodal"
        if sided and n_image is None and not hasattr(game, "n_image") and not _explicit(self.pairs):
            raise InputError("pairs='crossmodal' or a top-k clique needs n_image (the number of image players)")
        budget = self.check(budget, n_i, n_t)
        if isinstance(seed, np.random.Generator):
            gens = [seed, *seed.spawn(2)] if self.index == "FSII" else seed.spawn(6)
        else:
            seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(_int("seed", seed, 0))
            gens = [np.random.default_rng(s) for s in seq.spawn(3 if self.index == "FSII" else 6)]
        if self.index == "FSII":
            out = self._joint_shapley(budget, game, gens, n_i)
        else:
            rngs = gens
            if self.estimator == "crossmodal":
                out = self._grid(budget, game, rngs, n_i)
            else:
                out = self._joint_banzhaf(budget, game, rngs, n_i)
        d = out.diagnostics
        short = self._short_sides(budget, n_i, n_t)
        d["underdetermined"] = float(bool(short))
        d["budget_needed"] = self.budget_needed(budget, n_i, n_t)
        if short and self.n_boot:
            what = "; ".join(f"{m:,} {name} coalitions for {t:,} {name}-side terms" for name, (m, t) in short.items())
            need = d["budget_needed"]
            warnings.warn(
                f"{self.index} at budget {budget:,}: {what} (intercept and one main effect per player) leave the "
                "fit underdetermined, so its standard errors understate the spread over seeds; "
                + (f"budget {int(need):,} would suffice" if math.isfinite(need) else "raise m_image / m_text"),
                UserWarning,
                stacklevel=3,
            )
        if hasattr(game, "n_passes"):
            d["n_passes"] = float(game.n_passes)
        return out

    # ------------------------------------------------------------------------------------------ estimators
    def _device(self, values: Tensor) -> torch.device:
        return self.device if self.device is not None else values.device

    def _finish(
        self,
        sur: Surrogate,
        diag: dict[str, float],
        boot: Any,
        crossfit: Any,
        holdout: Any,
        budget: int,
        n_i: int,
        n_t: int,
        device: torch.device,
        t1: float,
    ) -> Approximation:
        """Timings, bootstrap errors and out-of-sample diagnostics of a fitted surrogate."""
        _sync(device)
        t2 = time.perf_counter()
        diag.update(
            fit_seconds=t2 - t1,
            r2_train=float(sur.info.get("r2_train", float("nan"))),
            rank_deficient=float(sur.info.get("rank_deficient", 0.0)),
            n_pairs=float(sur.pairs.shape[0]),
        )
        se = None
        if self.n_boot:
            errors: TermErrors = boot()
            _sync(device)
            diag["bootstrap_seconds"] = time.perf_counter() - t2
            sizes = {"image": n_i, "text": n_t} if self.estimator == "crossmodal" else {"joint": n_i + n_t}

            def at(b: int) -> dict[str, int]:
                return {k: m for k, (m, _) in self.sample_sizes(b, n_i, n_t).items()}

            se, extra = term_diagnostics(sur, errors, at, target=self.hint_target, sizes=sizes)
            se.n_image = sur.n_image
            diag.update(extra)
        t3 = time.perf_counter()
        if self.holdout is None:
            diag.update(crossfit())
            diag["crossfit_seconds"] = time.perf_counter() - t3
        elif self.holdout:
            diag.update(holdout())
            diag["holdout_seconds"] = time.perf_counter() - t3
        return Approximation(sur, se, diag, self.index, self.p, budget)

    def _fit_pairs(self, fit: Any, n_i: int, n_t: int) -> Tensor:
        """The pair basis; a top-k clique is chosen from a first-order fit on the same values."""
        phi = None
        if isinstance(self.pairs, (int, np.integer)) and not isinstance(self.pairs, bool):
            phi = fit("none").main
        return resolve_pairs(self.pairs, n_i, n_t, phi)

    def _grid(self, budget: int, game: Any, rngs: list[np.random.Generator], n_i: int) -> Approximation:
        if not hasattr(game, "grid"):
            raise InputError("the cross-modal estimator needs a game with grid(image_coalitions, text_coalitions)")
        n_t = int(game.n_players) - n_i
        t0 = time.perf_counter()
        v0, vN = _empty_and_full(game)
        diag: dict[str, float] = {"v_empty": v0, "v_full": vN}
        m_i, m_t = self.grid_shape(budget, n_i, n_t)
        sI = sample_banzhaf(n_i, m_i, self.p, rngs[0])
        sT = sample_banzhaf(n_t, m_t, self.p, rngs[1])
        raw = torch.as_tensor(game.grid(sI.coalitions, sT.coalitions))
        dev = self._device(raw)
        V = raw.to(dev, torch.float64) - v0
        _sync(raw.device)
        t1 = time.perf_counter()
        kw: dict[str, Any] = {"device": dev, "chunk_bytes": self.chunk_bytes}
        args = (sI.coalitions, sI.weights, sT.coalitions, sT.weights, V)
        basis = self._fit_pairs(lambda b: fit_product_surrogate(*args, b, **kw), n_i, n_t)
        sur = fit_product_surrogate(*args, basis, **kw)
        sur.n_image = n_i
        exact = _complete(sI.m, n_i) and _complete(sT.m, n_t)
        diag.update(
            m_image=float(sI.m),
            m_text=float(sT.m),
            n_values=float(sI.m * sT.m),
            game_seconds=t1 - t0,
            exact=float(exact),
        )

        def boot() -> TermErrors:
            return product_errors(
                *args[:4], V, basis, n_boot=self.n_boot, rng=rngs[4],
                image_fixed=sI.n_enumerated, text_fixed=sT.n_enumerated, **kw,
            )  # fmt: skip

        def crossfit() -> dict[str, float]:
            return crossfit_product(
                *args[:4], V, basis, rng=rngs[5], folds=self.folds,
                image_fixed=sI.n_enumerated, text_fixed=sT.n_enumerated, **kw,
            )  # fmt: skip

        def holdout() -> dict[str, float]:
            assert self.holdout
            # i.i.d. draws (not distinct ones), so that each grid cell is a draw from μ_p
            hI, hT = split_grid(self.holdout, n_i, n_t)
            ZI, ZT = draw_iid(n_i, hI, self.p, rngs[3]), draw_iid(n_t, hT, self.p, rngs[3])
            y = (torch.as_tensor(game.grid(ZI, ZT)).double() - v0).flatten().cpu()
            Z = np.concatenate([np.repeat(ZI, hT, 0), np.tile(ZT, (hI, 1))], 1)
            return {**fit_quality(y, sur.predict(torch.from_numpy(Z))), "holdout_values": float(y.numel())}

        return self._finish(sur, diag, boot, crossfit, holdout, budget, n_i, n_t, dev, t1)

    def _joint_banzhaf(self, budget: int, game: Game, rngs: list[np.random.Generator], n_i: int) -> Approximation:
        n = int(game.n_players)
        t0 = time.perf_counter()
        v0, vN = _empty_and_full(game)
        diag: dict[str, float] = {"v_empty": v0, "v_full": vN}
        s = sample_banzhaf(n, budget, self.p, rngs[2])
        return self._joint(s, game, v0, diag, rngs[4], rngs[5], budget, n_i, t0, self._banzhaf_holdout(game, rngs[3]))

    def _banzhaf_holdout(self, game: Game, rng: np.random.Generator) -> Any:
        def draw(size: int) -> np.ndarray:
            return draw_iid(int(game.n_players), size, self.p, rng)

        return draw

    def _joint_shapley(self, budget: int, game: Game, gens: list[np.random.Generator], n_i: int) -> Approximation:
        rng_fit, rng_hold, rng_folds = gens
        n = int(game.n_players)
        t0 = time.perf_counter()
        s = sample_shapley(n, budget, rng_fit, anchor_weight=self.anchor_weight)
        y = torch.as_tensor(game(s.coalitions)).double().cpu()
        v0, vN = float(y[0]), float(y[1])  # sample_shapley puts ∅ and N first
        diag: dict[str, float] = {"v_empty": v0, "v_full": vN}

        def draw(size: int) -> np.ndarray:
            return sample_shapley(n, size, rng_hold).coalitions

        return self._joint(s, game, v0, diag, rng_fit, rng_folds, budget, n_i, t0, draw, values=y)

    def _joint(
        self,
        s: CoalitionSample,
        game: Game,
        v0: float,
        diag: dict[str, float],
        rng_boot: np.random.Generator,
        rng_folds: np.random.Generator,
        budget: int,
        n_i: int,
        t0: float,
        draw: Any,
        values: Tensor | None = None,
    ) -> Approximation:
        n = int(game.n_players)
        raw = torch.as_tensor(game(s.coalitions)) if values is None else values
        dev = self._device(raw)
        y = raw.to(dev, torch.float64) - v0
        _sync(raw.device)
        t1 = time.perf_counter()
        kw: dict[str, Any] = {"device": dev, "chunk_bytes": self.chunk_bytes}
        basis = self._fit_pairs(lambda b: fit_surrogate(s.coalitions, y, s.weights, b, **kw), n_i, n - n_i)
        sur = fit_surrogate(s.coalitions, y, s.weights, basis, **kw)
        sur.n_image = n_i
        diag.update(n_values=float(s.m), game_seconds=t1 - t0, exact=float(s.n_enumerated >= s.m and _complete(s.m, n)))

        def boot() -> TermErrors:
            return joint_errors(
                s.coalitions, y, s.weights, basis, n_boot=self.n_boot, rng=rng_boot, n_fixed=s.n_enumerated, **kw
            )

        def crossfit() -> dict[str, float]:
            return crossfit_joint(
                s.coalitions, y, s.weights, basis, rng=rng_folds, folds=self.folds, n_fixed=s.n_enumerated, **kw
            )

        def holdout() -> dict[str, float]:
            assert self.holdout
            Z = draw(self.holdout)
            yh = torch.as_tensor(game(Z)).double().cpu() - v0
            return {**fit_quality(yh, sur.predict(torch.from_numpy(Z))), "holdout_values": float(yh.numel())}

        return self._finish(sur, diag, boot, crossfit, holdout, budget, n_i, n - n_i, dev, t1)


def _explicit(pairs: Any) -> bool:
    return not isinstance(pairs, (str, int, np.integer)) and pairs is not None


def _empty_and_full(game: Any) -> tuple[float, float]:
    """``(v(∅), v(N))`` through the game's own method when it has one (DualEncoderGame caches them)."""
    if hasattr(game, "empty_and_full"):
        v0, vN = game.empty_and_full()
        return float(v0), float(vN)
    Z = np.zeros((2, int(game.n_players)), dtype=bool)
    Z[1] = True
    v = torch.as_tensor(game(Z)).double().cpu()
    return float(v[0]), float(v[1])


__all__ = ["INDICES", "Approximation", "RegressionApproximator"]
