"""Command-line interface: ``dualex explain|evaluate|serve|export|bench|...``.

Each module of this package contributes a group of subcommands: a function ``add_parser(subparsers)``
(each parser it adds sets ``func`` to the function that runs it; ``ORDER`` places the group in
``--help``). Filling the registry `COMMANDS` imports every module here and registers its ``add_parser``
under the module's name, so a new subcommand is a new module here; a plugin module registers its own
group with `register_command`. ``--plugins mod1,mod2`` (any position) imports plugin modules before the parser is built
(`dualex.plugins.load_plugins`). Errors dualex raises on purpose are printed as one plain line (exit
status 2) instead of a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from dualex.errors import DualexError
from dualex.plugins import Registry, first_line, import_submodules
from dualex.threads import configure_threads

AddParser = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
COMMANDS: Registry[AddParser] = Registry("command")
_collected = False


def _collect_builtin() -> None:
    """Register the ``add_parser`` of every module of this package under the module's name (once)."""
    global _collected
    if _collected:
        return
    _collected = True
    for name in import_submodules("dualex.cli"):
        mod = importlib.import_module(name)
        fn = getattr(mod, "add_parser", None)
        if fn is not None:
            COMMANDS.add(name.rsplit(".", 1)[-1], fn, summary=first_line(mod.__doc__), module=name,
                         order=getattr(mod, "ORDER", 50))  # fmt: skip


def register_command(
    name: str, *, summary: str, order: int = 50, override: bool = False
) -> Callable[[AddParser], AddParser]:
    """Register ``add_parser(subparsers)``, which adds the subcommand group ``name`` to ``dualex``.

    Args:
        name: The group's name (dualex's own are their modules' names: ``"evaluate"`` adds ``evaluate``
            and ``summary``).
        summary: One line naming what the group does and its subcommands.
        order: Position in ``dualex --help`` (lower first).
        override: Replace a group of the same name (else a second registration is an error).

    Raises:
        DuplicateNameError: another group has the name.
    """
    _collect_builtin()  # dualex's own groups first, so that a clash with one is reported here
    return COMMANDS.register(name, summary=summary, override=override, order=order)


def build_parser() -> argparse.ArgumentParser:
    """The ``dualex`` argument parser with every registered subcommand group."""
    parser = argparse.ArgumentParser(
        prog="dualex", description="Explain the similarity of dual encoders (CLIP, SigLIP, bi-encoders)."
    )
    from dualex import __version__

    parser.add_argument("--version", action="version", version=f"dualex {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _collect_builtin()
    for entry in sorted(COMMANDS.entries(), key=lambda e: int(e.details.get("order", 50))):
        entry.value(sub)
    threads_help = (
        "torch CPU threads (default: $DUALEX_THREADS, else $OMP_NUM_THREADS, else the CPUs idle now: "
        "usable CPUs minus the load average, at least 1)"
    )
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=threads_help)
    plugins_help = "import these plugin modules first (comma-separated; also $DUALEX_PLUGINS)"
    parser.add_argument("--plugins", default=None, metavar="MOD[,MOD]", help=plugins_help)
    for subparser in sub.choices.values():  # also accepted after the subcommand
        with contextlib.suppress(argparse.ArgumentError):  # unless the subcommand has its own --threads
            subparser.add_argument("--threads", type=int, default=argparse.SUPPRESS, metavar="N", help=threads_help)
        with contextlib.suppress(argparse.ArgumentError):
            subparser.add_argument("--plugins", default=argparse.SUPPRESS, metavar="MOD[,MOD]", help=plugins_help)
    return parser


def _plugins_in(argv: Sequence[str]) -> list[str]:
    """The modules named by ``--plugins X`` / ``--plugins=X`` anywhere in ``argv``."""
    out: list[str] = []
    for i, a in enumerate(argv):
        if a == "--plugins" and i + 1 < len(argv):
            out += argv[i + 1].split(",")
        elif a.startswith("--plugins="):
            out += a.split("=", 1)[1].split(",")
    return [m.strip() for m in out if m.strip()]


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
    """Run ``dualex`` with ``argv`` (default: the process's arguments); returns the exit status."""
    from dualex.plugins import load_plugins

    arguments = _attach_negative_values(list(sys.argv[1:] if argv is None else argv))
    try:  # before the parser is built: plugins may add subcommands
        load_plugins(_plugins_in(arguments))
    except DualexError as exc:
        print(f"dualex: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(arguments)
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
