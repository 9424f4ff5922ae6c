"""Run comparison: a known shift is recovered, bootstrap intervals are seeded and stable, units are counted."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualex.analysis.compare import compare, paired_bootstrap, plot_comparison, wilcoxon_test
from dualex.cli import main
from dualex.errors import InputError

CLASSES = ("circle", "square", "star")


def hand_made_units(n_items: int, shift: dict[str, float], *, seed: int, noise: float = 0.02) -> list[dict]:
    """Units whose object energies are base values + the class's shift + small noise."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(123)  # the same base values in every run
    units = []
    for i in range(n_items):
        objects = []
        for k, cls in enumerate(CLASSES[: 1 + i % 3]):
            e = float(np.clip(base.uniform(0.2, 0.7) + shift.get(cls, 0.0) + rng.normal(0, noise), 0, 1))
            objects.append({"class_name": cls, "phrase": f"a {cls}", "boxes": [[0, 0, 16, 16]], "pg_energy_t2i": e,
                            "pg_hit_t2i": float(e > 0.45), "occurrence": 0})  # fmt: skip
            del k
        caption = " and ".join(o["phrase"] for o in objects)
        units.append({"item_id": f"item{i:03d}", "caption": caption, "objects": objects})
    return units


@pytest.fixture
def two_runs(run_writer):
    shift = {"circle": 0.10, "square": 0.0, "star": -0.05}
    base = run_writer(hand_made_units(60, {}, seed=1), name="base")
    tuned_units = hand_made_units(60, shift, seed=2)
    tuned_units[0]["error"] = "explain: out of memory"  # one failed unit
    del tuned_units[-1]  # one missing unit
    tuned = run_writer(tuned_units, name="tuned")
    return base, tuned, shift


def test_known_shift_is_recovered_per_class(two_runs):
    base, tuned, shift = two_runs
    comp = compare([base, tuned], labels=["base", "tuned"], metrics=["pg_energy_t2i"], seed=0)
    t = comp.table.set_index("class_name")
    for cls, s in shift.items():
        row = t.loc[cls]
        assert row["ci_low"] <= s <= row["ci_high"], (cls, row["ci_low"], row["ci_high"])
        assert row["difference"] == pytest.approx(s, abs=0.02)
        assert row["mean_run"] - row["mean_reference"] == pytest.approx(row["difference"])
    assert t.loc["circle", "wilcoxon_p"] < 1e-3 and t.loc["star", "wilcoxon_p"] < 1e-3
    assert t.loc["square", "ci_low"] < 0 < t.loc["square", "ci_high"]  # no shift: the interval covers 0
    # counts: item0 failed in tuned (its pair unit errs, its object units are missing), item059 missing
    c = comp.counts
    assert c["error in tuned"] == 1 and c["missing in tuned"] == 1 + 1 + (59 % 3 + 1)
    assert c["matched"] == c["units"] - c["error in tuned"] - c["missing in tuned"]
    assert int(t.loc["(all)", "n"].max()) == sum(1 + i % 3 for i in range(1, 59))


def test_bootstrap_is_seeded_and_stable(two_runs):
    base, tuned, _ = two_runs
    a = compare([base, tuned], metrics=["pg_energy_t2i"], seed=3).table
    b = compare([base, tuned], metrics=["pg_energy_t2i"], seed=3).table
    pd.testing.assert_frame_equal(a, b)
    # a group's interval does not depend on the other metrics or groups being compared
    c = compare([base, tuned], metrics=["pg_hit_t2i", "pg_energy_t2i"], seed=3).table
    c = c[c["metric"] == "pg_energy_t2i"].reset_index(drop=True)
    pd.testing.assert_frame_equal(a[c.columns], c)
    other = compare([base, tuned], metrics=["pg_energy_t2i"], seed=4).table
    assert not np.allclose(a["ci_low"], other["ci_low"])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=30), st.integers(0, 2**31 - 1))
