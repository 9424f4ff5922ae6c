"""Write the README's figures (docs/figures/*.png) from a real explanation made by this checkout's code.

Explains the bundled shapes demo scene with the bundled shapes model (``dualex.load("shapes")``) and
``method="ij"``, then draws

* ``docs/figures/shapes_ij.png``        the paper-style panel: each object phrase's image map, and the
                                        caption coloured by each object's box;
* ``docs/figures/shapes_ij_matrix.png`` the token × patch matrix;
* ``docs/figures/shapes_ij_pairs.png``  the 12 strongest token × patch pairs as links (`Explanation.plot_pairs`);
* ``docs/figures/shapes_ij_notebook.png`` what ``ex`` shows in a notebook (`Explanation._repr_html_`: the
                                        default figure beside `Explanation.key_numbers`), drawn with
                                        matplotlib from the same figure and numbers.

If the bundled model (or its demo scene) is not in this checkout yet, the script says so and, unless
``--strict`` is given, draws the same figures from a tiny *random* CLIP on a generated shapes scene, so
the plotting code can still be checked. Those figures show an untrained model: do not publish them.

Usage::

    .venv/bin/python scripts/make_readme_figures.py [--out docs/figures] [--n-steps 20] [--strict]
        [--dpi 100] [--full-colour] [--save-explanation out/readme/shapes_ij.safetensors]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import dualex
from dualex.errors import DualexError
from dualex.plotting import plot_explanation, plot_matrix, save_figure


def bundled() -> tuple[Any, Any]:
    """The shapes model and its demo scene; raises if either is missing."""
    from dualex.datasets.shapes_generator import sample_scene

    model = dualex.load("shapes")
    return model, sample_scene()


def stand_in() -> tuple[Any, Any]:
    """A tiny random CLIP (224 px, 7×7 patches, word tokenizer) and a generated three-object scene."""
    from dualex.datasets.shapes_generator import generate_scene
    from dualex.testing import tiny_hf_clip, tiny_word_tokenizer

    model = tiny_hf_clip(image_size=224, patch_size=32)
    model.tokenizer = tiny_word_tokenizer(max_length=32)
    return model, generate_scene(7, n_objects=3)


def to_palette(path: Path, colours: int = 256) -> None:
    """Rewrite a PNG with a palette of ``colours`` (octree quantisation): the noisy shapes backgrounds make
    24-bit figures several megabytes."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    rgb.quantize(colours, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


def notebook_view(ex: Any) -> Any:
    """The notebook display of ``ex`` as one matplotlib figure: its default figure beside its key numbers."""
    import io

    import numpy as np
    from matplotlib.figure import Figure
    from PIL import Image

    buf = io.BytesIO()
    ex.plot(title=False).savefig(buf, format="png", dpi=100, bbox_inches="tight", pad_inches=0.05)  # as figure_html
    buf.seek(0)
    picture = np.asarray(Image.open(buf).convert("RGB"))
    rows = [(k, v if not isinstance(v, str) or len(v) <= 34 else v[:33] + "…") for k, v in ex.key_numbers()]
    fig = Figure(figsize=(10.5, 4.2))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 0.5, 1.0))
    ax.imshow(picture)
    ax.set_axis_off()
    tab = fig.add_axes((0.52, 0.02, 0.47, 0.96))
    tab.set_axis_off()
    cells = [[k, f"{v:.4g}" if isinstance(v, float) else str(v)] for k, v in rows]
    table = tab.table(cellText=cells, loc="upper left", cellLoc="left", colWidths=[0.55, 0.45])
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (_r, c), cell in table.get_celld().items():
        cell.set_edgecolor("#dddddd")
        if c == 0:
            cell.get_text().set_fontweight("bold")
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/figures"), help="output folder (default: docs/figures)")
    p.add_argument("--method", default="ij", help="explanation method (default: ij)")
    p.add_argument("--n-steps", type=int, default=None, help="integration steps of ij (default: the method's)")
    p.add_argument("--strict", action="store_true", help="fail instead of falling back to a tiny random model")
    p.add_argument("--dpi", type=int, default=100, help="resolution of the PNGs (default: 100)")
    p.add_argument("--full-colour", action="store_true",
                   help="keep 24-bit PNGs (default: a 256-colour palette, ~5x smaller for the README)")
    p.add_argument("--save-explanation", type=Path, default=None, help="also save the explanation (.safetensors)")
    args = p.parse_args(argv)

    try:
        model, scene = bundled()
        source = "bundled shapes model"
    except (DualexError, OSError, ValueError) as exc:
        msg = f"make_readme_figures: the bundled shapes model is not available yet ({exc})."
        if args.strict:
            print(msg, file=sys.stderr)
            return 2
        print(msg + "\nmake_readme_figures: drawing from a tiny RANDOM model instead; these figures are "
              "placeholders, regenerate them once `dualex.load('shapes')` works.", file=sys.stderr)
        model, scene = stand_in()
        source = "tiny random stand-in"

    options = {"n_steps": args.n_steps} if args.n_steps else {}
    ex = dualex.explain(model, scene.image, scene.caption, method=args.method, **options)
    if args.save_explanation:
        print(f"explanation saved to {ex.save(args.save_explanation)}", file=sys.stderr)

    spans = scene.phrases
    boxes = scene.boxes
    panel = plot_explanation(ex, spans=spans, boxes=boxes, ncols=max(len(spans), 1))
    out = args.out
    written = [
        save_figure(panel, out / f"shapes_{args.method}.png", dpi=args.dpi),
        save_figure(plot_matrix(ex, "cross"), out / f"shapes_{args.method}_matrix.png", dpi=args.dpi),
        save_figure(ex.plot_pairs(k=12), out / f"shapes_{args.method}_pairs.png", dpi=args.dpi),
        save_figure(notebook_view(ex), out / f"shapes_{args.method}_notebook.png", dpi=args.dpi),
    ]
    if not args.full_colour:
        for w in written:
            to_palette(w)
    c = ex.completeness()
    print(f"{source}: caption {scene.caption!r}; score {ex.score:.4f}; attributed {c['attributed']:.4f}"
          + (f", target {c['target']:.4f}" if "target" in c else ""), file=sys.stderr)
    for w in written:
        print(f"wrote {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
