"""Integrated-Jacobian interactions: speed, FLOPs and exactness against the published ``exclip`` 1.1.

One run prints, per model, the time of one explanation (N = 10 steps, the last block of each tower:
exCLIP's layer 11 on 12-block towers) as min and median over repeats of wall-clock and of process CPU
seconds (on a shared machine the CPU seconds of a one-thread run are much less disturbed by other
jobs than wall-clock time, so their ratios are the fairer comparison), measured side by side:

* ``dualex``: the default path (pooled last block, structured forward mode);
* ``today``: the dense path this replaces (every row of the last block, one JVP per position through
  it: ``model.dense_tails()`` and ``mode="dense"``), where it is affordable;
* ``exclip``: the reference implementation (one backward pass per embedding dimension), open_clip
  models only;

with the ratios, executed FLOPs (``torch.utils.flop_counter.FlopCounterMode``: matmuls and
convolutions) against an analytic count of what the structured algorithm needs, the FLOPs of one
forward pass of both towers (the cost ij is measured against), the peak memory, the machine's load
average before and after, and the maximum relative difference of the attribution matrices
(dualex vs exclip, dualex vs today).

    python benchmarks/ij_speed.py                                   # shapes, ViT-B-32, ViT-B-16 on CPU
    python benchmarks/ij_speed.py --models ViT-B-16,ViT-L-14 --device cuda
    python benchmarks/ij_speed.py --skip-exclip --skip-today        # dualex only
    python benchmarks/ij_speed.py --models ViT-B-16 --device cuda --dtype bf16 --skip-today

Units: the time of one ij explanation divided by one plain forward pass of both towers of the same
model (``tower.encode``, pooled tails), the two interleaved in one process (min and median over the
repeats, wall and CPU); "first call" is the first ij explanation of the process (after one forward
pass), which pays lazy imports and the reference's hidden states (`dualex.methods.reference_cache`);
later calls reuse those. Goals (issue 23): ≤ 3 units for ViT-B/32, B/16 and L/14 at N = 10, the first
call ≤ 1.5× a warm one.

open_clip models get random weights (``open_clip.create_model(arch)``, seeded): speed and exactness do
not depend on the weights. Each (implementation, model) runs in its own process with ``--threads``
torch threads (default 1, and ``OMP_NUM_THREADS`` set to match), so that peak memory is measured in
isolation and a shared machine's other jobs disturb both sides alike.

Goals (issue 11, CPU): ViT-B-32 ≥ 100× faster than exclip with a relative difference ≤ 1e-5,
ViT-B-16 ≤ 5 s per pair, the bundled model ≤ 0.05 s per pair. GPU goals (issue 2): ≥ 20× exclip and
≤ 1/10 of its peak memory for ViT-B/16 and ViT-L/14.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CAPTION = "a photo of a brown dog catching a red frisbee on the green grass of a park"
TODAY_LIMIT_S = 120.0  # skip the dense path for a model once one run of it exceeds this


# ---------------------------------------------------------------------------------------------- models
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def build(name: str, device: str, dtype: str = "fp32") -> Any:
    """``shapes`` (the bundled model) or an open_clip architecture with seeded random weights, in ``dtype``.

    bf16/fp16 models keep their weights in that dtype (the forward pass, the unit, runs in it); ij
    differentiates a float32 copy (its ``fp32=True`` default), made inside every timed call.
    """
    import torch

    import dualex

    if name == "shapes":
        model = dualex.load("shapes", device=device)
    else:
        import open_clip

        torch.manual_seed(0)
        module = open_clip.create_model(name, pretrained=None)
        model = dualex.wrap(module, name=f"openclip:{name} (random weights)").to(device)
    if dtype != "fp32":
        model.module.to(getattr(torch, DTYPES[dtype]))
    return model


def prepared_pair(model: Any, name: str) -> Any:
    """The bundled demo scene and its caption for ``shapes``; a random 256×320 image and `CAPTION` otherwise."""
    import numpy as np

    if name == "shapes":
        from importlib import resources

        sample = resources.files("dualex") / "assets" / "shapes" / "sample"
        caption = json.loads((sample / "scene.json").read_text())["caption"]
        return model.prepare(str(sample / "scene.png"), caption)
    image = np.random.default_rng(0).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    return model.prepare(image, CAPTION)


def _blocks(model: Any, side: str) -> Any:
    m = model.module
    if model.family == "openclip":
        return model.text_tower.transformer.resblocks if side == "text" else m.visual.transformer.resblocks
    return (m.text_model if side == "text" else m.vision_model).encoder.layers


def _mlp_width(block: Any) -> int:
    import torch

    for mod in block.mlp.modules():
        if isinstance(mod, torch.nn.Linear):
            return int(mod.out_features)
    raise ValueError("no Linear layer in the block's MLP")


def flop_counts(model: Any, pair: Any, n_steps: int) -> dict[str, float]:
    """Executed FLOPs of one explanation, one forward pass of both towers, and the analytic minimum.

    Analytic, what the structured algorithm needs (2 FLOPs per multiply-add, T positions, width W, MLP
    width M, embedding D, per tower): the input's hidden states at the split (counted), then per
    quadrature node the last block's key/value maps over all T rows with their tangent (2 · T · 4W²),
    the pooled query with its tangent, and per position the pooled row's remainder's tangent
    (out-projection, MLP, projection: T · (2W² + 4WM + 2WD)), plus two pooled tails for the path's ends.
    A warm call takes the reference's states from `dualex.methods.reference_cache`; the cold figures
    (cache cleared) add the reference's hidden states and tail.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dualex.methods import explain_pair

    def count(fn: Any) -> float:
        fc = FlopCounterMode(display=False)
        with fc, torch.no_grad():
            fn()
        return float(fc.get_total_flops())

    from dualex.methods import reference_cache

    def explained() -> None:
        explain_pair(model, pair, "ij", n_steps=n_steps)

    reference_cache.clear()
    cold = count(explained)  # the reference's hidden states computed (a first call)
    warm = count(explained)  # served from `dualex.methods.reference_cache`
    with model.dense_tails():
        forward = sum(count(lambda s=s: model.tower(s).encode(pair.side(s))) for s in ("text", "image"))
    analytic = analytic_cold = 0.0
    for side in ("text", "image"):
        inputs = pair.side(side)
        L = model.tower(side).n_layers - 1
        x = model.tower(side).hidden(inputs, L)
        T, W = x.shape[1], x.shape[2]
        M = _mlp_width(_blocks(model, side)[-1])
        D = model.tower(side).encode(inputs).shape[-1]
        ref = model.tower(side).reference(inputs, "default" if side == "text" else "zeros")
        tw = model.tower(side)
        hidden_x = count(lambda t=tw, i=inputs, lay=L: t.hidden(i, lay))
        hidden_r = count(lambda t=tw, r=ref, lay=L: t.hidden(r, lay))
        row = 2 * W * W + 4 * W * M + 2 * W * D  # pooled row after attention
        kvq = 2 * T * 4 * W * W + 2 * 2 * W * W  # keys/values of all rows + pooled query, with tangents
        tails = 2 * (T * 4 * W * W + 2 * W * W + row)  # e(x) and the path's α = 0 end (e(r) is cached)
        work = tails + n_steps * (kvq + T * row)
        analytic += hidden_x + work
        analytic_cold += hidden_x + hidden_r + work + (T * 4 * W * W + 2 * W * W + row)
    return {"executed": warm, "analytic": analytic, "executed_cold": cold, "analytic_cold": analytic_cold,
            "forward": forward}  # fmt: skip


