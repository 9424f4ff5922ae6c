"""``dualex methods|metrics|datasets|models``: list what is registered (built in, or from plugins)."""

from __future__ import annotations

import argparse
import inspect

from dualex.cli.args import add_flags, command

ORDER = 5  # position of these subcommands in ``dualex --help``


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``methods``, ``metrics``, ``datasets`` and ``models``."""
    m = command(sub, "methods", run_methods)
    add_flags(m, {"--options": "also list each method's options and defaults"})
    t = command(sub, "metrics", run_metrics)
    add_flags(t, {"--options": "also list each metric's options and defaults"})
    command(sub, "datasets", run_datasets)
    command(sub, "models", run_models)


def _options(fn: object, skip: int) -> str:
    params = list(inspect.signature(fn).parameters.values())[skip:]  # type: ignore[arg-type]
    opts = [f"{p.name}={p.default!r}" for p in params if p.default is not inspect.Parameter.empty]
    return ", ".join(opts) or "none"


def _also(aliases: list[str]) -> str:
    return f"  (also: {', '.join(aliases)})" if aliases else ""


def run_methods(args: argparse.Namespace) -> int:
    """List the explanation methods.

    List the explanation methods: name, order (1: per token/patch, 2: interactions), a one-line summary and the cost
    per pair. With --options, also each method's options and their defaults (pass them with `dualex explain -O
    KEY=VALUE` or `dualex evaluate -O METHOD.KEY=VALUE`).
    """
    from dualex.methods import list_methods

    for name, info in list_methods().items():
        print(f"{name:<18} order {info.order}  {info.summary}" + (f"  [cost: {info.cost}]" if info.cost else ""))
        if getattr(args, "options", False):
            print(f"{'':<18} options: {_options(info.fn, 2)}")
    return 0


def run_metrics(args: argparse.Namespace) -> int:
    """List the metrics of `dualex evaluate --metrics`.

    List the metrics: name, level (pair or object), what it needs, a one-line summary, and the result columns it
    writes. With --options, also its options (`dualex evaluate -M NAME.KEY=VALUE`).
    """
    from dualex.metrics.base import METRICS

    for e in METRICS.entries():
        info = e.value
        needs = f"  needs {', '.join(info.needs)}" if info.needs else ""
        also = _also(METRICS.aliases_of(e.name))
        print(f"{e.name:<20} {info.level:<6} {info.summary}{needs}{also}" + ("" if info.default else "  [not default]"))
        for col, about in info.columns.items():
            print(f"{'':<20}   {col:<24} {about}")
        if getattr(args, "options", False):
            print(f"{'':<20}   options: {_options(info.fn, 4)}")
    return 0


def run_datasets(args: argparse.Namespace) -> int:
    """List the dataset readers of --dataset KIND:PATH.

    List the dataset kinds (--dataset KIND:PATH), aliases included.
    """
    from dualex.datasets.base import READERS

    for e in sorted(READERS.entries(), key=lambda e: e.name):
        print(f"{e.name:<16} {e.summary}{_also(READERS.aliases_of(e.name))}")
    return 0


def run_models(args: argparse.Namespace) -> int:
    """List the model name prefixes and names.

    List the model name prefixes (PREFIX:SPEC), the model names that stand for others (shapes) and
    py:module:function.
    """
    from dualex.models.registry import ALIASES, LOADERS

    for e in sorted(LOADERS.entries(), key=lambda e: e.name):
        print(f"{e.name + ':...':<16} {e.summary}")
    for a in ALIASES.entries():
        print(f"{a.name:<16} {a.summary}")
    print(f"{'py:MOD:FN':<16} a Python function returning a DualEncoder")
    return 0