def test_paired_bootstrap_brackets_the_mean_and_is_reproducible(d, seed):
    d = np.asarray(d)
    lo, hi = paired_bootstrap(d, rng=np.random.default_rng(seed), n_boot=300)
    assert lo <= hi and d.min() - 1e-9 <= lo and hi <= d.max() + 1e-9
    assert (lo, hi) == paired_bootstrap(d, rng=np.random.default_rng(seed), n_boot=300)


def test_cluster_bootstrap_and_wilcoxon_edge_cases():
    d = np.array([1.0, 1.0, 3.0, 3.0])
    lo, hi = paired_bootstrap(d, np.array(["a", "a", "b", "b"]), rng=np.random.default_rng(0), n_boot=500)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(3.0)  # only two clusters: means 1, 2 or 3
    assert np.isnan(paired_bootstrap(d, np.zeros(4), rng=np.random.default_rng(0))[0])
    assert wilcoxon_test(np.zeros(5)) == (0.0, 1.0)
    assert np.isnan(wilcoxon_test(np.array([0.0, 1.0]))[1])


def test_methods_of_different_runs_and_errors(two_runs):
    base, tuned, _ = two_runs
    comp = compare([base, tuned], methods=["ij", "ij"], metrics=["pg_energy_t2i"], by_class=False)
    assert set(comp.table["class_name"]) == {"(all)"} and set(comp.table["method"]) == {"ij"}
    with pytest.raises(InputError, match="no method"):
        compare([base, tuned], methods=["ij", "fixlip"])
    with pytest.raises(InputError, match="at least two"):
        compare([base])
    with pytest.raises(InputError, match="no values in run"):
        compare([base, tuned], metrics=["faith_r2"])


def test_cli_writes_tables_and_figure(two_runs, tmp_path, capsys):
    base, tuned, _ = two_runs
    out = tmp_path / "cmp"
    assert main(["compare", str(base), str(tuned), "--labels", "base,tuned", "--n-boot", "500", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert f"dualex serve {base} {tuned}" in captured.err  # the viewer shows both runs side by side
    assert "## tuned − base" in printed and "| ij | pg_energy_t2i | circle |" in printed
    for name in ("compare.csv", "compare.md", "units.csv", "counts.json", "compare.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "counts.json").read_text())["counts"]["error in tuned"] == 1
    units = pd.read_csv(out / "units.csv")
    assert set(units["run"]) == {"base", "tuned"}
    assert main(["compare", str(base), str(tmp_path / "nope")]) != 0


def test_plot_comparison_rejects_unknown_metric(two_runs):
    base, tuned, _ = two_runs
    comp = compare([base, tuned], metrics=["pg_energy_t2i"], n_boot=200)
    fig = plot_comparison(comp)
    assert len(fig.axes) == 1
    with pytest.raises(InputError):
        plot_comparison(comp, metric="aid")


def test_runs_without_shared_units_give_an_empty_table_and_say_why(run_writer):
    a = run_writer(hand_made_units(3, {}, seed=1), name="a")
    units = hand_made_units(3, {}, seed=1)
    for u in units:
        u["item_id"] = "other-" + u["item_id"]
    b = run_writer(units, name="b")
    comp = compare([a, b], labels=["a", "b"], metrics=["pg_energy_t2i"], n_boot=200)
    assert comp.table.empty and comp.counts["matched"] == 0
    assert comp.counts["missing in a"] + comp.counts["missing in b"] == comp.counts["units"]
    assert "Matched units: 0" in comp.to_markdown()


def test_notebook_display_shows_the_figure_and_the_overall_rows(two_runs):
    base, tuned, _ = two_runs
    comp = compare([base, tuned], labels=["base", "tuned"], metrics=["pg_energy_t2i"], n_boot=200)
    page = comp._repr_html_()
    assert '<img src="data:image/png;base64,' in page
    assert "reference: base" in page and "pg_energy_t2i" in page and "<table" in page
    assert "(all)" not in page  # only overall rows, so no class column