# ---------------------------------------------------------------------------------------------- workers
def cpu_timed(fn: Any, into: list[float]) -> Any:
    """``fn`` that appends the process CPU time (all threads) of each call to ``into``."""
    import time

    def timed() -> None:
        t0 = time.process_time()
        fn()
        into.append(time.process_time() - t0)

    return timed


def timed(fn: Any, device: Any) -> tuple[float, float]:
    """``(wall, process CPU)`` seconds of one call of ``fn`` (CUDA synchronised before and after)."""
    import time

    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, time.process_time() - c0


def units_of(
    fwd: list[tuple[float, float]],
    warm: list[tuple[float, float]],
    cold: tuple[float, float],
    cold_fwd: tuple[float, float],
) -> dict[str, float]:
    """ij in forward-pass units (min and median over the interleaved repeats; wall and CPU) and cold / warm."""
    import statistics

    out: dict[str, float] = {}
    for k, unit in ((0, "wall"), (1, "cpu")):
        f, w = [t[k] for t in fwd], [t[k] for t in warm]
        out[f"forward_{unit}_min"], out[f"forward_{unit}_median"] = min(f), statistics.median(f)
        out[f"ij_{unit}_min"], out[f"ij_{unit}_median"] = min(w) / min(f), statistics.median(w) / statistics.median(f)
        out[f"cold_{unit}"] = cold[k] / statistics.median(f)
        out[f"cold_over_warm_{unit}"] = cold[k] / statistics.median(w)
        out[f"cold_forward_{unit}"] = cold_fwd[k] / statistics.median(f)
    return out


