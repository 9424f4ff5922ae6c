"""FIxLIP: time and peak memory per explanation, and the memory the reference's dense design would need.

Models are transformers ``CLIPModel``s with the ViT-B/32 and ViT-B/16 sizes at 224 px (random
weights: speed and memory do not depend on them) and a 20-word caption (20 text players, so 49 + 20
and 196 + 20 players). The surrogate has all pairs: 2,346 and 23,220 pair terms. Each configuration
runs in a fresh subprocess so that peak memory is measured in isolation (CUDA: the allocator's peak;
CPU: growth of the process's peak resident set).

    python benchmarks/fixlip_speed.py                     # full towers, budgets 2^17 and 2^20
    python benchmarks/fixlip_speed.py --quick             # CPU: 2-block towers, budgets 2^11 and 2^13
    python benchmarks/fixlip_speed.py --fit-only          # sampler + solver only (no towers), 2^17 and 2^20
    python benchmarks/fixlip_speed.py --models B32 --budgets 19 --device cuda
    python benchmarks/fixlip_speed.py --overhead          # cost of the errors and diagnostics (issue 23)

``--overhead`` measures, side by side in one process per model with one thread, random open_clip
ViT-B-32 and ViT-B-16 (seeded weights) at budget 256: FIxLIP with ``holdout=0, n_boot=0`` (the fit
alone), with its defaults (cross-fitted diagnostics and bootstrap standard errors) and, with
``--old``, with the former defaults (``holdout=1024``: a fresh held-out sample). It prints wall and
process CPU seconds (min / median over interleaved repeats), the units of issue 23 (time / one plain
forward pass of both towers), tower passes, the ratio defaults / fit alone (goal ≤ 1.25) and FLOPs
(``torch.utils.flop_counter``): executed by the defaults against those the fit needs (the fit alone),
with one forward pass of both towers for scale.

The "reference" column is the dense float64 design matrix the FIxLIP reference builds for the same
fit, ``(m_I·m_T) × (1 + n + n(n−1)/2)``, held twice (X and W·X; spec §2.6); "ratio" is that divided
by our measured peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

CAPTION = "a small brown dog with a red collar catches a yellow frisbee above the green grass of a city park"
ARCHS = {"B32": 32, "B16": 16}


def build_model(patch: int, layers: int, device: str) -> Any:
    import torch
    from transformers import CLIPConfig, CLIPModel

    from dualex.models.hf import HFClip
    from dualex.models.preprocess import CLIP_MEAN, CLIP_STD, ImagePipeline
    from dualex.models.tokenize import WordTokenizer

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": layers,
            "num_attention_heads": 8,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 0,
        },
        vision_config={
            "image_size": 224,
            "patch_size": patch,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": layers,
            "num_attention_heads": 12,
        },
        projection_dim=512,
    )
    module = CLIPModel(cfg).eval().to(device)
    tok = WordTokenizer(49408, bos_id=49406, eos_id=49407, pad_id=0, max_length=77)
    pipe = ImagePipeline(size=224, crop=(224, 224), mean=CLIP_MEAN, std=CLIP_STD)
    return HFClip(module, tokenizer=tok, pipeline=pipe, name=f"random ViT-B/{patch} ({layers} blocks)")


def reference_bytes(m_values: int, n: int) -> int:
    d = 1 + n + n * (n - 1) // 2
    return 2 * m_values * d * 8


def worker(arch: str, budget: int, layers: int, device: str, fit_only: bool, p: float) -> dict:
    import numpy as np
    import torch

    from dualex.cli.bench import measure

    torch.set_float32_matmul_precision("high")
    patch = ARCHS[arch]
    n_image, n_text = (224 // patch) ** 2, 20
    dev = torch.device(device)
    result: dict = {}
    if fit_only:
        from dualex.games.regression import fit_product_surrogate
        from dualex.games.sampler import sample_banzhaf
        from dualex.methods.fixlip import choose_split

        def run() -> None:
            t0 = time.perf_counter()
            m_i, m_t = choose_split(budget, n_image, n_text, "all")
            rng = np.random.default_rng(0)
            si, st = sample_banzhaf(n_image, m_i, p, rng), sample_banzhaf(n_text, m_t, p, rng)
            # a smooth similarity-like grid stands in for the towers
            f64 = torch.float64
            a = torch.from_numpy(si.coalitions).to(dev, f64) @ torch.linspace(-1, 1, n_image, device=dev, dtype=f64)
            b = torch.from_numpy(st.coalitions).to(dev, f64) @ torch.linspace(1, -1, n_text, device=dev, dtype=f64)
            V = torch.tanh(a[:, None] / 10 + b[None, :] / 5 + a[:, None] * b[None, :] / 50)
            t1 = time.perf_counter()
            sur = fit_product_surrogate(si.coalitions, si.weights, st.coalitions, st.weights, V, "all", device=dev)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            result.update(
                m_image=si.m,
                m_text=st.m,
                n_values=si.m * st.m,
                sample_seconds=t1 - t0,
                fit_seconds=time.perf_counter() - t1,
                rank_deficient=sur.info["rank_deficient"],
                n_pairs=int(sur.pairs.shape[0]),
            )

    else:
        from dualex.methods import explain_pair
        from dualex.testing import random_image

        model = build_model(patch, layers, device)
        pair = model.prepare(random_image(0, (256, 320)), CAPTION)
        if int(pair.text.players(0).numel()) != n_text:
            raise SystemExit(f"the caption must have {n_text} tokens")

        def run() -> None:
            ex = explain_pair(
                model,
                pair,
                "fixlip",
                p=p,
                budget=budget,
                holdout=1024,
                progress=False,
                internal_batch_size=256 if dev.type == "cuda" else 64,
            )[0]
            d = ex.diagnostics
            result.update(
                m_image=int(d["m_image"]),
                m_text=int(d["m_text"]),
                n_values=int(d["n_values"]),
                game_seconds=d["game_seconds"],
                fit_seconds=d["fit_seconds"],
                holdout_seconds=d.get("holdout_seconds", 0.0),
                rank_deficient=d["rank_deficient"],
                n_pairs=int(d["n_pairs"]),
                r2_holdout=d.get("r2"),
            )

    m = measure(run, device=dev, repeat=1, warmup=0)
    n = n_image + n_text
    ref = reference_bytes(result["n_values"], n)
    return {
        "arch": arch,
        "budget": budget,
        "layers": layers,
        "fit_only": fit_only,
        "device": m.device,
        "seconds": m.seconds,
        "peak_bytes": m.peak_bytes,
        "n_players": n,
        "reference_bytes": ref,
        "ratio": ref / max(m.peak_bytes, 1),
        **result,
    }


OVERHEAD_CAPTION = "a photo of a brown dog catching a red frisbee on the green grass of a park"
CONFIGS = {
    "fit": {"holdout": 0, "n_boot": 0},
    "defaults": {},
    "old": {"holdout": 1024},
}


def overhead_worker(arch: str, budget: int, repeat: int, old: bool, flops: bool) -> dict:
    """One model: forward-pass time, then FIxLIP configurations interleaved, then FLOP counts."""
    import statistics
    import warnings

    import numpy as np
    import open_clip
    import torch

    import dualex
    from dualex.methods import explain_pair
    from dualex.threads import configure_threads

    warnings.simplefilter("ignore", UserWarning)  # the underdetermined-budget warning is expected at 256
    threads = configure_threads(1)
    torch.manual_seed(0)
    model = dualex.wrap(open_clip.create_model(arch, pretrained=None), name=f"openclip:{arch} (random weights)")
    image = np.random.default_rng(0).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    pair = model.prepare(image, OVERHEAD_CAPTION)
    load_before = os.getloadavg()[0]

    def forward() -> None:
        with torch.no_grad():
            model.tower("text").encode(pair.text)
            model.tower("image").encode(pair.image)

    fw = []
    for _ in range(4):
        t0 = time.perf_counter()
        forward()
        fw.append(time.perf_counter() - t0)
    fw = fw[1:]
    names = ["fit", "defaults"] + (["old"] if old else [])
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    info: dict[str, dict] = {}
    for _ in range(repeat):
        for k in names:
            t0, c0 = time.perf_counter(), time.process_time()
            ex = explain_pair(model, pair, "fixlip", budget=budget, progress=False, **CONFIGS[k])[0]
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
            d = ex.diagnostics
            info[k] = {
                "n_passes": d["n_passes"],
                "m_image": d["m_image"],
                "m_text": d["m_text"],
                "stderr": bool(ex.stderr),
                "r2": d.get("r2"),
                **{x: d[x] for x in ("bootstrap_seconds", "crossfit_seconds", "holdout_seconds") if x in d},
            }
    out: dict = {
        "arch": arch,
        "budget": budget,
        "threads": threads,
        "forward_seconds": min(fw),
        "wall": wall,
        "cpu": cpu,
        "info": info,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    if flops:
        from torch.utils.flop_counter import FlopCounterMode

        def count(fn: Any) -> float:
            fc = FlopCounterMode(display=False)
            with fc:
                fn()
            return float(fc.get_total_flops())

        out["flops"] = {
            "forward": count(forward),
            **{
                k: count(lambda k=k: explain_pair(model, pair, "fixlip", budget=budget, progress=False, **CONFIGS[k]))
                for k in ("fit", "defaults")
            },
        }
    _ = statistics
    return out


def overhead_main(args: argparse.Namespace) -> None:
    import statistics

    models = args.models if args.models != "B32,B16" else "ViT-B-32,ViT-B-16"
    print(f"FIxLIP overhead of errors and diagnostics, budget {args.budget}, 1 thread, load {os.getloadavg()}")
    rows = []
    for arch in models.split(","):
        cmd = [sys.executable, __file__, "--overhead-worker", arch, "--budget-overhead", str(args.budget),
               "--repeat", str(args.repeat)]  # fmt: skip
        cmd += (["--old"] if args.old else []) + (["--skip-flops"] if args.skip_flops else [])
        env = {**os.environ, "DUALEX_PROGRESS": "0", "OMP_NUM_THREADS": "1", "DUALEX_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"[{arch}] failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        fw = r["forward_seconds"]
        print(
            f"\n{arch}: one forward pass of both towers {fw:.3f} s; load {r['load_before']:.1f}-{r['load_after']:.1f}"
        )
        print(
            f"{'config':<9} {'wall min':>9} {'median':>8} {'CPU min':>8} {'median':>8} {'units':>7} "
            f"{'passes':>7} {'SEs':>4}"
        )
        for k, w in r["wall"].items():
            c, inf = r["cpu"][k], r["info"][k]
            print(
                f"{k:<9} {min(w):>9.2f} {statistics.median(w):>8.2f} {min(c):>8.2f} {statistics.median(c):>8.2f} "
                f"{min(w) / fw:>7.1f} {int(inf['n_passes']):>7} {'yes' if inf['stderr'] else 'no':>4}"
            )
        for unit in ("wall", "cpu"):
            a, b = r[unit]["defaults"], r[unit]["fit"]
            print(
                f"ratio defaults / fit alone ({unit}): min {min(a) / min(b):.3f}, median "
                f"{statistics.median(a) / statistics.median(b):.3f}  (goal ≤ 1.25)"
            )
        extra = {x: round(v, 3) for x, v in r["info"]["defaults"].items() if x.endswith("seconds")}
        print(f"defaults' extra stages (s): {extra}")
        fl = r.get("flops")
        if fl:
            print(
                f"FLOPs: executed (defaults) {fl['defaults'] / 1e9:.1f} G, necessary (the fit alone) "
                f"{fl['fit'] / 1e9:.1f} G "
                f"(executed/necessary {fl['defaults'] / fl['fit']:.3f}); one forward pass of both towers "
                f"{fl['forward'] / 1e9:.2f} G"
            )
    print(f"\nload average at the end {os.getloadavg()}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="B32,B16", help="comma list of B32, B16")
    ap.add_argument("--budgets", default=None, help="comma list of log2 budgets (default 17,20; --quick 11,13)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--layers", type=int, default=None, help="blocks per tower (default 12; --quick 2)")
    ap.add_argument("--quick", action="store_true", help="CPU-sized run: 2-block towers, budgets 2^11 and 2^13")
    ap.add_argument("--fit-only", action="store_true", help="time the sampler and the WLS solve only")
    ap.add_argument("--p", type=float, default=0.5)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--overhead", action="store_true", help="cost of standard errors and diagnostics (issue 23)")
    ap.add_argument("--budget-overhead", dest="budget", type=int, default=256, help="--overhead: the budget")
    ap.add_argument("--repeat", type=int, default=2, help="--overhead: interleaved repeats of each configuration")
    ap.add_argument("--old", action="store_true", help="--overhead: also time the former defaults (holdout=1024)")
    ap.add_argument("--skip-flops", action="store_true", help="--overhead: no FLOP counts")
    ap.add_argument("--overhead-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.overhead_worker:
        print(
            json.dumps(overhead_worker(args.overhead_worker, args.budget, args.repeat, args.old, not args.skip_flops))
        )
        return
    if args.overhead:
        overhead_main(args)
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    layers = args.layers or (2 if args.quick else 12)
    budgets = [int(b) for b in (args.budgets or ("11,13" if args.quick else "17,20")).split(",")]
    if args.worker:
        arch, budget = args.worker.split(":")
        print(json.dumps(worker(arch, int(budget), layers, device, args.fit_only, args.p)))
        return
    rows = []
    for arch in args.models.split(","):
        for b in budgets:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                f"{arch}:{2**b}",
                "--device",
                device,
                "--layers",
                str(layers),
                "--p",
                str(args.p),
            ] + (["--fit-only"] if args.fit_only else [])
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "DUALEX_PROGRESS": "0"})
            if proc.returncode != 0:
                print(f"[{arch} 2^{b}] failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["wall_seconds"] = time.perf_counter() - t0
            rows.append(row)
            print(f"  done {arch} 2^{b} in {row['wall_seconds']:.0f} s", file=sys.stderr)
    what = "sampler + WLS only" if args.fit_only else f"full explanation, {layers}-block towers"
    print(f"\nFIxLIP cross-modal, all pairs, p={args.p}, {what}, device {device}")
    print(
        f"{'model':<6} {'budget':>7} {'m_I x m_T':>12} {'pairs':>6} {'time s':>8} {'game s':>7} {'fit s':>7} "
        f"{'peak GiB':>9} {'ref GiB':>8} {'ratio':>7} {'rank-def':>8}"
    )
    for r in rows:
        print(
            f"{r['arch']:<6} {'2^' + str(r['budget'].bit_length() - 1):>7} "
            f"{str(r['m_image']) + 'x' + str(r['m_text']):>12} {r['n_pairs']:>6} {r['seconds']:>8.1f} "
            f"{r.get('game_seconds', r.get('sample_seconds', 0.0)):>7.1f} {r['fit_seconds']:>7.1f} "
            f"{r['peak_bytes'] / 2**30:>9.2f} {r['reference_bytes'] / 2**30:>8.1f} {r['ratio']:>6.0f}x "
            f"{int(r['rank_deficient']):>8}"
        )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
