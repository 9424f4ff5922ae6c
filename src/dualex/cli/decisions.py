"""``dualex contrast``, ``dualex zero-shot`` and ``dualex rank``: explain decisions from the command line.

Each writes its figure and the saved explanations to ``--out`` (a folder), and prints a short report:

* ``contrast IMAGE "A" "B"``: why IMAGE is closer to caption A than to caption B (``figure.png``,
  ``a.safetensors``, ``b.safetensors``, ``contrast.json``; `dualex.Contrast.load` reads the folder);
* ``zero-shot IMAGE --classes ... --templates ...``: the zero-shot classifier's scores and why it picks
  its class (the contrast folder plus ``decision.json``);
* ``rank QUERY GALLERY -k 5``: GALLERY (a folder of images, or a .txt file of captions) ranked by
  similarity to QUERY (a caption, or an image file), the top k explained (``ranking.json``,
  ``rank_1.safetensors`` ..., ``rank_1.png`` ..., and ``figure.png``: why the first rather than the second).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dualex.cli import register_command
from dualex.cli.args import add_device, add_json, add_method, add_method_flags, command
from dualex.errors import InputError


def _common(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--model", default="shapes", help="model name (default: shapes); see `dualex explain --help`")
    add_method(p)
    p.add_argument("--out", type=Path, default=Path("out") / out, help=f"output folder (default: out/{out})")
    add_method_flags(p, "extra method option KEY=VALUE (JSON values), e.g. -O units=score")
    add_device(p)
    add_json(p, "the result", stdout=True)


@register_command(
    "decisions", order=1, summary="explain decisions: why A rather than B, zero-shot classes, rankings "
    "(contrast, zero-shot, rank)",
)
def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``contrast``, ``zero-shot`` and ``rank`` to ``sub``."""
    c = command(sub, "contrast", run_contrast)
    c.add_argument("x", help="the shared input: an image file, or a caption")
    c.add_argument("a", help="the first competitor (a caption for an image X, an image file for a caption X)")
    c.add_argument("b", help="the second competitor")
    _common(c, "contrast")

    z = command(sub, "zero-shot", run_zero_shot)
    z.add_argument("image", help="image file")
    z.add_argument("--classes", nargs="+", required=True, help="class names (at least two)")
    z.add_argument("--templates", nargs="+", default=["{}"], help="prompt templates with {} for the class name")
    z.add_argument("--versus", default=None, help="contrast the prediction with this class instead of the runner-up")
    _common(z, "zero-shot")

    r = command(sub, "rank", run_rank)
    r.add_argument("query", help="a caption, or an image file")
    r.add_argument("gallery", type=Path, help="a folder of images, or a .txt file of captions")
    r.add_argument("-k", type=int, default=5, help="results to explain (default: 5)")
    _common(r, "rank")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    from dualex.cli.explain import explain_options

    return explain_options(args.method, args.option, {"--layer": args.layer, "--n-steps": args.n_steps})


def _out_dir(path: Path) -> Path:
    from dualex.writable import check_writable

    if path.exists() and not path.is_dir():
        raise InputError(f"--out {str(path)!r} is a file; name a folder")
    check_writable(path / "figure.png", what="--out")
    return path


def _save_figure(fig: Any, path: Path) -> None:
    from dualex.plotting import save_figure

    save_figure(fig, path)


def _contrast_report(con: Any) -> list[str]:
    sa, sb = con.similarities
    d = con.decomposition()
    lines = [
        f"A: {con.labels[0]}  s = {sa:.4f}",
        f"B: {con.labels[1]}  s = {sb:.4f}",
        f"difference {con.difference:+.4f} ({con.units} units, method {con.method})",
        "decomposition: " + ", ".join(f"{k} {v:+.4g}" for k, v in d.items()),
    ]
    return lines


