"""Shared passes: one image against K captions in one call vs K single-pair calls, side by side.

One run, one process, one torch thread (default), on the bundled ``shapes`` model and its demo scene: per
method, the time of K single calls ``dualex.explain(model, image, caption_k)`` and of one call
``dualex.explain(model, image, [caption_1, ..., caption_K])`` (the image's side computed once:
`dualex.methods.shared`), interleaved repeat by repeat so that a shared machine's other jobs disturb
both alike, as min and median of wall-clock and of process CPU seconds, with their ratios, the executed
FLOPs of each (``torch.utils.flop_counter``: matmuls) and the largest difference between the two
results (they must agree to 1e-5). The load average is printed before and after.

    python benchmarks/shared_passes.py                       # ij, fixlip, ig; K = 8
    python benchmarks/shared_passes.py --methods ij --k 16 --repeat 7

Goal (issue 20): one image × 8 captions with ij costs at most half of 8 single calls (ratio ≤ 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from importlib import resources
from typing import Any

CAPTIONS = [
    "there is a large purple star",
    "a small blue triangle",
    "a small green circle and a small orange square",
    "there is a large purple star, a small green circle and a small orange square",
    "a large red square",
    "a small yellow star left of a large blue circle",
    "two triangles",
    "there is a small orange square",
    "a large purple star below a small green circle",
    "a small grey circle",
    "a large green triangle and a small purple square",
    "there is a small blue star",
    "a large orange circle",
    "a small red triangle right of a large yellow square",
    "three shapes",
    "there is a large grey star",
]
OPTIONS: dict[str, dict[str, Any]] = {
    "ij": {"n_steps": 10},
    "fixlip": {"budget": 512, "n_boot": 0, "holdout": 0},
    "ig": {"n_steps": 16},
    "gradxinput": {},
}
FIELDS = ("cross", "cross_prefix", "text_pairs", "image_pairs", "text_main", "image_main")


def max_difference(a: list[Any], b: list[Any]) -> float:
    out = 0.0
    for x, y in zip(a, b, strict=True):
        for name in FIELDS:
            u, v = getattr(x, name), getattr(y, name)
            if u is not None and v is not None:
                out = max(out, float((u - v).abs().max()))
    return out


def flops(fn: Any) -> float:
    """Executed FLOPs of ``fn`` (NaN where the counter cannot follow it: ``autograd.grad`` of gradient methods)."""
    from torch.utils.flop_counter import FlopCounterMode

    fc = FlopCounterMode(display=False)
    try:
        with fc:
            fn()
    except RuntimeError:
        return float("nan")
    return float(fc.get_total_flops())


def run_method(model: Any, image: str, captions: list[str], method: str, repeat: int) -> dict[str, Any]:
    import dualex

    opts = OPTIONS[method]
    results: dict[str, Any] = {}

    def singles() -> None:
        results["singles"] = [dualex.explain(model, image, c, method=method, **opts) for c in captions]

    def shared() -> None:
        results["shared"] = dualex.explain(model, image, captions, method=method, **opts)

    timings: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in ("singles", "shared")}
    singles()  # warm-up of both paths
    shared()
    for _ in range(repeat):
        for name, fn in (("singles", singles), ("shared", shared)):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            timings[name]["wall"].append(time.perf_counter() - w0)
            timings[name]["cpu"].append(time.process_time() - c0)
    out: dict[str, Any] = {"method": method, "k": len(captions), "options": opts}
    for name, t in timings.items():
        stats = (("min", min), ("median", statistics.median))
        out[name] = {f"{k}_{stat}": f(v) for k, v in t.items() for stat, f in stats}
    for stat in ("wall_min", "wall_median", "cpu_min", "cpu_median"):
        out[f"ratio_{stat}"] = out["shared"][stat] / out["singles"][stat]
    out["flops_singles"] = flops(singles)
    out["flops_shared"] = flops(shared)
    out["flops_ratio"] = out["flops_shared"] / out["flops_singles"] if out["flops_singles"] else float("nan")
    out["max_difference"] = max_difference(results["shared"], results["singles"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="ij,fixlip,ig", help="comma-separated methods (ij, fixlip, ig, gradxinput)")
    ap.add_argument("--k", type=int, default=8, help=f"captions per image (at most {len(CAPTIONS)})")
    ap.add_argument("--repeat", type=int, default=5, help="measured repeats of each side")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--json", action="store_true", help="print one JSON object per method")
    args = ap.parse_args()
    os.environ.setdefault("DUALEX_PROGRESS", "0")
    from dualex.threads import configure_threads

    threads = configure_threads(args.threads)
    import dualex

    model = dualex.load("shapes")
    image = str(resources.files("dualex") / "assets" / "shapes" / "sample" / "scene.png")
    captions = CAPTIONS[: args.k]
    print(f"shapes model, demo scene, {len(captions)} captions, {threads} thread(s), {args.repeat} repeats")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    head = (f"{'method':<11}{'K singles s':>15}{'shared s':>15}{'ratio':>7}{'cpu ratio':>10}{'FLOP ratio':>11}"
            f"{'max diff':>10}")
    if not args.json:
        print("min (median) wall seconds; ratio = shared / K singles")
        print(head)
    for method in args.methods.split(","):
        r = run_method(model, image, captions, method.strip(), args.repeat)
        if args.json:
            print(json.dumps(r))
            continue
        s, h = r["singles"], r["shared"]
        print(
            f"{method:<11}{s['wall_min']:>7.3f} ({s['wall_median']:.3f}){h['wall_min']:>7.3f} ({h['wall_median']:.3f})"
            f"{r['ratio_wall_min']:>7.2f}{r['ratio_cpu_min']:>10.2f}{r['flops_ratio']:>11.2f}{r['max_difference']:>10.1e}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
