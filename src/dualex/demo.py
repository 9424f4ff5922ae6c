"""``make demo``: explain the bundled sample scene with the bundled shapes CLIP, offline.

Runs ``dualex explain`` (the CLI, same code path as on the command line) on the sample scene of
`dualex.datasets.shapes_generator` with ``--model shapes --method ij``, one ``--span`` per object phrase of the caption
and one ``--box`` per object, writes the figure (image map per phrase, caption map per box) and the
explanation file, then prints the conditional pointing-game energy of each phrase: the share of the
phrase map's positive mass on the patches of the named object's box (`dualex.metrics.pointing`).

Usage: ``python -m dualex.demo --out out/demo``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo (``python -m dualex.demo``); returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m dualex.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output directory (default: out/demo)")
    p.add_argument("--method", default="ij", help="explanation method (default: ij)")
    p.add_argument("--device", default="cpu", help="cpu, cuda ... (default: cpu)")
    args = p.parse_args(argv)

    from dualex.cli import main as dualex_main
    from dualex.datasets.shapes_generator import sample_image_path, sample_scene
    from dualex.explanation import Explanation
    from dualex.metrics.pointing import pointing_game

    scene = sample_scene()
    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / f"shapes_{args.method}.png"
    saved = args.out / f"shapes_{args.method}.safetensors"
    command = [
        "explain", str(sample_image_path()), scene.caption,
        "--model", "shapes", "--method", args.method, "--device", args.device,
        "--out", str(figure), "--save", str(saved),
    ]
    for phrase, box in zip(scene.phrases, scene.boxes, strict=True):
        command += ["--span", phrase, "--box", ",".join(str(v) for v in box)]
    print("$ dualex " + " ".join(f'"{c}"' if " " in c else c for c in command))
    rc = dualex_main(command)
    if rc != 0:
        return rc
    ex = Explanation.load(saved)
    print("\nconditional pointing game (share of each phrase map's positive mass on its object's box patches):")
    for span in scene.spans:
        r = pointing_game(ex, {"start": span.start, "end": span.end}, scene.span_box(span))
        name = scene.caption[span.start : span.end]
        print(f"  {name:<22} box {scene.span_box(span)}  energy {r.energy_t2i:.3f}  "
              f"peak on object: {'yes' if r.hit_t2i else 'no'}")
    print(f"\nfigure: {figure.resolve()}")
    print(f"explanation: {saved.resolve()} (open it with `dualex serve` or dualex.Explanation.load)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
