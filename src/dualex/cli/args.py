"""Building blocks of the subcommands: one call adds a subcommand, one call adds an argument many share.

`command` adds a subcommand that runs a function (whose docstring is the subcommand's help); the
``add_*`` helpers add the arguments several subcommands take (``--method``, ``--device``, ``-O``, ``-D``,
``--json``, ...), each with the same flags, type and default everywhere and only its help words passed in.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dualex.cli.options import parse_option

Subparsers = argparse._SubParsersAction  # the object `ArgumentParser.add_subparsers` returns
Run = Callable[[argparse.Namespace], int]

DEVICE_HELP = "cpu, cuda, cuda:1 ... (default: cuda if available)"
METHOD_HELP = "explanation method (default: ij); see `dualex methods`"


def command(sub: Subparsers[argparse.ArgumentParser], name: str, run: Run) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` to ``sub``; it runs ``run(args)``, whose docstring is its help.

    The docstring's first line (first letter lower-cased, no full stop) is the line of ``dualex --help``;
    the paragraph after it is the text of ``dualex NAME --help``.

    Args:
        sub: The subparsers of ``dualex``.
        name: The subcommand (``dualex NAME ...``).
        run: Runs the subcommand with the parsed arguments; returns the exit status.

    Returns:
        The subcommand's parser, to add its arguments to.
    """
    short, long = command_texts(run)
    p = sub.add_parser(name, help=short, description=long)
    p.set_defaults(func=run)
    return p


def command_texts(run: Run) -> tuple[str, str]:
    """``(help, description)`` of the subcommand that runs ``run``, from its docstring (see `command`)."""
    first, _, rest = inspect.cleandoc(run.__doc__ or "").partition("\n\n")
    short = " ".join(first.split()).rstrip(".")
    return short[:1].lower() + short[1:], " ".join(rest.split())


def add_device(p: argparse.ArgumentParser, help: str | None = DEVICE_HELP) -> None:
    """``--device`` (default None: cuda if available)."""
    p.add_argument("--device", default=None, help=help)


def add_json(p: argparse.ArgumentParser, what: str, records: bool = False, stdout: bool = False) -> None:
    """``--json``: print ``what`` (e.g. ``"the table"``; with ``records``: as a list of records) as JSON."""
    p.add_argument("--json", action="store_true",
                   help=f"print {what} as JSON" + (" records" if records else "") + (" on stdout" if stdout else ""))


def add_confidence(p: argparse.ArgumentParser) -> None:
    """``--confidence`` (a float, default 0.95): the coverage of confidence intervals."""
    p.add_argument("--confidence", type=float, default=0.95, help="interval coverage (default: 0.95)")


def add_seed(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--seed`` (an integer, default 0)."""
    p.add_argument("--seed", type=int, default=0, help=help)


def add_method(p: argparse.ArgumentParser, help: str = METHOD_HELP, default: str | None = "ij") -> None:
    """``--method NAME`` (default ``ij``)."""
    p.add_argument("--method", default=default, help=help)


def add_method_options(p: argparse.ArgumentParser, help: str, metavar: str | None = None) -> None:
    """``--option/-O KEY=VALUE`` (repeatable, JSON values): the method's options as ``(key, value)`` pairs."""
    p.add_argument("--option", "-O", action="append", default=[], type=parse_option, metavar=metavar, help=help)


def add_method_flags(p: argparse.ArgumentParser, option_help: str) -> None:
    """``--layer``, ``--n-steps`` (options of some methods only, see `dualex.cli.explain.METHOD_FLAGS`) and ``-O``."""
    add_values(p, int, {"--layer": (None, "split layer for both towers (default: method's)"),
                        "--n-steps": (None, "integration steps (ij)")})  # fmt: skip
    add_method_options(p, option_help)


def add_dataset_options(p: argparse.ArgumentParser, help: str) -> None:
    """``--dataset-option/-D KEY=VALUE`` (repeatable, JSON values): options of the dataset reader."""
    p.add_argument("--dataset-option", "-D", action="append", default=[], type=parse_option, metavar="KEY=VALUE",
                   help=help)  # fmt: skip


def add_run_dir(p: argparse.ArgumentParser, help: str = "run directory written by `dualex evaluate`") -> None:
    """The positional ``run_dir`` (a `Path`)."""
    p.add_argument("run_dir", type=Path, help=help)


def add_paths(p: argparse.ArgumentParser) -> None:
    """The positional ``path`` (one or more `Path`): what the viewer shows."""
    p.add_argument("path", type=Path, nargs="+", help="run directories, folders of explanation files, or single files")


def add_flags(p: argparse.ArgumentParser, flags: dict[str, str]) -> None:
    """On/off options: ``{"--flag": help}``, each False unless given."""
    for flag, help in flags.items():
        p.add_argument(flag, action="store_true", help=help)


def add_values(p: argparse.ArgumentParser, kind: Any, values: dict[str, tuple[Any, str]]) -> None:
    """Options of one type: ``{"--name": (default, help)}``, each parsed with ``kind`` (int, float, Path, str)."""
    for flag, (default, help) in values.items():
        p.add_argument(flag, type=kind, default=default, help=help)
