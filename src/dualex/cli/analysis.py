"""Subcommands ``dualex classwise | mismatch | failures | finetune | compare`` (the papers' analyses)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from dualex.cli.args import (
    add_confidence,
    add_dataset_options,
    add_device,
    add_flags,
    add_json,
    add_method,
    add_method_options,
    add_run_dir,
    add_seed,
    add_values,
    command,
)
from dualex.errors import InputError

ORDER = 20  # position of these subcommands in ``dualex --help``


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``classwise``, ``mismatch``, ``failures``, ``finetune`` and ``compare`` to ``sub``."""
    c = command(sub, "classwise", run_classwise)
    add_run_dir(c)
    c.add_argument("--metric", default="pg_energy_t2i",
                   help="pg_energy_t2i (default), pg_hit_t2i, pg_energy_i2t, pg_hit_i2t, pgr or span_box")
    add_method(c, "only this method (default: all methods of the run)", default=None)
    add_values(c, Path, {"--out": (None, "bar plot (.png, .svg or .pdf)"),
                         "--csv": (None, "also write the table as CSV")})  # fmt: skip
    add_values(c, int, {"--min-count": (1, "leave out classes with fewer objects (default: 1)")})
    add_confidence(c)
    add_json(c, "the table", records=True)

    m = command(sub, "mismatch", run_mismatch)
    m.add_argument("run_dir", type=Path, nargs="?", help="run directory (not needed with --hard-negatives)")
    add_method(m, "only this method (run) / the method to explain with (ij)", default=None)
    add_flags(m, {
        "--all-pairs": "use every object pair of captions naming two or more objects (default: exactly two)",
        "--disjoint": "ignore patches that both boxes cover",
        "--hard-negatives": "swap an object in the caption and explain",
    })
    m.add_argument("--model", default=None, help="model for --hard-negatives (e.g. shapes, hf:DIR)")
    m.add_argument("--dataset", default=None, help="KIND:PATH for --hard-negatives (coco:DIR, ...; shapes: generates "
                   "scenes, -D n=N sets how many)")
    m.add_argument("--limit", type=int, default=50, help="items for --hard-negatives (default: 50)")
    add_dataset_options(m, "dataset reader option for --hard-negatives (e.g. -D n_objects=2 for shapes)")
    m.add_argument("--categories", default=None,
                   help="comma-separated class names to swap in (default: the classes found in the items)")
    m.add_argument("--swap", default="any", choices=("any", "colour", "shape"),
                   help="shapes data: swap colours, shapes or either (default: any)")
    add_flags(m, {"--compare-original": "also explain the true captions"})
    add_seed(m)
    add_device(m, help=None)
    add_method_options(m, "method option KEY=VALUE (JSON values) for --hard-negatives")
    add_values(m, Path, {"--out": (None, "write the per-pair table (.csv) and the shares (.json)")})
    add_json(m, "the shares")

    f = command(sub, "failures", run_failures)
    add_run_dir(f)
    add_method(f, "method to analyse (default: every method with span maps)", default=None)
    f.add_argument("--metric", default="pg_hit_t2i", help="failure metric (default: pg_hit_t2i)")
    f.add_argument("--threshold", type=float, default=0.5, help="a row fails when metric < threshold (0.5)")
    f.add_argument("--k", default="auto", help="number of clusters or 'auto' (best silhouette, default)")
    add_values(f, int, {"--k-max": (8, "largest k tried by auto (default: 8)"),
                        "--examples": (5, "examples per cluster (default: 5)")})  # fmt: skip
    add_seed(f)
    f.add_argument("--out", type=Path, default=None,
                   help="directory for failures.json and failures.md (default: RUN_DIR/analysis)")

    t = command(sub, "finetune", run_finetune)
    t.add_argument("--model", required=True, help="model to start from (hf:DIR, shapes, openclip:ARCH@FILE)")
    t.add_argument("--dataset", required=True, help="coco:PATH (captions JSON or a COCO directory)")
    t.add_argument("--split", default="train", help="captions file to use in a COCO directory (default: train)")
    t.add_argument("--out", type=Path, required=True, help="output directory for the fine-tuned model")
    add_values(t, int, {"--epochs": (5, "epochs (default: 5)"),
                        "--batch-size": (64, "batch size (default: 64, as in exCLIP)")})  # fmt: skip
    add_values(t, float, {
        "--weight-decay": (1e-4, "AdamW weight decay (default: 1e-4)"),
        "--lr": (1e-5, "peak learning rate (default: 1e-5)"),
        "--warmup": (0.1, "share of steps with linear warm-up (default: 0.1)"),
    })
    add_values(t, int, {"--limit": (None, "use at most this many captions")})
    add_seed(t)
    add_flags(t, {"--amp": "bfloat16 autocast on CUDA"})
    add_device(t, help="cpu, cuda, ... (default: cuda if available)")

    k = command(sub, "compare", run_compare)
    k.add_argument("runs", type=Path, nargs="+", help="run directories; the first is the reference")
    add_values(k, Path, {"--out": (None, "output directory (default: print the tables only)")})
    k.add_argument("--labels", default=None, help="comma-separated run labels (default: directory (model))")
    k.add_argument("--metric", action="append", default=None,
                   help="metric to compare (repeatable; default: every metric all runs have)")
    k.add_argument("--methods", default=None,
                   help="comma-separated method per run, to compare different methods on the same items")
    k.add_argument("--plot-metric", default=None, help="metric of the figure (default: first with classes)")
    add_flags(k, {"--no-classes": "overall comparisons only"})
    add_confidence(k)
    add_values(k, int, {"--n-boot": (2000, "bootstrap resamples (default: 2000)")})
    add_seed(k, "bootstrap seed (default: 0)")
    add_json(k, "the table", records=True)


