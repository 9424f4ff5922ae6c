"""Do the product and the independent design of p-faithfulness give the same estimates?

For held-out shapes scenes and the bundled model, each method explains each scene once; the same
explanation is then scored with ``design="independent"`` (the paper's distinct joint coalitions) and
``design="product"`` (a 100 × 100 image × text grid of i.i.d. draws from μ_p) at p = 0.5 and the
per-item seed `dualex.metrics.item_seed`, through one cached game per scene (what
``dualex evaluate`` does). Reported per method: the mean Spearman ρ and R² under each design
with percentile bootstrap 95 % intervals over scenes (2000 resamples), the mean paired difference
(product − independent) with its interval, and the tower passes and seconds each design cost.

    OMP_NUM_THREADS=1 python benchmarks/faithfulness_designs.py --scenes 50
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def bootstrap(x: np.ndarray, rng: np.random.Generator, n: int = 2000) -> tuple[float, float, float]:
    """Mean and percentile 95 % interval of the mean over resampled scenes (NaNs dropped)."""
    x = x[np.isfinite(x)]
    idx = rng.integers(0, x.size, (n, x.size))
    means = x[idx].mean(1)
    return float(x.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=50)
    ap.add_argument("--methods", default="ij,fixlip,gradxinput,random")
    ap.add_argument("--coalitions", type=int, default=1000, help="independent design: held-out coalitions")
    ap.add_argument("--grid", type=int, default=100, help="product design: coalitions per side (grid of grid²)")
    ap.add_argument("--p", type=float, default=0.5)
    ap.add_argument("--json", default=None, help="also write the per-scene values here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    import dualex
    from dualex.datasets.base import open_dataset
    from dualex.games.game import DualEncoderGame
    from dualex.methods import explain_pair
    from dualex.metrics import item_seed, p_faithfulness

    model = dualex.load("shapes", device="cpu")
    methods = args.methods.split(",")
    designs = ("independent", "product")
    vals: dict[str, dict[str, list[float]]] = {f"{m}|{d}|{k}": [] for m in methods for d in designs
                                               for k in ("spearman", "r2")}  # fmt: skip
    cost = {d: {"passes": 0, "seconds": 0.0} for d in designs}
    t_start = time.perf_counter()
    for i, item in enumerate(open_dataset("shapes:", n=args.scenes, split="heldout").items()):
        pair = model.prepare(item.load_image(), item.caption)
        game = DualEncoderGame(model, pair)
        exs = {m: explain_pair(model, pair, m)[0] for m in methods}
        for d in designs:
            before, t0 = game.n_passes, time.perf_counter()
            for m in methods:
                n = args.coalitions if d == "independent" else args.grid**2
                f = p_faithfulness(model, pair, exs[m], p=args.p, n_coalitions=n, seed=item_seed(item.id), design=d,
                                   game=game)  # fmt: skip
                vals[f"{m}|{d}|spearman"].append(f.spearman)
                vals[f"{m}|{d}|r2"].append(f.r2)
            cost[d]["passes"] += game.n_passes - before
            cost[d]["seconds"] += time.perf_counter() - t0
        print(f"scene {i + 1}/{args.scenes} ({time.perf_counter() - t_start:.0f} s)", flush=True)
    rng = np.random.default_rng(0)
    print(f"\n{args.scenes} held-out shapes scenes, p = {args.p}; independent: {args.coalitions} coalitions, product: "
          f"{args.grid} × {args.grid} grid; mean [95 % bootstrap interval]\n")  # fmt: skip
    print("| method | metric | independent | product | product − independent |")
    print("|---|---|---|---|---|")
    for m in methods:
        for k, name in (("spearman", "Spearman ρ"), ("r2", "R²")):
            a = np.asarray(vals[f"{m}|independent|{k}"], dtype=float)
            b = np.asarray(vals[f"{m}|product|{k}"], dtype=float)
            cells = [bootstrap(a, rng), bootstrap(b, rng), bootstrap(b - a, rng)]
            print(f"| {m} | {name} | " + " | ".join(f"{c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}]" for c in cells) + " |")
    for d in designs:
        print(f"\n{d}: {cost[d]['passes'] / args.scenes:.0f} tower passes and {cost[d]['seconds'] / args.scenes:.2f} s "
              f"per scene for {len(methods)} methods", end="")  # fmt: skip
    print()
    if args.json:
        Path(args.json).write_text(json.dumps({"values": vals, "cost": cost}, indent=1))


if __name__ == "__main__":
    main()
