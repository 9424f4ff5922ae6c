"""Command-line interface: ``dualex explain|evaluate|serve|export|bench|...``.

Each module of this package contributes subcommands through ``add_parser(subparsers)`` (the parser sets
``func`` to the function that runs it); `build_parser` imports them all, so a new subcommand is a new
module here. Errors dualex raises on purpose are printed as one plain line (exit status 2) instead of a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from dualex.errors import DualexError
from dualex.plugins import import_submodules
from dualex.threads import configure_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dualex", description="Explain the similarity of dual encoders (CLIP, SigLIP, bi-encoders)."
    )
    from dualex import __version__

    parser.add_argument("--version", action="version", version=f"dualex {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [importlib.import_module(name) for name in import_submodules("dualex.cli")]
    for mod in sorted(modules, key=lambda m: getattr(m, "ORDER", 50)):
        if hasattr(mod, "add_parser"):
            mod.add_parser(sub)
    threads_help = (
        "torch CPU threads (default: $DUALEX_THREADS, else $OMP_NUM_THREADS, else the CPUs idle now: "
        "usable CPUs minus the load average, at least 1)"
    )
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=threads_help)
    for subparser in sub.choices.values():  # also accepted after the subcommand
        with contextlib.suppress(argparse.ArgumentError):  # unless the subcommand has its own --threads
            subparser.add_argument("--threads", type=int, default=argparse.SUPPRESS, metavar="N", help=threads_help)
    return parser


_NUMBER_LIST = re.compile(r"^-?\d*\.?\d+([,\s]+-?\d*\.?\d+)*$")


def _attach_negative_values(argv: list[str]) -> list[str]:
    """``--box -10,-10,20,20`` -> ``--box=-10,-10,20,20`` (argparse would read the value as an option)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--box" and i + 1 < len(argv) and argv[i + 1].startswith("-") and _NUMBER_LIST.match(argv[i + 1]):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:  # fmt: skip
    """Warnings as one line on stderr (``dualex: warning: ...``), without the source line."""
    print(f"dualex: warning: {message}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_negative_values(list(sys.argv[1:] if argv is None else argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            configure_threads(getattr(args, "threads", None))
            return int(args.func(args) or 0)
        except DualexError as exc:
            print(f"dualex: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("dualex: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