def run_contrast(args: argparse.Namespace) -> int:
    """Why an image is closer to caption A than to caption B.

    Explain s(X, A) − s(X, B): X an image (A, B captions) or a caption (A, B image files). Writes figure.png and the
    two explanations to --out.
    """
    import dualex

    options = _options(args)
    out = _out_dir(args.out)
    model = dualex.load(args.model, device=args.device)
    con = dualex.contrast(model, args.x, args.a, args.b, args.method, **options)
    con.save(out)
    _save_figure(con.plot(), out / "figure.png")
    print(f"figure and explanations written to {out}", file=sys.stderr)
    if args.json:
        json.dump(con.to_json_dict(), sys.stdout)
        print()
    else:
        print("\n".join(_contrast_report(con)))
    return 0


def run_zero_shot(args: argparse.Namespace) -> int:
    """Zero-shot classify an image and explain why this class.

    Classify IMAGE among --classes with a prompt ensemble (class embedding = normalised mean of the normalised
    template embeddings) and explain the prediction against the runner-up (or --versus).
    """
    import dualex
    from dualex.decisions.zero_shot import prompts

    options = _options(args)
    prompts(args.classes, args.templates)  # template errors before the model loads
    out = _out_dir(args.out)
    model = dualex.load(args.model, device=args.device)
    d = dualex.zero_shot(model, args.image, args.classes, args.templates, args.method, versus=args.versus, **options)
    d.contrast.save(out)
    _save_figure(d.plot(), out / "figure.png")
    probs = d.probabilities()
    summary = {
        "classes": d.classes,
        "templates": d.templates,
        "scores": d.scores.tolist(),
        "probabilities": probs.tolist(),
        "ensemble_weights": d.weights.tolist(),
        "predicted": d.predicted,
        "versus": d.versus,
    }
    (out / "decision.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"figure, explanations and decision.json written to {out}", file=sys.stderr)
    if args.json:
        json.dump({**summary, "contrast": d.contrast.to_json_dict()}, sys.stdout)
        print()
        return 0
    for i in d.ranking:
        print(f"  {d.classes[i]:<20} score {float(d.scores[i]):+.4f}  p {float(probs[i]):.3f}")
    print(f"predicted {d.predicted!r}; why rather than {d.versus!r}:")
    print("\n".join(_contrast_report(d.contrast)))
    return 0


def run_rank(args: argparse.Namespace) -> int:
    """Rank a gallery by similarity to a query and explain the top k.

    Rank GALLERY (a folder of images, or a .txt file of captions, one per line) by similarity to QUERY (a caption,
    or an image file) and explain the top k.
    """
    import dualex

    options = _options(args)
    if isinstance(args.k, bool) or args.k < 0:
        raise InputError(f"-k must be ≥ 0, got {args.k}")
    if not args.gallery.exists():
        raise InputError(f"gallery {str(args.gallery)!r} does not exist")
    out = _out_dir(args.out)
    model = dualex.load(args.model, device=args.device)
    r = dualex.explain_ranking(model, args.query, args.gallery, k=args.k, method=args.method, **options)
    out.mkdir(parents=True, exist_ok=True)
    for rank, ex in enumerate(r.explanations, 1):
        ex.save(out / f"rank_{rank}.safetensors")
        _save_figure(ex.plot(), out / f"rank_{rank}.png")
    if r.k >= 2:
        _save_figure(r.contrast(0, 1).plot(), out / "figure.png")
    summary = {
        "query": r.query,
        "query_side": r.query_side,
        "order": r.order.tolist(),
        "labels": r.labels,
        "scores": r.scores.tolist(),
        "explained": r.k,
    }
    (out / "ranking.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"ranking.json, {r.k} explanations and figures written to {out}", file=sys.stderr)
    if args.json:
        json.dump(summary, sys.stdout)
        print()
        return 0
    for rank, (i, label, score) in enumerate(r.top(max(r.k, min(10, len(r.labels)))), 1):
        mark = "*" if rank <= r.k else " "
        print(f"{mark}{rank:>3}. {label:<40} score {score:+.4f}  (item {i})")
    return 0
