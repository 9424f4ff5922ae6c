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
