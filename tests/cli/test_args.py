"""Tests of dualex.cli.args: subcommands from a run function's docstring, shared arguments."""

from __future__ import annotations

import argparse

from dualex.cli import build_parser
from dualex.cli.args import add_device, add_json, add_method_flags, add_values, command, command_texts


def _run_hello(args: argparse.Namespace) -> int:
    """Say hello to the world.

    Print a greeting
    on stdout.

    It is the friendliest subcommand.
    """
    return 0


def test_command_takes_help_and_description_from_the_docstring() -> None:
    short, long = command_texts(_run_hello)
    assert (short, long) == ("say hello to the world", "Print a greeting on stdout. It is the friendliest subcommand.")
    parser = argparse.ArgumentParser(prog="x")
    sub = parser.add_subparsers(dest="command")
    p = command(sub, "hello", _run_hello)
    add_device(p)
    add_json(p, "the greeting", records=True)
    add_method_flags(p, "method option")
    add_values(p, int, {"--times": (2, "how often")})
    args = parser.parse_args(["hello", "-O", "a=1", "--layer", "3", "--json"])
    assert args.func is _run_hello
    got = (args.device, args.json, args.layer, args.n_steps, args.option, args.times)
    assert got == (None, True, 3, None, [("a", 1)], 2)
    assert "say hello to the world" in parser.format_help()
    assert "Print a greeting on stdout." in p.format_help()
    assert "print the greeting as JSON records" in p.format_help()


def test_every_subcommand_has_a_help_line_and_a_description() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, p in sub.choices.items():
        if name == "hello-test":  # a plugin of another test
            continue
        assert helps[name] and helps[name][0].islower() and not helps[name].endswith("."), name
        assert p.description and len(p.description) > 20, name
        assert callable(p.get_default("func")), name