def worker(impl: str, name: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from dualex.cli.bench import measure
    from dualex.methods import explain_pair, get_method
    from dualex.threads import configure_threads

    threads = configure_threads(args.threads)
    dev = torch.device(args.device)
    model = build(name, args.device, args.dtype)
    pair = prepared_pair(model, name)
    load_before = os.getloadavg()[0]
    result: dict[str, Any] = {}
    cpu: list[float] = []
    out: dict[str, Any] = {"impl": impl, "model": name, "threads": threads, "dtype": args.dtype}
    if impl in ("dualex", "today"):
        mode = "auto" if impl == "dualex" else "dense"

        def run() -> None:
            if impl == "today":
                with model.dense_tails():
                    result["ex"] = explain_pair(model, pair, "ij", n_steps=args.n_steps, mode=mode)[0]
            else:
                result["ex"] = explain_pair(model, pair, "ij", n_steps=args.n_steps, mode=mode)[0]

        def forward() -> None:
            with torch.no_grad():
                for side in ("text", "image"):
                    model.tower(side).encode(pair.side(side))

        if impl == "dualex":
            get_method("ij")  # the method registry's imports, as `dualex explain` does them checking options
            # the unit: one plain forward pass of both towers, timed in this process alongside ij; the first
            # ij call (cold: lazy imports, first-use set-up, the reference's states) before the warm repeats
            cold_fwd = timed(forward, dev)
            cold = timed(run, dev)
            fwd, warm = [], []
            for _ in range(args.repeat):
                fwd.append(timed(forward, dev))
                warm.append(timed(run, dev))
            out["units"] = units_of(fwd, warm, cold, cold_fwd)
        repeat, warmup = (args.repeat, 0) if impl == "dualex" else (args.today_repeat, 0)
        m = measure(cpu_timed(run, cpu), device=dev, repeat=repeat, warmup=warmup)
        A = result["ex"].cross  # (S, patches)
        if impl == "dualex" and not args.skip_flops:
            out["flops"] = flop_counts(model, pair, args.n_steps)
    else:
        from exclip import OpenClipExplainer

        for prm in model.module.parameters():  # exclip differentiates through the module's own graph
            prm.requires_grad_(True)
        L = model.tower("image").n_layers - 1
        explainer = OpenClipExplainer(model.module, device=dev, image_dim=pair.image.pixels.shape[-1])
        ctx = model.module.positional_embedding.shape[0]
        ids = torch.nn.functional.pad(pair.text.ids, (0, ctx - pair.text.ids.shape[1]))  # exclip: full context

        def run() -> None:
            result["A"] = explainer.explain(ids, pair.image.pixels, text_layer=L, image_layer=L, N=args.n_steps)

        m = measure(cpu_timed(run, cpu), device=dev, repeat=args.exclip_repeat, warmup=0)
        A = result["A"].reshape(result["A"].shape[0], -1)  # (S', patches): exclip cuts the rows after EOS
    if args.matrix_out is not None:
        torch.save(A.detach().cpu(), args.matrix_out)
    out.update(
        seconds=m.seconds_all,
        cpu_seconds=cpu[len(cpu) - len(m.seconds_all) :],  # the timed runs (after any warm-up)
        peak_bytes=m.peak_bytes,
        device=m.device,
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )
    return out


def run_worker(impl: str, name: str, args: argparse.Namespace, matrix: Path) -> dict[str, Any] | None:
    cmd = [
        sys.executable, __file__, "--worker", impl, "--models", name, "--device", args.device, "--dtype", args.dtype,
        "--n-steps", str(args.n_steps), "--repeat", str(args.repeat), "--today-repeat", str(args.today_repeat),
        "--exclip-repeat", str(args.exclip_repeat), "--threads", str(args.threads), "--matrix-out", str(matrix),
    ] + (["--skip-flops"] if args.skip_flops else [])  # fmt: skip
    n = str(args.threads)
    env = {**os.environ, "DUALEX_PROGRESS": "0", "OMP_NUM_THREADS": n, "DUALEX_THREADS": n}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"[{impl} {name}] failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- report
def _rel(a: Any, b: Any) -> float:
    n = min(a.shape[0], b.shape[0])
    return float((a[:n] - b[:n]).abs().max() / b[:n].abs().max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="shapes,ViT-B-32,ViT-B-16")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda where available)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                   help="weights and forward pass in this dtype (ij differentiates a float32 copy)")  # fmt: skip
    p.add_argument("--n-steps", type=int, default=10)
    p.add_argument("--repeat", type=int, default=10, help="timed runs of dualex (after one warm-up run)")
    p.add_argument("--today-repeat", type=int, default=2, help="timed runs of the dense path (no warm-up)")
    p.add_argument("--exclip-repeat", type=int, default=1, help="timed runs of exclip (no warm-up)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every run (OMP_NUM_THREADS too)")
    p.add_argument("--skip-exclip", action="store_true")
    p.add_argument("--skip-today", action="store_true")
    p.add_argument("--skip-flops", action="store_true")
    p.add_argument("--today-models", default="shapes,ViT-B-32", help="models to time the dense path on")
    p.add_argument("--exclip-models", default="ViT-B-32", help="open_clip models to time exclip on")
    p.add_argument("--worker", choices=["dualex", "today", "exclip"], help=argparse.SUPPRESS)
    p.add_argument("--matrix-out", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json-out", type=Path, default=None, help="write the results as JSON")
    args = p.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        print(json.dumps(worker(args.worker, args.models, args)))
        return
    import torch

    try:
        import exclip  # noqa: F401

        have_exclip = not args.skip_exclip
    except ImportError:
        have_exclip = False
        print("exclip is not installed (pip install --no-deps exclip==1.1): no exclip column", file=sys.stderr)
    cpus = len(os.sched_getaffinity(0))
    print(f"device {args.device}, {args.threads} thread(s), {cpus} CPUs, load average {os.getloadavg()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            row: dict[str, Any] = {"model": name}
            mats = {impl: Path(tmp) / f"{impl}-{name}.pt" for impl in ("dualex", "today", "exclip")}
            row["dualex"] = run_worker("dualex", name, args, mats["dualex"])
            if not args.skip_today and name in args.today_models.split(","):
                row["today"] = run_worker("today", name, args, mats["today"])
            if have_exclip and name in args.exclip_models.split(","):
                row["exclip"] = run_worker("exclip", name, args, mats["exclip"])
            for other in ("today", "exclip"):
                if row.get(other) and row["dualex"]:
                    a, b = torch.load(mats["dualex"]), torch.load(mats[other])
                    row[f"rel_diff_{other}"] = _rel(a, b)
                    for key, unit in (("seconds", "wall"), ("cpu_seconds", "cpu")):
                        theirs, ours = row[other][key], row["dualex"][key]
                        row[f"speedup_{other}_{unit}"] = {
                            "median": statistics.median(theirs) / statistics.median(ours),
                            "min": min(theirs) / min(ours),
                        }
            rows.append(row)
            report([row], header=len(rows) == 1)
    print(f"load average at the end {os.getloadavg()}")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))


