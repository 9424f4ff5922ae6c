"""Thread defaults: explicit settings win, otherwise the idle CPUs; the CLI option and env variable."""

from __future__ import annotations

import os

import pytest
import torch

from dualex import threads
from dualex.cli import build_parser, main
from dualex.errors import InputError


@pytest.fixture
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("DUALEX_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield monkeypatch
    torch.set_num_threads(before)
    os.environ.pop("DUALEX_THREADS", None)


def test_explicit_settings_win(restore_threads):
    restore_threads.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3
    restore_threads.setenv("DUALEX_THREADS", "2")
    assert threads.default_threads() == 2


@pytest.mark.parametrize(("cpus", "load", "expected"), [(2, 7.0, 1), (2, 0.1, 2), (16, 5.4, 11), (4, 4.6, 1)])
def test_default_is_the_idle_cpus(restore_threads, cpus, load, expected):
    restore_threads.setattr(threads, "usable_cpus", lambda: cpus)
    restore_threads.setattr(os, "getloadavg", lambda: (load, load, load))
    assert threads.default_threads() == expected


def test_bad_values_are_clear_errors(restore_threads):
    restore_threads.setenv("DUALEX_THREADS", "many")
    with pytest.raises(InputError, match="DUALEX_THREADS"):
        threads.default_threads()
    with pytest.raises(InputError, match="--threads"):
        threads.configure_threads(0)


def test_configure_sets_torch_and_exports(restore_threads):
    assert threads.configure_threads(1) == 1
    assert torch.get_num_threads() == 1 and os.environ["DUALEX_THREADS"] == "1"


def test_cli_option_before_or_after_the_subcommand(restore_threads, capsys):
    parser = build_parser()
    assert parser.parse_args(["--threads", "2", "methods"]).threads == 2
    assert parser.parse_args(["methods", "--threads", "1"]).threads == 1
    assert parser.parse_args(["methods"]).threads is None
    assert main(["methods", "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    capsys.readouterr()


def test_passive_wait_policy_only_before_torch(restore_threads):
    restore_threads.delenv("OMP_WAIT_POLICY", raising=False)
    assert threads.passive_wait_policy() is False  # torch is loaded in this process: too late
    assert "OMP_WAIT_POLICY" not in os.environ


def test_passive_wait_policy_before_torch_unless_set(restore_threads):
    import sys

    restore_threads.delenv("OMP_WAIT_POLICY", raising=False)
    restore_threads.delitem(sys.modules, "torch")  # as if dualex were imported first
    assert threads.passive_wait_policy() is True
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    restore_threads.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert threads.passive_wait_policy() is False
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
