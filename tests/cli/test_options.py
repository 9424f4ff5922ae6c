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


def test_every_cli_module_with_subcommands_registers_them():
    import importlib

    from dualex.cli import COMMANDS
    from dualex.plugins import import_submodules

    registered = {e.value for e in COMMANDS.entries()}
    for name in import_submodules("dualex.cli"):
        fn = getattr(importlib.import_module(name), "add_parser", None)
        assert fn is None or fn in registered, f"{name}.add_parser is not decorated with @register_command"
