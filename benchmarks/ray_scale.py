"""The Ray engine at scale: items/s on 1 and 2 nodes, and the driver's peak memory for 10x more items.

Starts real Ray clusters on this machine (`dualex.evaluation.ray_cluster.LocalCluster`: ``ray start --head``
plus ``ray start --address`` nodes on 127.0.0.1, ``--cpus`` CPUs each, own ports and temporary
directory, stopped at the end without touching other clusters), writes WebDataset shards of held-out
shapes scenes with `dualex shards`, and runs `dualex.evaluation.evaluate(..., engine="ray")` over
``--items`` times each of ``--scales`` items (default 1 and 10), a fresh driver subprocess per run
(the tiny random CLIP of `dualex.testing`, method ``random``, completeness only: the driver's work,
not the model's, is what is measured). The driver reports the wall time of the evaluate call and its
peak resident memory during the call (VmRSS sampled every 20 ms) and just before it; repeats keep the
fastest run.
Each cluster first runs one unreported warm-up (its worker processes start and import torch once).
With ``--base COMMIT`` the same runs are made with the engine of that commit (exported with ``git
archive``) side by side, on one node.

    OMP_NUM_THREADS=1 python benchmarks/ray_scale.py                 # 1 and 2 nodes, 30 and 300 items
    python benchmarks/ray_scale.py --nodes 1 --scales 1,10,100        # 30, 300 and 3000 items
    python benchmarks/ray_scale.py --items 8 --repeats 1             # quick check
    python benchmarks/ray_scale.py --base ba04b41 --nodes 1          # the driver-writes engine before #25
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
MODEL = "py:dualex.testing:tiny_hf_clip"


def child(args: argparse.Namespace) -> None:
    """One driver: evaluate with the Ray engine (RAY_ADDRESS from the environment); print JSON figures."""
    import resource

    import torch

    torch.set_num_threads(1)
    import inspect

    from dualex.evaluation.run import MetricOptions, evaluate

    metrics = MetricOptions(metrics="completeness")
    kw: dict[str, Any] = {"engine": "ray", "concurrency": args.concurrency, "metrics": metrics, "progress": False,
                          "batch_size": 4, "shard_size": 4}  # fmt: skip
    if "ray_address" in inspect.signature(evaluate).parameters:
        kw["ray_address"] = os.environ["RAY_ADDRESS"]
    if args.n:
        kw["dataset_options"] = {"n": args.n}
    import threading

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    peak = [rss_mb()]
    done = threading.Event()

    def sample() -> None:  # the resident memory during the call, every 20 ms
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_mb())

    rss_before = peak[0]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    res = evaluate(MODEL, args.dataset, ["random"], args.out, **kw)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    peak[0] = max(peak[0], rss_mb())
    print(json.dumps({"seconds": seconds, "units": res.units_run, "errors": res.errors, "rss_before_mb": rss_before,
                      "peak_mb": peak[0], "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_driver(
    env: dict[str, str], dataset: str, n: int, out: Path, concurrency: int, pythonpath: str
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--dataset", dataset, "--n", str(n), "--out", str(out),
           "--concurrency", str(concurrency)]  # fmt: skip
    res = subprocess.run(cmd, env={**env, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True, timeout=3600)  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"driver failed:\n{res.stderr[-3000:]}")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")][-1]
    return dict(json.loads(line))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--items", type=int, default=30, help="items of the smallest run")
    ap.add_argument("--scales", default="1,10", help="run sizes as multiples of --items (default 1,10)")
    ap.add_argument("--nodes", default="1,2", help="node counts to measure (default 1,2)")
    ap.add_argument("--shard-items", type=int, default=8, help="items per WebDataset shard (default 8)")
    ap.add_argument("--cpus", type=int, default=1, help="CPUs per node (default 1)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--base", default=None, help="also run this commit's engine (1 node) side by side")
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, str(ROOT / "src"))
    from dualex.cli import main as dualex_main
    from dualex.evaluation.ray_cluster import LocalCluster

    tmp = Path(tempfile.mkdtemp(prefix="dualex-rayscale-"))
    sizes = tuple(args.items * int(k) for k in args.scales.split(","))
    for n in sizes:
        dualex_main(["shards", "--dataset", "shapes:", "-D", f"n={n}", "--out", str(tmp / f"wds{n}"),
                     "--shard-size", str(args.shard_items), "--no-progress"])  # fmt: skip
    versions = [("this", str(ROOT / "src"))]
    if args.base:
        base = tmp / "base"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base, "src"], capture_output=True,
                                 check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        versions.append((f"base {args.base}", str(base / "src")))
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    rows = []
    for label, path in versions:  # each version on its own clusters: workers import the nodes' PYTHONPATH
        for nodes in [int(x) for x in args.nodes.split(",")] if label == "this" else [1]:
            with LocalCluster(nodes, cpus=args.cpus, env={"PYTHONPATH": path}) as cluster:
                spec0, n0 = (f"webdataset:{tmp / f'wds{sizes[0]}'}", 0) if label == "this" else ("shapes:", sizes[0])
                run_driver(cluster.driver_env(), spec0, n0, tmp / f"warm-{label.split()[0]}-{nodes}",
                           nodes * args.cpus, path)  # warm-up (not reported): the nodes' worker processes start
                for n in sizes:
                    # this checkout streams the shards; the base engine needs a list reader (same scenes)
                    spec, opt_n = (f"webdataset:{tmp / f'wds{n}'}", 0) if label == "this" else ("shapes:", n)
                    best: dict[str, Any] | None = None
                    for r in range(args.repeats):
                        out = tmp / f"run-{label.split()[0]}-{nodes}-{n}-{r}"
                        figs = run_driver(cluster.driver_env(), spec, opt_n, out, nodes * args.cpus, path)
                        if best is None or figs["seconds"] < best["seconds"]:
                            best = figs
                    assert best is not None
                    rows.append({"version": label, "nodes": nodes, "items": n, **best})
                    print(json.dumps(rows[-1]), flush=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("\n| version | nodes | items | evaluate s | items/s | driver RSS before MB | driver peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rate = r["items"] / r["seconds"]
        print(f"| {r['version']} | {r['nodes']} | {r['items']} | {r['seconds']:.1f} | {rate:.2f} | "
              f"{r['rss_before_mb']:.0f} | {r['peak_mb']:.0f} |")
    for label, _ in versions:
        for nodes in sorted({r["nodes"] for r in rows if r["version"] == label}):
            mine = [next(r for r in rows if (r["version"], r["nodes"], r["items"]) == (label, nodes, n)) for n in sizes]
            for big in mine[1:]:
                k, ratio = big["items"] / mine[0]["items"], big["peak_mb"] / mine[0]["peak_mb"]
                print(f"{label}, {nodes} node(s): {k:.0f}x items -> driver peak x{ratio:.2f} "
                      f"({big['peak_mb'] - mine[0]['peak_mb']:+.0f} MB)")
    one = [r for r in rows if r["version"] == "this" and r["items"] == sizes[-1]]
    if len(one) >= 2:
        print(f"items/s, {one[-1]['nodes']} vs {one[0]['nodes']} node(s), {sizes[-1]} items: "
              f"x{(one[-1]['items'] / one[-1]['seconds']) / (one[0]['items'] / one[0]['seconds']):.2f}")


if __name__ == "__main__":
    main()
