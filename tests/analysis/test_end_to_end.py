"""The analyses over run directories written by `dualex evaluate` (not hand-made ones)."""

from __future__ import annotations

import json

import pytest

from dualex.analysis.classwise import classwise_grounding
from dualex.analysis.failure_modes import failure_modes
from dualex.analysis.mismatch import mismatch_analysis
from dualex.cli import main


def test_analyses_over_an_evaluated_coco_fixture(toy, tmp_path, capsys):
    evaluation = pytest.importorskip("dualex.evaluation.run")
    model_dir = toy.tiny_clip_dir(tmp_path / "clip")
    coco = toy.coco_instances_fixture(tmp_path / "coco", n_images=4)
    run = tmp_path / "run"
    evaluation.evaluate(
        f"hf:{model_dir}", f"coco:{coco}", ["ij"], run, method_options={"ij": {"n_steps": 2}},
        metrics=evaluation.MetricOptions(metrics=("pointing",)), device="cpu", progress=False,
    )  # fmt: skip
    table = classwise_grounding(run, metric="pg_hit_t2i")
    assert set(table["class_name"]) == {"dog", "mat", "cat", "square"} and (table["n"] == 2).all()
    mm = mismatch_analysis(run)
    assert mm.shares.iloc[0]["n_pairs"] == 8 and not mm.skipped
    # the matching sums are the run's own span_box column
    from dualex.evaluation import read_run

    df = read_run(run)
    obj = df[df["level"] == "object"].set_index(["item_id", "object"])["span_box"]
    for r in mm.pairs.itertuples():
        assert r.matching == pytest.approx(obj[(r.item_id, r.object_a)], rel=1e-4, abs=1e-8)
    fm = failure_modes(run)
    assert fm.n_objects == 8 and fm.n_failed == int((df["pg_hit_t2i"] < 0.5).sum())
    assert main(["classwise", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert main(["mismatch", str(run), "--json"]) == 0
    assert main(["failures", str(run), "--out", str(tmp_path / "fm")]) == 0
    out = capsys.readouterr().out
    assert "pg_energy_t2i" in out and json.loads((tmp_path / "fm" / "failures.json").read_text())["ij"]


@pytest.fixture(scope="module")
def shapes_model():
    import dualex
    from dualex.errors import DualexError

    try:
        return dualex.load("shapes", device="cpu")
    except DualexError as exc:
        pytest.skip(f"the bundled shapes model is not available here ({exc})")


def test_shapes_model_end_to_end(shapes_model, tmp_path):
    """`dualex evaluate` on a few two-object scenes, then every analysis of the run, and hard negatives."""
    evaluation = pytest.importorskip("dualex.evaluation.run")
    from dualex.analysis.mismatch import hard_negative_analysis
    from dualex.datasets import open_dataset
    from dualex.datasets.shapes_generator import SHAPES

    run = tmp_path / "run"
    evaluation.evaluate(
        shapes_model, "shapes:", ["ij"], run, dataset_options={"n": 2, "n_objects": 2},
        method_options={"ij": {"n_steps": 2}}, metrics=evaluation.MetricOptions(metrics=("pointing",)),
        device="cpu", progress=False,
    )  # fmt: skip
    table = classwise_grounding(run, metric="pg_energy_t2i")
    assert set(table["class_name"]) <= set(SHAPES) and table["n"].sum() == 4
    mm = mismatch_analysis(run)
    assert mm.shares.iloc[0]["n_pairs"] == 4 and not mm.skipped
    assert mm.shares.iloc[0]["matching_positive"] >= 0.5  # trained: words interact positively with their object
    fm = failure_modes(run)
    assert fm.n_objects == 4
    items = open_dataset("shapes:", n=1, n_objects=2, seed=5)
    hn = hard_negative_analysis(shapes_model, items, method="ij", n_steps=2, seed=0)
    assert hn.summary["n_captions"] == 1 and len(hn.rows) >= 1 and not hn.skipped
    assert set(hn.rows["kind"]) <= {"colour", "shape"}
