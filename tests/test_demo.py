"""`make demo`: the CLI explains the bundled sample scene with the bundled model and writes a figure."""

from __future__ import annotations

from dualex.demo import main
from dualex.explanation import Explanation


def test_demo_writes_figure_and_reports_pointing_energy(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    figure = tmp_path / "shapes_ij.png"
    assert figure.exists() and figure.stat().st_size > 10_000
    assert f"figure: {figure.resolve()}" in out
    for phrase in ("small orange square", "large purple star", "small green circle"):
        assert phrase in out.split("conditional pointing game")[1]
    ex = Explanation.load(tmp_path / "shapes_ij.safetensors")
    assert ex.method == "ij" and ex.model == "shapes" and ex.grid == (7, 7)
