"""Does the bundled shapes CLIP's integrated-Jacobian map point at the object a phrase names?

On held-out shapes scenes (seeds disjoint from training), for every object phrase of every caption,
computes the conditional pointing-game energy (PGE: share of the phrase map's positive mass on the
patches of the object's exact box, `dualex.metrics.pointing`) for

* ``ij``: ``dualex.explain(..., method="ij")``, span-conditional (the phrase's token rows summed);
* ``gradxinput_caption``: first-order gradient × input of the caption's cosine at the same image layer
  (one map for every phrase of a caption);
* ``gradxinput_phrase``: the same with the phrase alone as caption (a span-conditional first-order map);
* ``uniform``: a flat map (chance level: the share of the grid the box covers).

    python benchmarks/shapes_grounding.py                    # 100 scenes, prints the table
    python benchmarks/shapes_grounding.py --n 200 --write    # and store it in the model's metrics.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="held-out scenes (default 100)")
    p.add_argument("--seed", type=int, default=1,
                   help="held-out data-set seed (default 1; retrieval metrics use 0)")
    p.add_argument("--layer", type=int, default=-1, help="split layer (default -1: input of the last block)")
    p.add_argument("--n-steps", type=int, default=10, help="ij integration steps (default 10)")
    p.add_argument("--objects", default="1,2,3,4", help="object counts to draw from (default 1,2,3,4)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--write", action="store_true", help="store the table under 'grounding' in the model's metrics.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    import dualex
    from dualex.datasets.shapes_generator import ShapesDataset
    from dualex.models.shapes import asset_dir
    from dualex.training.shapes_eval import format_grounding, grounding_table

    model = dualex.load("shapes", device=args.device)
    counts = [int(c) for c in args.objects.split(",")]
    scenes = list(ShapesDataset(args.n, seed=args.seed, split="heldout", n_objects=counts))
    t0 = time.time()
    table = grounding_table(model, scenes, layer=args.layer, n_steps=args.n_steps)
    table["seconds"] = time.time() - t0
    table["dataset"] = {"split": "heldout", "seed": args.seed, "n": args.n, "objects": counts}
    print(format_grounding(table))
    print(f"({table['seconds']:.0f} s)")
    if args.write:
        path = asset_dir() / "metrics.json"
        metrics = json.loads(path.read_text()) if path.exists() else {}
        metrics.setdefault("grounding", {})[f"layer{args.layer}"] = table
        path.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
