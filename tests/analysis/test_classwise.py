from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualex.analysis.classwise import (
    bootstrap_interval,
    classwise_grounding,
    format_table,
    plot_classwise,
    wilson_interval,
)
from dualex.cli import main
from dualex.errors import InputError


def _units(toy, hits: dict[str, list[float]], *, method: str = "ij", energy: float = 0.5) -> list[dict]:
    """One item per object: class -> list of pg_hit_t2i values (pg_energy_t2i = hit * energy + 0.1)."""
    units = []
    for cls, values in hits.items():
        for i, h in enumerate(values):
            units.append({
                "item_id": f"{cls}-{i}", "method": method, "caption": f"a {cls} here",
                "objects": [{"class_name": cls, "phrase": cls, "boxes": [toy.patch_box(0, 0, 1, 1)],
                             "pg_hit_t2i": h, "pg_energy_t2i": h * energy + 0.1}],
            })  # fmt: skip
    return units


def test_wilson_known_values():
    # 3 of 4 at 95 %: the textbook Wilson interval [0.3006, 0.9544]
    lo, hi = wilson_interval(3, 4)
    assert lo == pytest.approx(0.3006, abs=1e-4) and hi == pytest.approx(0.9544, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(InputError):
        wilson_interval(1, 2, confidence=1.5)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 500), frac=st.floats(0, 1), conf=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_contains_rate_and_stays_in_unit_interval(n, frac, conf):
    k = round(frac * n)
    lo, hi = wilson_interval(k, n, conf)
    assert 0.0 <= lo <= k / n + 1e-12 and k / n - 1e-12 <= hi <= 1.0
    lo2, hi2 = wilson_interval(k, n, 0.5)  # a lower level gives a narrower interval
    assert hi2 - lo2 <= hi - lo + 1e-12


def test_bootstrap_interval():
    x = np.linspace(0, 1, 50)
    lo, hi = bootstrap_interval(x, seed=1)
    assert lo < x.mean() < hi and hi - lo < 0.3
    assert bootstrap_interval(x, seed=1) == (lo, hi)  # seeded
    assert all(math.isnan(v) for v in bootstrap_interval(np.array([0.3])))
    lo, hi = bootstrap_interval(np.full(10, 0.25))
    assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)


def test_classwise_table_counts_means_order_and_intervals(toy, run_writer):
    hits = {"dog": [1, 1, 1, 0], "cat": [0, 0, 1], "bus": [1, 1], "kite": [0]}
    run = run_writer(_units(toy, hits))
    t = classwise_grounding(run, metric="pg_hit_t2i")
    assert list(t["class_name"]) == ["bus", "dog", "cat", "kite"]  # sorted by mean, best first
    dog = t.set_index("class_name").loc["dog"]
    assert dog["n"] == 4 and dog["mean"] == pytest.approx(0.75) and dog["interval"] == "wilson"
    assert dog["ci_low"] == pytest.approx(0.3006, abs=1e-4)
    assert t["share"].sum() == pytest.approx(1.0)
    e = classwise_grounding(run, metric="pg_energy_t2i").set_index("class_name")
    assert e.loc["cat", "mean"] == pytest.approx((0.1 + 0.1 + 0.6) / 3)
    assert e.loc["cat", "interval"] == "bootstrap" and math.isnan(e.loc["kite", "ci_low"])
    assert e.loc["bus", "ci_low"] == pytest.approx(0.6) and e.loc["bus", "ci_high"] == pytest.approx(0.6)
    assert set(classwise_grounding(run, metric="pg_hit_t2i", min_count=3)["class_name"]) == {"dog", "cat"}
    text = format_table(t, metric="pg_hit_t2i")
    assert "dog" in text and "[0.301, 0.954]" in text


def test_classwise_per_method_and_ignores_errors_and_missing(toy, run_writer):
    units = _units(toy, {"dog": [1, 0]}, method="ij") + _units(toy, {"dog": [1, 1, 1]}, method="fixlip")
    units.append({"item_id": "bad", "method": "ij", "caption": "a dog", "objects": [
        {"class_name": "dog", "phrase": "dog", "boxes": [toy.patch_box(0, 0, 1, 1)], "pg_hit_t2i": 1.0,
         "error": "metric: truncated"}]})  # fmt: skip
    units.append({"item_id": "nometric", "method": "ij", "caption": "a dog", "objects": [
        {"class_name": "dog", "phrase": "dog", "boxes": [toy.patch_box(0, 0, 1, 1)]}]})  # fmt: skip
    units.append({"item_id": "failed", "method": "ij", "caption": "a dog", "error": "explain: boom"})
    run = run_writer(units)
    t = classwise_grounding(run, metric="pg_hit_t2i")
    assert t.set_index("method").loc["ij", "n"] == 2 and t.set_index("method").loc["fixlip", "mean"] == 1.0
    only = classwise_grounding(run, metric="pg_hit_t2i", method="fixlip")
    assert list(only["method"]) == ["fixlip"]
    with pytest.raises(InputError, match="not in this run"):
        classwise_grounding(run, method="nope")
    with pytest.raises(InputError, match="unknown class-wise metric"):
        classwise_grounding(run, metric="insertion_auc")
    with pytest.raises(InputError, match="no object rows"):
        classwise_grounding(run, metric="pg_hit_i2t")


def test_plot_and_cli(toy, run_writer, tmp_path, capsys):
    run = run_writer(_units(toy, {"dog": [1, 0, 1], "cat": [0, 1], "bus": [1, 1, 1, 1]}, method="ij")
                     + _units(toy, {"dog": [1, 1], "cat": [0]}, method="fixlip"))  # fmt: skip
    t = classwise_grounding(run, metric="pg_hit_t2i")
    fig = plot_classwise(t, metric="pg_hit_t2i", out=tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert [a.get_title() for a in fig.axes] == ["fixlip", "ij"]  # methods in table order
    assert len(fig.axes[0].patches) == 2 and len(fig.axes[1].patches) == 3
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["cat", "dog", "bus"]  # best on top
    rc = main(["classwise", str(run), "--metric", "pg_hit_t2i", "--out", str(tmp_path / "c.svg"),
               "--csv", str(tmp_path / "c.csv")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "method ij" in out and "bus" in out
    assert (tmp_path / "c.svg").exists() and (tmp_path / "c.csv").read_text().startswith("method,class_name")
    assert main(["classwise", str(tmp_path / "missing")]) == 2
