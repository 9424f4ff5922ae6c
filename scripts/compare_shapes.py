"""Reproduce the comparisons of docs/analysis.md on the bundled shapes model (CPU, a few minutes).

1. Held-out scenes are captioned in two styles: in-domain ``"a picture of …"`` and out-of-domain
   ``"… on a grey background"`` (the same scenes, the same objects and spans; only the wording differs).
2. The bundled model is fine-tuned (`dualex.training.finetune`) on training scenes captioned in the
   in-domain style only.
3. Both models are evaluated with ``ij`` on both scene sets (`dualex evaluate`), and compared
   (`dualex compare`): base vs fine-tuned on the in-domain and on the out-of-domain scenes (exCLIP's
   domain analysis), and the two models on the standard mixed-style held-out set (a FIxLIP-style model
   table, with insertion/deletion and faithfulness besides the pointing game).

Usage: ``python scripts/compare_shapes.py OUT_DIR [--scenes 80] [--train 1500] [--epochs 2]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dualex.datasets.shapes_generator import ShapeScene

STYLES = {"in_domain": 2, "out_of_domain": 3}  # indices into dualex.datasets.shapes_generator._LISTS


def restyle(scene: ShapeScene, template: int) -> ShapeScene:
    """The same scene, captioned with list template ``template`` (no spatial relation)."""
    from dualex.datasets.shapes_generator import CaptionPlan, compose_caption

    plan = CaptionPlan(scene.plan.order, template, None)
    caption, spans = compose_caption([o.description for o in scene.objects], plan)
    return dataclasses.replace(scene, caption=caption, spans=spans, plan=plan)


def write_scenes(root: Path, n: int, template: int) -> Path:
    from dualex.datasets.shapes_generator import ShapesDataset

    root.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(ShapesDataset(n, seed=1, split="heldout")):
        restyle(scene, template).save(root, f"scene{i:04d}")
    return root


def sh(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "dualex", *args], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--scenes", type=int, default=80)
    ap.add_argument("--train", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-5)
    a = ap.parse_args()
    out: Path = a.out
    t0 = time.perf_counter()
    data = {k: write_scenes(out / "scenes" / k, a.scenes, t) for k, t in STYLES.items()}
    tuned = out / "tuned"
    if not (tuned / "dualex_finetune.json").exists():
        import dualex
        from dualex.datasets.shapes_generator import ShapesDataset
        from dualex.training.finetune import finetune

        pairs = [
            (s.image, restyle(s, STYLES["in_domain"]).caption, f"train{i}")
            for i, s in enumerate(ShapesDataset(a.train, seed=5, split="train"))
        ]
        res = finetune(dualex.load("shapes"), pairs, tuned, epochs=a.epochs, lr=a.lr, batch_size=64, seed=0)
        print(f"fine-tuned: loss {res.loss_before:.3f} -> {res.loss_after:.3f}, "
              f"top-1 {res.recall_before:.1%} -> {res.recall_after:.1%}", flush=True)  # fmt: skip
    models = {"base": "shapes", "tuned": f"hf:{tuned}"}
    for mname, spec in models.items():
        for dname, path in data.items():
            sh("evaluate", "--model", spec, "--dataset", f"shapes:{path}", "--methods", "ij",
               "--metrics", "pointing", "--out", str(out / "runs" / f"{mname}_{dname}"))  # fmt: skip
        sh("evaluate", "--model", spec, "--dataset", "shapes:", "-D", f"n={a.scenes // 2}", "--methods", "ij",
           "--metrics", "pointing,insertion_deletion,faithfulness", "--faith-coalitions", "200",
           "--out", str(out / "runs" / f"{mname}_mixed"))  # fmt: skip
    for dname in [*data, "mixed"]:
        sh("compare", str(out / "runs" / f"base_{dname}"), str(out / "runs" / f"tuned_{dname}"),
           "--labels", "base,tuned", "--out", str(out / "compare" / dname))  # fmt: skip
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
