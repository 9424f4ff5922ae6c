"""`dualex.progress`: bars on terminals, steady plain lines where stderr is a log, silence in tests."""

from __future__ import annotations

import pytest

from dualex import progress as progress_mod
from dualex.progress import LineProgress, bar


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_lines_at_a_steady_interval(monkeypatch, capsys):
    clock = FakeClock()
    monkeypatch.setattr(progress_mod.time, "monotonic", clock)
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.delenv("DUALEX_PROGRESS", raising=False)
    monkeypatch.setenv("DUALEX_PROGRESS_INTERVAL", "30")
    with bar(100, "evaluate", None, unit="unit", lines=True) as pb:  # capsys: stderr is not a terminal
        assert isinstance(pb, LineProgress)
        for _ in range(100):
            clock.t += 1.0  # one unit a second
            pb.update(1)
            pb.set_postfix(errors=0, refresh=False)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "evaluate: 30/100 unit (30%), 1 unit/s, elapsed 0:00:30, eta 0:01:10, errors=0"
    assert [ln.split(":")[1].split()[0] for ln in lines[:3]] == ["30/100", "60/100", "90/100"]
    assert lines[-1].endswith("(done)") and "100/100" in lines[-1]
    assert len(lines) == 4


def test_short_work_prints_nothing_and_tests_stay_quiet(monkeypatch, capsys):
    monkeypatch.setenv("DUALEX_PROGRESS_INTERVAL", "30")
    with bar(3, "evaluate", None, lines=True) as pb:  # under pytest: quiet
        pb.update(3)
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.delenv("DUALEX_PROGRESS", raising=False)
    with bar(3, "evaluate", None, lines=True) as pb:  # finishes within its first interval
        pb.update(3)
    with bar(3, "other", None) as pb:  # a bar that did not ask for lines
        pb.update(3)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("raw", "expected"), [("", 30.0), ("5", 5.0), ("-1", 30.0), ("x", 30.0), ("0", 0.0)])
def test_line_interval_from_the_environment(raw, expected, monkeypatch):
    monkeypatch.setenv("DUALEX_PROGRESS_INTERVAL", raw)
    assert progress_mod.line_interval() == expected


def test_evaluate_reports_progress_to_a_log(monkeypatch, capsys, tmp_path):
    from dualex.cli import main

    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.delenv("DUALEX_PROGRESS", raising=False)
    monkeypatch.setenv("DUALEX_PROGRESS_INTERVAL", "0")
    args = ["evaluate", "--model", "py:dualex.testing:tiny_hf_clip", "--dataset", "shapes:", "-D", "n=2",
            "--methods", "random", "--metrics", "completeness", "--batch-size", "1", "--shard-size", "1",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "evaluate: 1/2 unit (50%)" in err and "evaluate: 2/2 unit (100%)" in err
