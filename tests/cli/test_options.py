from __future__ import annotations

import argparse

import pytest

from dualex.cli.options import parse_option


def test_parse_option_reads_json_values_and_normalises_keys():
    assert parse_option("n-steps=10") == ("n_steps", 10)
    assert parse_option(" split =val2017") == ("split", "val2017")  # not JSON: kept as text
    assert parse_option("sides=[\"text\"]") == ("sides", ["text"])
    assert parse_option("x=") == ("x", "")


@pytest.mark.parametrize("text", ["novalue", "=3", " =3"])
def test_parse_option_rejects_malformed(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_option(text)


def test_command_groups_come_from_the_package_and_from_plugins(capsys):
    from dualex.cli import COMMANDS, build_parser, main, register_command
    from dualex.plugins import DuplicateNameError

    build_parser()
    assert {"explain", "evaluate", "listing", "viewer", "shards"} <= set(COMMANDS.names())
    assert COMMANDS.get("evaluate").summary.startswith("``dualex evaluate``")  # the module's docstring

    def add_hello(sub):
        h = sub.add_parser("hello-test", help="say hello (a test plugin)")
        h.set_defaults(func=lambda args: print("hello from a plugin") or 0)

    register_command("hello_test", summary="a test plugin's group")(add_hello)
    try:
        assert main(["hello-test"]) == 0 and "hello from a plugin" in capsys.readouterr().out
        with pytest.raises(DuplicateNameError, match="command 'evaluate'"):
            register_command("evaluate", summary="a second evaluate")(add_hello)
    finally:
        COMMANDS.remove("hello_test")
