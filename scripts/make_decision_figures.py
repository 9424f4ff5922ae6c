"""Write the decision figures of the README and docs/decisions.md from this checkout's code.

On the bundled shapes model and its demo scene (a large purple star, a small green circle, a small
orange square), with ``method="ij"``:

* ``docs/figures/shapes_contrast.png``   why "there is a large purple star" rather than "there is a small
                                         blue triangle" (`dualex.contrast`);
* ``docs/figures/shapes_zero_shot.png``  the zero-shot classifier over the four shape classes with one
                                         template, predicted class vs runner-up (`dualex.zero_shot`);

and prints the numbers docs/decisions.md quotes (similarities, decompositions, class scores).

Usage::

    .venv/bin/python scripts/make_decision_figures.py [--out docs/figures] [--dpi 100]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_readme_figures import to_palette

import dualex
from dualex.datasets.shapes_generator import sample_scene
from dualex.plotting import save_figure

A = "there is a large purple star"
B = "there is a small blue triangle"
CLASSES = ["star", "circle", "square", "triangle"]
TEMPLATES = ["there is a {}"]
ENSEMBLE = ["there is a {}", "there is a large {}", "there is a small {}"]


def report(con: dualex.Contrast) -> str:
    sa, sb = con.similarities
    d = con.decomposition()
    return f"s(A) {sa:.4f}  s(B) {sb:.4f}  difference {con.difference:+.4f}\n  " + "\n  ".join(
        f"{k:<24} {v:+.4f}" for k, v in d.items()
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/figures"), help="output folder (default: docs/figures)")
    p.add_argument("--dpi", type=int, default=100, help="resolution of the PNGs (default: 100)")
    args = p.parse_args(argv)
    model = dualex.load("shapes")
    scene = sample_scene()
    con = dualex.contrast(model, scene.image, A, B)
    print(f"contrast {A!r} vs {B!r}:\n  {report(con)}")
    written = [save_figure(con.plot(), args.out / "shapes_contrast.png", dpi=args.dpi)]
    for templates, name in ((TEMPLATES, "shapes_zero_shot.png"), (ENSEMBLE, None)):
        d = dualex.zero_shot(model, scene.image, CLASSES, templates)
        print(f"zero-shot, templates {templates}: predicted {d.predicted!r}, versus {d.versus!r}")
        for i in d.ranking:
            print(f"  {d.classes[i]:<9} score {float(d.scores[i]):+.3f}  weight {float(d.weights[i]):.4f}")
        print(f"  {report(d.contrast)}")
        if name:
            written.append(save_figure(d.plot(), args.out / name, dpi=args.dpi))
    for w in written:
        to_palette(w)
        print(f"wrote {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
