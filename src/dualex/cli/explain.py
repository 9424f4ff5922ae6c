"""``dualex explain``: explain one pair from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dualex.cli.args import add_device, add_json, add_method, add_method_flags, add_values, command
from dualex.errors import InputError

if TYPE_CHECKING:
    from dualex.explanation import Explanation
    from dualex.models.base import Pair

# CLI flags that are options of some methods only: flag -> option name.
METHOD_FLAGS = {"--layer": "layer", "--n-steps": "n_steps"}


def _parse_box(text: str) -> tuple[float, float, float, float]:
    parts = [p for p in text.replace(",", " ").split() if p]
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"a box is 'x0,y0,x1,y1' in image pixels; got {text!r}")
    try:
        x0, y0, x1, y1 = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"box coordinates must be numbers; got {text!r}") from None
    return x0, y0, x1, y1


ORDER = 0  # position of these subcommands in ``dualex --help``


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``explain`` to ``sub``."""
    p = command(sub, "explain", run_explain)
    p.add_argument("image", help="image file (for text-text bi-encoders: the second sentence)")
    p.add_argument("caption", help="the caption (quote it)")
    p.add_argument("--model", default="shapes", help="model name: shapes | hf:ID_OR_DIR "
                   "| openclip:ARCH@TAG|FILE|random | sentence:ID_OR_DIR (default: shapes)")
    add_method(p)
    add_values(p, Path, {"--out": (None, "figure path (.png, .svg or .pdf)")})
    p.add_argument("--span", action="append", default=[], help="caption words to map onto the image (repeatable)")
    p.add_argument("--box", action="append", default=[], type=_parse_box,
                   help="image box x0,y0,x1,y1 (original pixels) to map onto the caption (repeatable)")
    add_method_flags(p, "extra method option KEY=VALUE (JSON values), e.g. -O 'baselines={\"text\": \"same_length\"}'")
    add_device(p)
    add_values(p, Path, {"--save": (None, "also save the explanation (.safetensors) for `dualex serve`")})
    add_json(p, "the explanation", stdout=True)


def explain_options(
    method: str, option_pairs: Sequence[tuple[str, object]], flags: dict[str, object]
) -> dict[str, object]:
    """The method's options from ``-O`` pairs and method-specific flags, checked against its signature.

    Raises:
        InputError: a flag the method does not take (naming the methods that do), an unknown option
            or a value of the wrong type.
    """
    from dualex.methods import check_method_options, list_methods
    from dualex.options import methods_with_option

    options = dict(option_pairs)
    for flag, value in flags.items():
        if value is None:
            continue
        key = METHOD_FLAGS[flag]
        fns = {name: info.fn for name, info in list_methods().items()}
        takers = methods_with_option(key, fns)
        if method in fns and method not in takers:
            raise InputError(f"{flag} does not apply to method {method!r}; it is an option of {', '.join(takers)}")
        options[key] = value
    check_method_options(method, options)
    return options


def check_regions(pair: Pair, spans: Sequence[str], boxes: Sequence[tuple[float, float, float, float]]) -> None:
    """Check ``--span`` words and ``--box`` boxes against the prepared caption and image (row 0).

    Raises:
        InputError: a span that names no caption token, a box outside the image.
    """
    from dualex.models.base import ImageInputs
    from dualex.spans import box_patch_mask, span_positions

    t = pair.text
    for s in spans:
        span_positions(s, text=t.texts[0], tokens=t.tokens[0], special=t.special[0].cpu(), offsets=t.offsets[0])
    if isinstance(pair.image, ImageInputs):
        for b in boxes:
            box_patch_mask(b, grid=pair.image.grid, transform=pair.image.transforms[0])


def run_explain(args: argparse.Namespace) -> int:
    """Explain one (image, caption) pair and write a figure.

    Explain why MODEL finds IMAGE and CAPTION similar, as token × patch interactions.
    """
    import dualex
    from dualex.methods import explain_pair
    from dualex.writable import check_writable

    # Everything a user can get wrong is checked before the model is loaded and the (slow) explanation.
    options = explain_options(args.method, args.option, {"--layer": args.layer, "--n-steps": args.n_steps})
    if args.out is not None:
        from dualex.plotting import FIGURE_SUFFIXES

        if args.out.suffix.lower() not in FIGURE_SUFFIXES:
            raise InputError(f"--out must end in {', '.join(FIGURE_SUFFIXES)}; got {str(args.out)!r}")
        check_writable(args.out, what="--out")
    if args.save is not None:
        check_writable(args.save, what="--save")
    model = dualex.load(args.model, device=args.device)
    pair = model.prepare(args.image, args.caption)
    check_regions(pair, args.span, args.box)
    ex = explain_pair(model, pair, args.method, **options)[0]
    if args.save:
        path = ex.save(args.save)
        print(f"explanation saved to {path}", file=sys.stderr)
    if args.out:
        from dualex.plotting import save_figure

        fig = ex.plot(spans=args.span or None, boxes=args.box or None)
        save_figure(fig, args.out)
        print(f"figure written to {args.out}", file=sys.stderr)
    if args.json:
        d = ex.to_json_dict()
        d["spans"] = {s: ex.image_map(s).tolist() for s in args.span}
        d["boxes"] = [{"box": list(b), "text_scores": ex.text_scores(b).tolist()} for b in args.box]
        json.dump(d, sys.stdout)
        print()
    else:
        print(summary(ex, args.span, args.box))
    return 0


def summary(ex: Explanation, spans: Sequence[str] = (), boxes: Sequence[tuple[float, ...]] = ()) -> str:
    """A short human-readable report of an explanation."""
    lines = [f"model {ex.model}  method {ex.method}  score {ex.score:.4f}  cosine {ex.cosine:.4f}  ({ex.units} units)"]
    c = ex.completeness()
    if "target" in c:
        lines.append(f"attributed {c['attributed']:.5f}  target {c['target']:.5f}  error {c['error']:+.2e}")
    for k, v in ex.diagnostics.items():
        lines.append(f"  {k}: {v:.5g}")
    words = ex.words()
    ts = ex.text_scores() if ex.cross is not None or ex.text_main is not None else None
    if ts is not None:
        lines.append("caption tokens (score over the whole image):")
        for i in ex.players.tolist():
            lines.append(f"  {words[i]!s:<16} {float(ts[i]):+.5f}")
    for s in spans:
        m = ex.image_map(s)
        r, c_ = divmod(int(m.flatten().argmax()), ex.grid[1])
        lines.append(f"span {s!r}: total {float(m.sum()):+.5f}, peak at patch (row {r}, col {c_})")
    for b in boxes:
        t = ex.text_scores(b)
        top = int(t.argmax())
        lines.append(f"box {tuple(b)}: strongest token {words[top]!r} ({float(t[top]):+.5f})")
    return "\n".join(lines)
