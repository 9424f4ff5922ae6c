"""``dualex evaluate`` and ``dualex summary``: dataset-scale runs from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dualex.cli.args import add_dataset_options, add_device, add_flags, add_run_dir, add_values, command
from dualex.cli.options import parse_option
from dualex.errors import InputError


def _method_option(text: str) -> tuple[str, str, Any]:
    """``NAME.KEY=VALUE`` (a method's or metric's option) -> ``(NAME, KEY, value)``."""
    key, value = parse_option(text)
    method, dot, opt = key.partition(".")
    if not dot or not method or not opt:
        raise argparse.ArgumentTypeError(f"options are NAME.KEY=VALUE (e.g. ij.n_steps=10), got {text!r}")
    return method, opt, value


ORDER = 10  # position of these subcommands in ``dualex --help``


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``evaluate`` and ``summary`` to ``sub``."""
    p = command(sub, "evaluate", run_evaluate)
    p.add_argument("--model", required=True, help="model name (shapes | hf:ID_OR_DIR | openclip:... | sentence:...) "
                   "or py:module:function returning a DualEncoder")  # fmt: skip
    p.add_argument("--dataset", required=True, help="KIND:PATH with KIND coco | flickr30k | imagenet-grid | shapes | "
                   "webdataset | parquet (shapes: without a path generates scenes; webdataset: DIR, "
                   "DIR/{00000..00127}.tar or a URL)")  # fmt: skip
    p.add_argument("--methods", required=True, help="comma-separated methods, e.g. ij,fixlip,gradxinput,random")
    p.add_argument("--out", required=True, type=Path, help="run directory (created, or resumed if it exists)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N items")
    add_dataset_options(p, "reader option, e.g. -D split=val2017, -D n=500 (shapes), -D captions_per_image=1")
    p.add_argument("--option", "-O", action="append", default=[], type=_method_option, metavar="METHOD.KEY=VALUE",
                   help="method option, e.g. -O ij.n_steps=10 -O fixlip.budget=4096 (JSON values)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated registered metrics, see `dualex metrics` (default: dualex's own; 'all': "
                        "every registered one, plugins' included)")
    p.add_argument("--metric-option", "-M", action="append", default=[], type=_method_option,
                   metavar="METRIC.KEY=VALUE", help="option of a metric's function (JSON values), see "
                   "`dualex metrics --options`")  # fmt: skip
    p.add_argument("--faith-coalitions", type=int, default=1000, help="held-out coalitions per pair (default 1000)")
    p.add_argument("--faith-p", type=float, default=0.5, help="keep probability of those coalitions (default 0.5)")
    p.add_argument("--faith-design", default="product", choices=["product", "independent"],
                   help="held-out coalitions: an image x text grid of draws (product, default) or the paper's "
                        "distinct joint coalitions (independent)")
    p.add_argument("--faith-grid", type=int, default=100,
                   help="product design: coalitions per side (default 100: a 100 x 100 grid, 200 tower passes)")
    p.add_argument("--perturbation-order", default="auto", choices=["auto", "1", "2"],
                   help="insertion/deletion: greedy subsets for second-order explanations (auto) or ranking (1)")
    add_flags(p, {"--no-save-explanations": "do not write .safetensors files"})
    p.add_argument("--engine", default="local", choices=["local", "ray"], help="local (default) or ray (Ray Data)")
    add_values(p, int, {"--concurrency": (None, "ray: actors (default: one per GPU, 1 on CPU)")})
    p.add_argument("--ray-address", default=None,
                   help="ray: cluster address (default: $RAY_ADDRESS, else a new local Ray instance)")
    p.add_argument("--num-gpus-per-worker", type=float, default=1.0,
                   help="ray: GPUs per model actor (default 1; e.g. 0.25 packs four small models on a GPU)")
    p.add_argument("--max-retries", type=int, default=3,
                   help="ray: retries of a lost worker's or node's work before the run stops (default 3)")
    p.add_argument("--dtype", default=None, help="model dtype: float32, bfloat16 (bf16), float16 (fp16)")
    add_device(p)
    add_values(p, int, {
        "--internal-batch-size": (64, "masked pairs per forward pass (metrics)"),
        "--batch-size": (8, "items explained together by one call of each method (default 8; 1: item by item)"),
        "--shard-size": (16, "(item, method) units per result shard"),
    })
    add_flags(p, {"--retry-errors": "redo units that recorded an error", "--no-progress": "no progress bar"})

    s = command(sub, "summary", run_summary)
    add_run_dir(s, "the --out directory of `dualex evaluate`")


# arguments `evaluate` takes as parsed, under the same name
_PASSED_ON = ("limit", "engine", "device", "internal_batch_size", "batch_size", "shard_size", "retry_errors",
              "concurrency", "ray_address", "num_gpus_per_worker", "max_retries", "dtype")  # fmt: skip


def run_evaluate(args: argparse.Namespace) -> int:
    """Run explanation methods over a dataset and score them (resumable).

    Explain every (image, caption) item of a dataset with each method, score the explanations (pointing games,
    insertion/deletion AID, p-faithfulness, completeness) and keep rows, explanation files and summary tables in
    RUN_DIR. Re-running the same command resumes where it stopped.
    """
    from dualex.evaluation.run import MetricOptions, evaluate

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    method_options: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for method, key, value in args.option:
        if method not in method_options:
            raise InputError(f"option {method}.{key} names method {method!r}, which is not in --methods")
        method_options[method][key] = value
    order = args.perturbation_order if args.perturbation_order == "auto" else int(args.perturbation_order)
    metric_options: dict[str, dict[str, Any]] = {}
    for metric, key, value in args.metric_option:
        metric_options.setdefault(metric, {})[key] = value
    metrics = MetricOptions(metrics=args.metrics, metric_options=metric_options, faith_p=args.faith_p,
                            faith_coalitions=args.faith_coalitions,
                            faith_design=args.faith_design, faith_grid=args.faith_grid, perturbation_order=order,
                            save_explanations=not args.no_save_explanations)  # fmt: skip
    res = evaluate(
        args.model,
        args.dataset,
        methods,
        args.out,
        method_options=method_options,
        metrics=metrics,
        dataset_options=dict(args.dataset_option),
        **{name: getattr(args, name) for name in _PASSED_ON},
        progress=False if args.no_progress else None,
    )
    print(res.summary)
    print(f"{res.units_run} unit(s) run now, {res.units_done_before} already done, {res.errors} with errors; "
          f"results in {res.run_dir}")  # fmt: skip
    return 0


def run_summary(args: argparse.Namespace) -> int:
    """Print the summary tables of an evaluate run.

    Recompute and print the summary tables of RUN_DIR (also rewrites RUN_DIR/summary/).
    """
    from dualex.evaluation.summary import write_summary

    print(write_summary(args.run_dir))
    return 0
