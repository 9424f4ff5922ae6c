"""Throughput of `dualex evaluate`: pairs per hour with all metrics, this checkout against a base commit.

Each configuration runs `dualex.evaluation.evaluate` on the bundled shapes model and held-out shapes
scenes (all metrics, FIxLIP's settings: 1000 faithfulness coalitions, default method options) in a
fresh subprocess, so that import and ``dualex.load`` are counted as a user feels them. The base commit
(default: d733685, the landed main before issue 12) is exported with ``git archive`` and imported
through ``PYTHONPATH`` in its subprocess; configurations alternate within each repeat, and the table
keeps each one's repeat with the least CPU time in the evaluate call (the machine may be shared: wall
times under load are reported too, CPU seconds are the steadier measure). Pairs per hour at dataset
scale exclude start-up (torch, import, ``dualex.load``), which is reported separately. Stage shares come
from the run's own timing columns (``seconds`` = explain, ``seconds_<stage>``; older runs have only ``seconds``);
"other" is the rest of the evaluate call (dataset generation, shard and summary writing).

    OMP_NUM_THREADS=1 python benchmarks/evaluate_throughput.py                  # 4 methods together
    OMP_NUM_THREADS=1 python benchmarks/evaluate_throughput.py --per-method     # also each method alone
    python benchmarks/evaluate_throughput.py --items 2 --repeats 1 --base HEAD  # quick check
    OMP_NUM_THREADS=1 python benchmarks/evaluate_throughput.py --batch-sizes 1,8 --items 8  # batching

With ``--batch-sizes`` the configurations are this checkout at each ``evaluate(batch_size=...)`` (no base
commit); speed-ups are against the first size, and "explain pairs/h" counts the explanation stage alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("load", "save", "completeness", "insertion_deletion", "faithfulness", "pointing")


def forward_unit(model: Any) -> tuple[float, float]:
    """Median process CPU seconds (of 20, after 3 warm-up calls) and the FLOPs of one plain forward pass of
    both towers of ``model`` on a held-out shapes scene: the unit evaluate's cost is expressed in."""
    import statistics

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dualex.datasets.base import open_dataset

    item = next(iter(open_dataset("shapes:", n=1, split="heldout")))
    pair = model.prepare(item.load_image(), item.caption)

    def forward() -> None:
        with torch.no_grad():
            for side in ("text", "image"):
                if hasattr(model, "tower"):
                    model.tower(side).encode(pair.side(side))
                else:  # a base commit from before `Tower`
                    model.tower(side).encode(pair.side(side))

    for _ in range(3):
        forward()
    times = []
    for _ in range(20):
        c0 = time.process_time()
        forward()
        times.append(time.process_time() - c0)
    with FlopCounterMode(display=False) as fc:
        forward()
    return statistics.median(times), float(fc.get_total_flops())


