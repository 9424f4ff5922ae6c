"""Integrated-Jacobian interactions: dualex vs the published ``exclip`` 1.1 package.

Times one explanation (N steps, the last block of each tower, random-init open_clip ViTs) with both
implementations and prints time, peak memory and their ratios, plus the relative difference of the
two attribution matrices. Each (implementation, model) runs in a fresh subprocess so that peak
memory is measured in isolation.

    python benchmarks/ij_speed.py                          # ViT-B-32 on the default device
    python benchmarks/ij_speed.py --models ViT-B-16,ViT-L-14 --device cuda
    python benchmarks/ij_speed.py --skip-exclip            # dualex only (exclip is optional)

Goals (issue 2): on a GPU ≥ 20× faster and ≤ 1/10 of exclip's peak memory for ViT-B/16 and ViT-L/14 at
N = 10; on CPU ≥ 5× faster for ViT-B/32.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CAPTION = "a photo of a brown dog catching a red frisbee on the green grass of a park"


def worker(impl: str, arch: str, device: str, n_steps: int, repeat: int, out: Path | None) -> dict:
    import numpy as np
    import torch

    import dualex
    from dualex.cli.bench import measure
    from dualex.methods import explain_pair

    torch.manual_seed(0)
    model = dualex.load(f"openclip:{arch}@random", device=device)
    image = np.random.default_rng(0).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    pair = model.prepare(image, CAPTION)
    L = model.n_layers("image") - 1
    dev = torch.device(device)
    if impl == "dualex":
        result = {}

        def run() -> None:
            result["ex"] = explain_pair(model, pair, "ij", layer=-1, n_steps=n_steps)[0]

        m = measure(run, device=dev, repeat=repeat)
        A = result["ex"].cross
    else:
        from exclip import OpenClipExplainer

        for prm in model.module.parameters():  # exclip differentiates through the module's own graph
            prm.requires_grad_(True)
        explainer = OpenClipExplainer(model.module, device=dev, image_dim=pair.image.pixels.shape[-1])
        ids = torch.nn.functional.pad(pair.text.ids, (0, 77 - pair.text.ids.shape[1]))  # full context
        result = {}

        def run() -> None:
            result["A"] = explainer.explain(ids, pair.image.pixels, text_layer=L, image_layer=L, N=n_steps)

        m = measure(run, device=dev, repeat=repeat)
        A = result["A"].reshape(result["A"].shape[0], -1)
    if out is not None:
        torch.save(A.cpu(), out)
    return {"impl": impl, "arch": arch, "seconds": m.seconds, "peak_bytes": m.peak_bytes, "device": m.device}


def run_worker(impl: str, arch: str, args: argparse.Namespace, out: Path) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", impl, "--models", arch, "--device", args.device,
           "--n-steps", str(args.n_steps), "--repeat", str(args.repeat), "--matrix-out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "DUALEX_PROGRESS": "0"})
    if proc.returncode != 0:
        print(f"[{impl} {arch}] failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="ViT-B-32")
    p.add_argument("--device", default=None)
    p.add_argument("--n-steps", type=int, default=10)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--skip-exclip", action="store_true")
    p.add_argument("--worker", choices=["dualex", "exclip"], help=argparse.SUPPRESS)
    p.add_argument("--matrix-out", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json-out", type=Path, default=None, help="write the results table as JSON")
    args = p.parse_args()
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.worker:
        print(json.dumps(worker(args.worker, args.models, args.device, args.n_steps, args.repeat, args.matrix_out)))
        return
    try:
        import exclip  # noqa: F401

        have_exclip = not args.skip_exclip
    except ImportError:
        have_exclip = False
        print("exclip is not installed (pip install --no-deps exclip==1.1): timing dualex only", file=sys.stderr)
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.models.split(","):
            ours = run_worker("dualex", arch, args, Path(tmp) / f"d-{arch}.pt")
            theirs = run_worker("exclip", arch, args, Path(tmp) / f"e-{arch}.pt") if have_exclip else None
            row = {"model": arch, "device": args.device, "n_steps": args.n_steps, "dualex": ours, "exclip": theirs}
            if ours and theirs:
                a = torch.load(Path(tmp) / f"d-{arch}.pt")
                b = torch.load(Path(tmp) / f"e-{arch}.pt")
                n = min(a.shape[0], b.shape[0])
                row["speedup"] = theirs["seconds"] / ours["seconds"]
                row["memory_ratio"] = ours["peak_bytes"] / max(theirs["peak_bytes"], 1)
                row["relative_difference"] = float((a[:n] - b[:n]).abs().max() / b[:n].abs().max())
            rows.append(row)
    print(f"\nintegrated-Jacobian interactions, N={args.n_steps}, last block, device {args.device}")
    print(f"{'model':<10} {'dualex s':>9} {'dualex GiB':>10} {'exclip s':>9} {'exclip GiB':>10} "
          f"{'speed-up':>9} {'mem ratio':>9} {'rel diff':>9}")
    for r in rows:
        d, e = r["dualex"], r["exclip"]

        def f(x: dict | None, k: str, scale: float = 1.0) -> str:
            return f"{x[k] / scale:.3f}" if x else "-"

        print(f"{r['model']:<10} {f(d, 'seconds'):>9} {f(d, 'peak_bytes', 2**30):>10} {f(e, 'seconds'):>9} "
              f"{f(e, 'peak_bytes', 2**30):>10} "
              f"{(format(r['speedup'], '.1f') + 'x') if 'speedup' in r else '-':>9} "
              f"{format(r['memory_ratio'], '.3f') if 'memory_ratio' in r else '-':>9} "
              f"{format(r['relative_difference'], '.1e') if 'relative_difference' in r else '-':>9}")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