def report(rows: list[dict[str, Any]], *, header: bool) -> None:
    """Print wall-clock and process CPU seconds (min, median), peak memory, load, speed-ups, differences."""
    if header:
        print(
            f"\n{'model':<9} {'path':<7} {'wall min':>9} {'median':>8} {'CPU min':>8} {'median':>8} {'runs':>4} "
            f"{'peak GiB':>8} {'load':>9} {'speed-up wall (med/min)':>24} {'CPU (med/min)':>16} {'rel diff':>8}"
        )
    for r in rows:
        for impl in ("dualex", "today", "exclip"):
            d = r.get(impl)
            if not d:
                continue
            s, c = d["seconds"], d["cpu_seconds"]
            cols = []
            for unit in ("wall", "cpu"):
                sp = r.get(f"speedup_{impl}_{unit}")
                cols.append(f"{sp['median']:.1f}× / {sp['min']:.1f}×" if sp else "")
            rel = f"{r[f'rel_diff_{impl}']:.1e}" if f"rel_diff_{impl}" in r else ""
            load = f"{d['load_before']:.1f}-{d['load_after']:.1f}"
            print(
                f"{r['model']:<9} {impl:<7} {min(s):>9.3f} {statistics.median(s):>8.3f} {min(c):>8.3f} "
                f"{statistics.median(c):>8.3f} {len(s):>4} {d['peak_bytes'] / 2**30:>8.3f} {load:>9} "
                f"{cols[0]:>24} {cols[1]:>16} {rel:>8}"
            )
        u = (r.get("dualex") or {}).get("units")
        if u:
            print(
                f"{'':<9} units (ij / one forward pass of both towers, same process, interleaved): wall "
                f"{u['ij_wall_min']:.2f} min / {u['ij_wall_median']:.2f} median, CPU {u['ij_cpu_min']:.2f} / "
                f"{u['ij_cpu_median']:.2f} (forward {u['forward_wall_median'] * 1e3:.1f} ms wall median); first call "
                f"{u['cold_wall']:.2f} units wall = {u['cold_over_warm_wall']:.2f}× warm (CPU "
                f"{u['cold_over_warm_cpu']:.2f}×); first forward pass {u['cold_forward_wall']:.2f} units"
            )
        fl = (r.get("dualex") or {}).get("flops")
        if fl:
            print(
                f"{'':<9} FLOPs: executed {fl['executed'] / 1e9:.2f} G, necessary (analytic) "
                f"{fl['analytic'] / 1e9:.2f} G (executed/necessary {fl['executed'] / fl['analytic']:.2f}); first "
                f"call {fl['executed_cold'] / 1e9:.2f} G vs {fl['analytic_cold'] / 1e9:.2f} G; one forward pass of "
                f"both towers {fl['forward'] / 1e9:.2f} G (ij = {fl['executed'] / fl['forward']:.2f} forward passes "
                f"of FLOPs, first call {fl['executed_cold'] / fl['forward']:.2f})"
            )


if __name__ == "__main__":
    main()