def child(args: argparse.Namespace) -> None:
    """Run one configuration and print its figures as JSON (runs inside the measured subprocess)."""
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    t_torch = time.perf_counter()
    import dualex
    from dualex.evaluation import read_run
    from dualex.evaluation.run import MetricOptions, evaluate

    t_import = time.perf_counter()
    model = dualex.load("shapes", device=args.device)
    if args.dtype != "fp32":
        model.module.to({"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype])
    t_load = time.perf_counter()
    forward_cpu, forward_flops = forward_unit(model)
    kw: dict[str, Any] = {}
    if args.design:
        kw["faith_design"] = args.design
    metrics = MetricOptions(**kw)
    if args.batch_size:
        kw_eval: dict[str, Any] = {"batch_size": args.batch_size}
    else:
        kw_eval = {}
    methods = args.methods.split(",")
    opts = {m: o for m, o in json.loads(args.method_options or "{}").items() if m in methods}
    data: dict[str, Any] = (
        {"n": args.items, "split": "heldout"} if args.seed is None else {"n": args.items, "seed": args.seed}
    )
    with tempfile.TemporaryDirectory() as tmp:
        t1, c1 = time.perf_counter(), time.process_time()
        evaluate(model, "shapes:", methods, Path(tmp) / "run", dataset_options=data,
                 metrics=metrics, method_options=opts, **kw_eval)  # fmt: skip
        t_eval, c_eval = time.perf_counter() - t1, time.process_time() - c1
        df = read_run(Path(tmp) / "run")
    flops = None
    if args.flops:  # one more run under the FLOP counter (matmuls, convolutions), after the timed one
        from torch.utils.flop_counter import FlopCounterMode

        with tempfile.TemporaryDirectory() as tmp, FlopCounterMode(display=False) as fc:
            evaluate(model, "shapes:", methods, Path(tmp) / "run", dataset_options=data, metrics=metrics,
                     method_options=opts, **kw_eval)  # fmt: skip
        flops = float(fc.get_total_flops())
    pair = df[df.level == "pair"]
    stages = {"explain": float(pair["seconds"].sum())}
    for s in STAGES:
        col = f"seconds_{s}"
        if col in pair.columns:
            stages[s] = float(pair[col].fillna(0).sum())
    errors = int(pair["error"].notna().sum())
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "cpu_s": ru.ru_utime + ru.ru_stime, "evaluate_cpu_s": c_eval,
        "torch_s": t_torch - t0, "import_s": t_import - t_torch, "load_s": t_load - t_import, "evaluate_s": t_eval,
        "total_s": time.perf_counter() - t0, "stages": stages, "pairs": len(pair), "errors": errors,
        "faith_spearman_mean": float(pair["faith_spearman"].mean()), "aid_mean": float(pair["aid"].mean()),
        "forward_cpu_s": forward_cpu, "forward_flops": forward_flops, "flops": flops,
    }))  # fmt: skip