# ---------------------------------------------------------------------------------------------------- classwise
def run_classwise(args: argparse.Namespace) -> int:
    """Pointing-game scores per object class of a run, with confidence intervals and a bar plot.

    Per-class grounding of an evaluation run: mean, count and confidence interval of an object-level metric per
    method and class, best class first (Wilson intervals for hit rates, percentile bootstrap for energies).
    """
    from dualex.analysis.classwise import classwise_grounding, format_table, plot_classwise

    table = classwise_grounding(
        args.run_dir, metric=args.metric, method=args.method, confidence=args.confidence, min_count=args.min_count
    )
    if args.json:
        json.dump(json.loads(table.to_json(orient="records")), sys.stdout, indent=1)
        print()
    else:
        print(format_table(table, metric=args.metric, confidence=args.confidence))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
        print(f"table written to {args.csv}", file=sys.stderr)
    if args.out:
        plot_classwise(table, metric=args.metric, out=args.out)
        print(f"plot written to {args.out}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------------- mismatch
def run_mismatch(args: argparse.Namespace) -> int:
    """Share of positive matching and negative cross span-box interactions (and hard negatives).

    For captions naming two objects: the share of object pairs whose matching interaction Σ cross[span_a, box_a] is
    positive and whose cross interaction Σ cross[span_a, box_b] is negative. With --hard-negatives: explain images
    with a caption where one object was swapped and report the share where the swapped words interact negatively
    with the object's box.
    """
    if args.hard_negatives:
        return _run_hard_negatives(args)
    if args.run_dir is None:
        raise InputError("give a RUN_DIR, or --hard-negatives with --model and --dataset")
    from dualex.analysis.mismatch import mismatch_analysis

    res = mismatch_analysis(args.run_dir, method=args.method, exactly_two=not args.all_pairs, disjoint=args.disjoint)
    if args.json:
        json.dump(json.loads(res.shares.to_json(orient="records")), sys.stdout, indent=1)
        print()
    else:
        print(res.to_text())
    if args.out:
        _write_table(res.pairs, res.shares.to_dict(orient="records"), args.out)
    return 0


def _run_hard_negatives(args: argparse.Namespace) -> int:
    import dualex
    from dualex.analysis.mismatch import hard_negative_analysis, shapes_swapper
    from dualex.methods import check_method_options

    if not args.model or not args.dataset:
        raise InputError("--hard-negatives needs --model NAME and --dataset KIND:PATH")
    check_method_options(args.method or "ij", dict(args.option))  # before the model and data are loaded
    kind, items = load_items(args.dataset, limit=args.limit, **dict(args.dataset_option))
    categories = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    swapper = shapes_swapper(args.swap) if kind == "shapes" and not categories else None
    model = dualex.load(args.model, device=args.device)
    res = hard_negative_analysis(
        model,
        items,
        method=args.method or "ij",
        swapper=swapper,
        dataset_kind=kind,
        categories=categories,
        compare_original=args.compare_original,
        seed=args.seed,
        **dict(args.option),
    )
    if args.json:
        json.dump(res.summary, sys.stdout, indent=1)
        print()
    else:
        print(res.to_text())
    if args.out:
        _write_table(res.rows, res.summary, args.out)
    return 0


def load_items(spec: str, *, limit: int | None = None, **options: Any) -> tuple[str, list[Any]]:
    """Dataset items for ``KIND:PATH`` from the `dualex.datasets` readers; returns (kind, items)."""
    try:
        from dualex.datasets import open_dataset
    except ImportError:
        raise InputError("the dataset readers (dualex.datasets) are not available in this dualex") from None
    ds = open_dataset(spec, limit=limit, **options)
    return ds.kind, list(ds)


def _write_table(df: Any, summary: Any, out: Path) -> None:
    out = Path(out)
    csv = out if out.suffix == ".csv" else out.with_suffix(".csv")
    csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(csv, index=False)
    csv.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print(f"pairs written to {csv}, shares to {csv.with_suffix('.json')}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------- failures
def run_failures(args: argparse.Namespace) -> int:
    """Cluster the objects whose grounding fails and describe each cluster.

    Features of every failed object (box size and coverage, object count, class and co-occurrence rarity,
    attribution spread and location), standardised against all objects, clustered with k-means (k by silhouette) and
    labelled by their dominant features.
    """
    from dualex.analysis.common import read_rows
    from dualex.analysis.failure_modes import failure_modes, write_report

    k: int | str = args.k if args.k == "auto" else _int(args.k, "--k")
    df = read_rows(args.run_dir)
    if args.method:
        methods = [args.method]
    else:
        methods = list(dict.fromkeys(df.loc[(df["level"] == "object") & df["pg_energy_t2i"].notna(), "method"]))
        methods = methods or list(dict.fromkeys(df["method"]))
    results = []
    for meth in methods:
        try:
            results.append(
                failure_modes(
                    df, method=meth, metric=args.metric, threshold=args.threshold, k=k, k_max=args.k_max,
                    n_examples=args.examples, seed=args.seed, run_dir=args.run_dir,
                )
            )
        except InputError as exc:
            if args.method:
                raise
            print(f"skipping method {meth}: {exc}", file=sys.stderr)
    if not results:
        raise InputError("no method of this run could be analysed")
    out = args.out or Path(args.run_dir) / "analysis"
    paths = write_report(results, out)
    for r in results:
        print(f"method {r.method}: {r.n_failed} of {r.n_objects} objects fail ({r.criterion}), {r.k} cluster(s)")
        for c in r.clusters:
            ex = ", ".join(f"{e['item_id']}#{e['object']}" for e in c.examples[:3])
            print(f"  [{c.cluster}] {c.size:>5} ({c.share:.0%})  {c.label}  [{c.category}]  e.g. {ex}")
    print(f"report written to {paths[0]} and {paths[1]}", file=sys.stderr)
    return 0


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{name} must be an integer or 'auto', got {text!r}") from None


# ---------------------------------------------------------------------------------------------------- compare
def run_compare(args: argparse.Namespace) -> int:
    """Compare runs (models, methods, fine-tuned vs base) on their shared units, with paired tests.

    Match two or more runs on their shared (item, method, object) units and report per metric (and per object class)
    each run's mean, the mean paired difference against the first run with a seeded paired-bootstrap interval, a
    Wilcoxon signed-rank test, and how many units matched or were left out and why. Writes compare.csv, compare.md,
    units.csv, counts.json and compare.png.
    """
    from dualex.analysis.compare import compare

    def split(text: str | None) -> list[str] | None:
        return [t.strip() for t in text.split(",")] if text else None

    comp = compare(
        args.runs,
        labels=split(args.labels),
        metrics=args.metric,
        methods=split(args.methods),
        by_class=not args.no_classes,
        confidence=args.confidence,
        n_boot=args.n_boot,
        seed=args.seed,
    )
    if args.json:
        print(comp.table.to_json(orient="records"))
    else:
        print(comp.to_markdown(classes=not args.no_classes))
    if args.out:
        paths = comp.save(args.out, metric=args.plot_metric)
        print(f"written: {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
        print(f"side by side in the viewer: {shlex.join(['dualex', 'serve', *map(str, args.runs)])}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------------- finetune
def run_finetune(args: argparse.Namespace) -> int:
    """Contrastive in-domain fine-tuning of a CLIP on a COCO-format dataset.

    Fine-tune all weights of a transformers CLIP (or SigLIP) with its own contrastive loss (symmetric InfoNCE;
    AdamW, weight decay 1e-4, batch 64 as in exCLIP) and save it so that `dualex.load('hf:OUT')` reads it.
    """
    import dualex
    from dualex.training.finetune import coco_caption_pairs, finetune

    kind, sep, path = args.dataset.partition(":")
    if not sep or kind != "coco" or not path:
        raise InputError(f"--dataset must be coco:PATH (a COCO-format captions dataset), got {args.dataset!r}")
    pairs = coco_caption_pairs(path, split=args.split)
    if args.limit:
        pairs = pairs[: args.limit]
    model = dualex.load(args.model, device=args.device)
    res = finetune(
        model, pairs, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup=args.warmup, seed=args.seed, amp=args.amp,
    )
    print(
        f"{res.steps} steps on {res.n_images} images ({res.n_pairs} captions): contrastive loss "
        f"{res.loss_before:.4f} -> {res.loss_after:.4f}, in-batch top-1 {res.recall_before:.1%} -> "
        f"{res.recall_after:.1%}"
    )
    print(f"model saved to {args.out}; load it with dualex.load({res.load_name!r})")
    return 0