def run_config(
    src: Path,
    methods: str,
    items: int,
    design: str | None,
    options: str | None,
    batch_size: int | None = None,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip
    cmd = [sys.executable, __file__, "--child", "--methods", methods, "--items", str(items)]
    if design:
        cmd += ["--design", design]
    if options:
        cmd += ["--method-options", options]
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    cmd += extra or []
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if out.returncode != 0:
        raise RuntimeError(f"configuration failed ({src}, {methods}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def export_base(commit: str, dest: Path) -> Path:
    """``src/`` of ``commit`` under ``dest`` (git archive; no worktree bookkeeping)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "src"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--design", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--method-options", default=None,
                    help="JSON method options for this checkout only, e.g. '{\"fixlip\": {\"n_boot\": 0}}' to leave "
                         "out work the base commit does not do")  # fmt: skip
    ap.add_argument("--methods", default="ij,fixlip,gradxinput,random")
    ap.add_argument("--items", type=int, default=4, help="held-out shapes scenes per configuration (default 4)")
    ap.add_argument("--repeats", type=int, default=2, help="repeats per configuration; the fastest is kept")
    ap.add_argument("--base", default="d733685", help="commit to compare against (default: landed main d733685)")
    ap.add_argument("--per-method", action="store_true", help="also time each method alone")
    ap.add_argument("--batch-sizes", default=None,
                    help="compare evaluate(batch_size=...) of this checkout instead, e.g. 1,8")  # fmt: skip
    ap.add_argument("--batch-size", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help="also write all measurements to this file")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the model and every pass)")
    ap.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="the model's weights")
    ap.add_argument("--seed", type=int, default=None,
                    help="scenes generated with this seed instead of the held-out split (issue 23: 31)")  # fmt: skip
    ap.add_argument("--flops", action="store_true",
                    help="also count the FLOPs of each run (one more run each, in the process CPU column)")  # fmt: skip
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        configs: list[tuple[str, Path, str | None, int | None]]
        if args.batch_sizes:
            sizes = [int(b) for b in args.batch_sizes.split(",")]
            configs = [(f"batch size {b}", ROOT / "src", None, b) for b in sizes]
        else:
            base_src = export_base(args.base, Path(tmp))
            configs = [("base", base_src, None, None), ("this, independent", ROOT / "src", "independent", None),
                       ("this, product", ROOT / "src", None, None)]  # fmt: skip
        groups = [args.methods] + (args.methods.split(",") if args.per_method else [])
        best: dict[tuple[str, str], dict[str, Any]] = {}
        for _ in range(args.repeats):
            for methods in groups:
                for name, src, design, bs in configs:
                    opts = None if name == "base" else args.method_options
                    extra = ["--device", args.device, "--dtype", args.dtype] + (["--flops"] if args.flops else [])
                    extra += ["--seed", str(args.seed)] if args.seed is not None else []
                    r = run_config(src, methods, args.items, design, opts, bs, extra)
                    key = (methods, name)
                    if key not in best or r["evaluate_cpu_s"] < best[key]["evaluate_cpu_s"]:
                        best[key] = r
                    print(f"  {methods:28s} {name:18s} {r['total_s']:7.1f} s", file=sys.stderr, flush=True)
    load1 = os.getloadavg()
    if args.method_options:
        print(f"method options of this checkout: {args.method_options}")
    print(f"load average (1, 5, 15 min) before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; "
          f"after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; {os.cpu_count()} CPUs; "
          f"OMP_NUM_THREADS=1; {args.items} held-out scenes per run, fastest of {args.repeats}\n")  # fmt: skip
    print("Pairs per hour at dataset scale (start-up excluded) from the CPU seconds of the evaluate call, and "
          "from its wall time; then the whole process (start-up included):\n")  # fmt: skip
    print("| methods | version | pairs/h (CPU) | speed-up | pairs/h (wall) | speed-up | explain pairs/h | speed-up | "
          "evaluate CPU s | process CPU s | speed-up | torch s | import s | load s |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for methods in groups:
        b = best[(methods, configs[0][0])]
        for name, _, _, _ in configs:
            r = best[(methods, name)]
            pc, pw = 3600 * args.items / r["evaluate_cpu_s"], 3600 * args.items / r["evaluate_s"]
            n_pairs = r["pairs"] or 1  # explain stage: pairs of all methods per explanation second
            px = 3600 * n_pairs / max(r["stages"]["explain"], 1e-9)
            bx = 3600 * (b["pairs"] or 1) / max(b["stages"]["explain"], 1e-9)
            print(f"| {methods} | {name} | {pc:,.0f} | {b['evaluate_cpu_s'] / r['evaluate_cpu_s']:.2f}× | {pw:,.0f} | "
                  f"{b['evaluate_s'] / r['evaluate_s']:.2f}× | {px:,.0f} | {px / bx:.2f}× | "
                  f"{r['evaluate_cpu_s']:.1f} | {r['cpu_s']:.1f} | "
                  f"{b['cpu_s'] / r['cpu_s']:.2f}× | {r['torch_s']:.2f} | {r['import_s']:.2f} | "
                  f"{r['load_s']:.2f} |")  # fmt: skip
    print("\nIn forward-pass units (evaluate CPU seconds / one plain forward pass of both towers, CPU, same process;"
          " FLOPs: executed / one forward pass's):\n")  # fmt: skip
    print(
        "| methods | version | forward ms (CPU) | evaluate units | units per pair | FLOPs executed (G) | in forwards |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for methods in groups:
        for name, _, _, _ in configs:
            r = best[(methods, name)]
            u = r["evaluate_cpu_s"] / r["forward_cpu_s"]
            fl = r.get("flops")
            fcells = f"{fl / 1e9:,.1f} | {fl / r['forward_flops']:,.0f}" if fl else "– | –"
            print(
                f"| {methods} | {name} | {1e3 * r['forward_cpu_s']:.2f} | {u:,.0f} | {u / args.items:,.0f} | {fcells} |"
            )
    print("\nShare of the evaluate call per stage (from the run's timing columns):\n")
    cols = ["explain", *STAGES, "other"]
    print("| methods | version | " + " | ".join(cols) + " |")
    print("|---|---|" + "---:|" * len(cols))
    for methods in groups:
        for name, _, _, _ in configs:
            r = best[(methods, name)]
            st = dict(r["stages"])
            st["other"] = max(0.0, r["evaluate_s"] - sum(st.values()))  # stage columns are wall seconds
            cells = [f"{100 * st[c] / r['evaluate_s']:.0f} %" if c in st else "–" for c in cols]
            print(f"| {methods} | {name} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{k[0]} | {k[1]}": v for k, v in best.items()}, indent=1))


if __name__ == "__main__":
    main()
