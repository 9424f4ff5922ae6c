"""`evaluate` end to end on tiny models: rows, files, summaries, resuming, and bad data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dualex.datasets.base import Dataset, GroundTruth, Item
from dualex.errors import InputError
from dualex.evaluation import load_explanation, read_run
from dualex.evaluation.run import MetricOptions, evaluate
from dualex.evaluation.work import WorkConfig, parse_metrics, process_item
from dualex.explanation import Explanation
from dualex.models.registry import load as load_model

FAST = MetricOptions(faith_coalitions=24, faith_grid=5)
OPTS = {"ij": {"n_steps": 2}, "fixlip": {"budget": 64, "holdout": 0}, "gradxinput": {}, "random": {}}


class Handmade(Dataset):
    """Items built in code: a good one, one whose image file is corrupt, one the reader could not build."""

    kind = "handmade"

    def _read(self):
        img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        ok = GroundTruth("circle", [(0.0, 0.0, 16.0, 16.0)], "red circle", 0, 10)
        yield Item("good", img, "red circle on a mat", [ok])
        yield Item("corrupt", str(self.path / "corrupt.png"), "a blue square", [ok])
        yield Item("unreadable", None, "", error="caption annotation 9 has no caption text")
        far = GroundTruth("square", [(0.0, 0.0, 8.0, 8.0)], "green square", 30, 42)  # beyond the caption
        yield Item("bad-span", img, "two cats", [far])


def test_faithfulness_design_option_and_old_runs(tmp_path: Path, tiny_clip):
    assert MetricOptions().faith_design == "product" and MetricOptions().to_dict()["faith_design"] == "product"
    assert "faith_design" not in MetricOptions(faith_design="independent").to_dict()  # as before the option
    with pytest.raises(InputError, match="faith_design"):
        MetricOptions(faith_design="grid")
    with pytest.raises(InputError, match="faith_grid"):
        MetricOptions(faith_grid=1)
    out = tmp_path / "run"
    old = MetricOptions(metrics=("faithfulness",), faith_coalitions=24, faith_design="independent")
    evaluate(tiny_clip, "shapes:", ["random"], out, dataset_options={"n": 1}, metrics=old)
    # resuming a run without the option (as written before it existed) keeps that run's design
    more = MetricOptions(metrics=("faithfulness",), faith_coalitions=24, faith_grid=5)
    res = evaluate(tiny_clip, "shapes:", ["random", "gradxinput"], out, dataset_options={"n": 1}, metrics=more)
    rows = read_run(out)
    assert res.units_run == 1 and rows.loc[rows.level == "pair", "faith_spearman"].notna().all()


def test_shapes_run_rows_files_summary_and_resume(tmp_path: Path, tiny_clip):
    methods = ["ij", "fixlip", "gradxinput", "random"]
    out = tmp_path / "run"
    res = evaluate(tiny_clip, "shapes:", methods, out, dataset_options={"n": 2}, method_options=OPTS,
                   metrics=FAST, shard_size=3)  # fmt: skip
    assert res.units_total == 8 and res.units_run == 8 and res.units_done_before == 0
    df = read_run(out)
    pair = df[df.level == "pair"]
    assert len(pair) == 8 and not pair.duplicated(["item_id", "method"]).any()
    assert pair["error"].isna().all(), pair["error"].dropna().tolist()
    assert pair["aid"].notna().all() and pair["faith_spearman"].notna().all() and pair["seconds"].gt(0).all()
    assert pair.loc[pair.method == "ij", "completeness_error"].notna().all()
    stages = ["seconds_load", "seconds_save", "seconds_completeness", "seconds_insertion_deletion",
              "seconds_faithfulness", "seconds_pointing"]  # fmt: skip
    assert pair[stages].notna().all().all() and (pair[stages] >= 0).all().all()
    obj = df[df.level == "object"]
    assert set(obj["class_name"]) <= {"circle", "square", "triangle", "star", "cross"}
    n_objects = obj.groupby("method").size()
    assert n_objects.nunique() == 1  # every method has a row for every object
    hits = obj.loc[obj["error"].isna(), "pg_hit_t2i"]
    assert hits.isin([0.0, 1.0]).all()
    for _, row in pair.iterrows():
        ex = load_explanation(out, row)
        assert isinstance(ex, Explanation) and ex.method == row["method"]
    summary = (out / "summary" / "summary.md").read_text()
    for m in methods:
        assert f"| {m} " in summary
    assert (out / "summary" / "per_class.csv").exists() and (out / "summary" / "overall.csv").exists()
    again = evaluate(tiny_clip, "shapes:", methods, out, dataset_options={"n": 2}, method_options=OPTS, metrics=FAST)
    assert again.units_run == 0 and again.units_done_before == 8
    assert len(read_run(out)) == len(df)
    with pytest.raises(InputError, match="holds a run with options"):
        evaluate(tiny_clip, "shapes:", methods, out, dataset_options={"n": 2}, method_options=OPTS)


def test_bad_items_record_errors_and_the_run_goes_on(tmp_path: Path, tiny_clip):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    ds = Handmade(tmp_path)
    res = evaluate(tiny_clip, ds, ["ij"], tmp_path / "run", method_options={"ij": {"n_steps": 2}},
                   metrics=MetricOptions(metrics="pointing,completeness"))  # fmt: skip
    assert res.units_run == 4 and res.errors == 2
    df = read_run(tmp_path / "run").set_index(["item_id", "object"])
    assert pd.isna(df.loc[("good", -1), "error"]) and df.loc[("good", 0), "pg_energy_t2i"] >= 0
    assert df.loc[("corrupt", -1), "error"].startswith("load: cannot read")
    assert df.loc[("corrupt", -1), "error_type"] == "InputError"
    assert df.loc[("unreadable", -1), "error"] == "load: caption annotation 9 has no caption text"
    assert pd.isna(df.loc[("bad-span", -1), "error"])  # the pair is fine ...
    assert df.loc[("bad-span", 0), "error"].startswith("metric pointing:")  # ... its object is not
    errors = (tmp_path / "run" / "summary" / "errors.csv").read_text()
    assert "corrupt" in errors and "bad-span" in errors
    # errors are kept on resume unless asked to retry
    assert evaluate(tiny_clip, ds, ["ij"], tmp_path / "run", method_options={"ij": {"n_steps": 2}},
                    metrics=MetricOptions(metrics="pointing,completeness")).units_run == 0  # fmt: skip
    (tmp_path / "corrupt.png").unlink()
    from PIL import Image

    Image.new("RGB", (20, 20), (0, 0, 255)).save(tmp_path / "corrupt.png")
    res = evaluate(tiny_clip, ds, ["ij"], tmp_path / "run", method_options={"ij": {"n_steps": 2}},
                   metrics=MetricOptions(metrics="pointing,completeness"), retry_errors=True)  # fmt: skip
    assert res.units_run == 2 and res.errors == 1  # the fixed image now works; the unreadable item still fails
    df = read_run(tmp_path / "run")
    assert df[(df.item_id == "corrupt") & (df.level == "pair")]["error"].isna().all()
    assert not df.duplicated(["item_id", "method", "object"]).any()


def test_pgr_on_grid_items(tiny_clip):
    img = np.zeros((64, 64, 3), dtype=np.uint8)
    cells = [(0.0, 0.0, 32.0, 32.0), (32.0, 0.0, 64.0, 32.0), (0.0, 32.0, 32.0, 64.0), (32.0, 32.0, 64.0, 64.0)]
    objs = [GroundTruth("cat", [cells[0]], "cat", 0, 3, cell=0), GroundTruth("dog", [cells[1]], "dog", 4, 7, cell=1)]
    item = Item("g0", img, "cat dog", objs, regions=cells)
    cfg = WorkConfig(["random"], {"random": {}}, MetricOptions(metrics="pointing"), dataset_kind="imagenet-grid")
    rows = process_item(tiny_clip, item, ["random"], cfg, None)
    assert [r["level"] for r in rows] == ["pair", "object", "object"]
    assert 0.0 <= rows[0]["pgr"] <= 1.0 and all(0.0 <= r["pgr"] <= 1.0 for r in rows[1:])
    assert "explanation" not in rows[0]  # no sink: nothing saved


def test_options_are_validated(tmp_path: Path, tiny_clip):
    assert parse_metrics("aid,pg") == ["pointing", "insertion_deletion"]
    with pytest.raises(InputError, match="unknown metric"):
        parse_metrics("accuracy")
    with pytest.raises(InputError, match="unknown method"):
        evaluate(tiny_clip, "shapes:", ["nope"], tmp_path / "r")
    with pytest.raises(InputError, match="ray engine loads the model"):
        evaluate(tiny_clip, "shapes:", ["ij"], tmp_path / "r", engine="ray")
    with pytest.raises(InputError, match="needs one given as KIND:PATH"):
        evaluate("py:dualex.testing:tiny_hf_clip", Handmade(tmp_path), ["ij"], tmp_path / "r", engine="ray")
    with pytest.raises(InputError, match="dataset_options apply"):
        evaluate(tiny_clip, Handmade(tmp_path), ["ij"], tmp_path / "r", dataset_options={"n": 2})
    with pytest.raises(InputError, match="model factory"):
        load_model("py:dualex.testing:no_such_function")
    assert load_model("py:dualex.testing:tiny_hf_clip").name == "tiny-hf-clip"


def test_imagenet_grid_run_reports_pgr_by_number_of_objects(tmp_path: Path, tiny_clip):
    from PIL import Image

    root = tmp_path / "val"
    for k, name in enumerate(["goldfish", "tiger_cat", "banana", "church"]):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (24, 20), (60 * k, 0, 0)).save(root / name / "a.png")
    opts = {"compositions": [["goldfish", "tiger cat", "banana", "church"]], "k": [1, 2], "cell": 32}
    res = evaluate(
        tiny_clip, f"imagenet-grid:{root}", ["random"], tmp_path / "run", metrics=MetricOptions(metrics="pointing"),
        dataset_options=opts,
    )
    assert res.units_run == 2 and res.errors == 0
    df = read_run(tmp_path / "run")
    assert df.loc[df.level == "pair", "pgr"].between(0, 1).all()
    assert sorted(df.loc[df.level == "object", "class_name"]) == ["goldfish", "goldfish", "tiger cat"]
    assert "## Pointing game recognition by number of named objects" in res.summary
    assert "1 named" in res.summary and "2 named" in res.summary


@pytest.mark.slow
def test_bundled_shapes_model_on_shapes_scenes(tmp_path: Path):
    from dualex.errors import ModelNotAvailableError

    try:
        model = load_model("shapes", device="cpu")
    except ModelNotAvailableError:
        pytest.skip("the bundled shapes model is not in this checkout")
    metrics = MetricOptions(metrics="pointing,faithfulness,completeness", faith_coalitions=24, faith_grid=5)
    res = evaluate(model, "shapes:", ["ij", "gradxinput"], tmp_path / "run", dataset_options={"n": 1},
                   method_options=OPTS, metrics=metrics)  # fmt: skip
    assert res.units_run == 2 and res.errors == 0
    df = read_run(tmp_path / "run")
    obj = df[df.level == "object"]
    assert obj["error"].isna().all() and obj["pg_energy_t2i"].between(0, 1).all()
    pair = df[df.level == "pair"].set_index("method")
    assert (pair["score"] > 0).all()  # the true caption of a held-out scene
    assert pair["faith_spearman"].notna().all()


def test_runs_skip_standard_errors_unless_asked(tmp_path: Path, tiny_clip):
    import json

    fast = MetricOptions(metrics=("completeness",))
    plain = tmp_path / "plain"
    evaluate(tiny_clip, "shapes:", ["fixlip", "random"], plain, dataset_options={"n": 1},
             method_options={"fixlip": {"budget": 64, "holdout": 0}}, metrics=fast)  # fmt: skip
    manifest = json.loads((plain / "manifest.json").read_text())
    assert manifest["method_options"]["fixlip"]["n_boot"] == 0
    assert "n_boot" not in manifest["method_options"]["random"]  # only methods that have the option
    bare = tmp_path / "bare"  # holdout not given: a run skips FIxLIP's own diagnostics too
    evaluate(tiny_clip, "shapes:", ["fixlip"], bare, dataset_options={"n": 1},
             method_options={"fixlip": {"budget": 64}}, metrics=fast)  # fmt: skip
    assert json.loads((bare / "manifest.json").read_text())["method_options"]["fixlip"]["holdout"] == 0
    row = read_run(plain).query("level == 'pair' and method == 'fixlip'").iloc[0]
    assert not load_explanation(plain, row).stderr
    # resuming with the same command keeps the recorded setting (no "different options" refusal)
    again = evaluate(tiny_clip, "shapes:", ["fixlip"], plain, dataset_options={"n": 1},
                     method_options={"fixlip": {"budget": 64, "holdout": 0}}, metrics=fast)  # fmt: skip
    assert again.units_run == 0
    asked = tmp_path / "asked"
    evaluate(tiny_clip, "shapes:", ["fixlip"], asked, dataset_options={"n": 1},
             method_options={"fixlip": {"budget": 64, "holdout": 0, "n_boot": 4}}, metrics=fast)  # fmt: skip
    row = read_run(asked).query("level == 'pair'").iloc[0]
    assert load_explanation(asked, row).stderr
    # a run directory written before this default (no n_boot recorded) resumes with the method's default
    old = tmp_path / "old"
    evaluate(tiny_clip, "shapes:", ["random"], old, dataset_options={"n": 1}, metrics=fast)
    m = json.loads((old / "manifest.json").read_text())
    m["method_options"]["fixlip"] = {"budget": 64, "holdout": 0}
    (old / "manifest.json").write_text(json.dumps(m))
    evaluate(tiny_clip, "shapes:", ["fixlip"], old, dataset_options={"n": 1},
             method_options={"fixlip": {"budget": 64, "holdout": 0}}, metrics=fast)  # fmt: skip
    assert "n_boot" not in json.loads((old / "manifest.json").read_text())["method_options"]["fixlip"]


def test_rows_and_summary_carry_box_area_units_and_hit_names(tmp_path: Path, tiny_clip):
    out = tmp_path / "run"
    metrics = MetricOptions(metrics=("pointing", "completeness"))
    evaluate(tiny_clip, "shapes:", ["ij", "random"], out, dataset_options={"n": 2}, method_options=OPTS,
             metrics=metrics)  # fmt: skip
    df = read_run(out)
    obj = df[(df.level == "object") & df["error"].isna()]
    assert obj["box_area"].between(0, 1).all() and obj["box_area"].gt(0).all()
    pair = df[df.level == "pair"]
    assert dict(zip(pair["method"], pair["units"], strict=True)) == {"ij": "cosine", "random": "score"}
    overall = pd.read_csv(out / "summary" / "overall.csv")
    assert {"pg_hit_t2i", "pg_hit_i2t", "box_area", "pge_over_area"} <= set(overall.columns)
    assert not any(c.startswith("pg_acc") for c in overall.columns)
    row = overall.set_index("method").loc["ij"]
    assert row["pge_over_area"] == pytest.approx(row["pg_energy_t2i"] / row["box_area"])
    per_class = pd.read_csv(out / "summary" / "per_class.csv")
    assert {"box_area", "pge_over_area", "pg_hit_t2i"} <= set(per_class.columns)
    summary = (out / "summary" / "summary.md").read_text()
    assert "box_area" in summary and "pge_over_area" in summary


def test_old_summary_tables_read_with_todays_names(tmp_path: Path):
    from dualex.evaluation.summary import read_summary_table

    old = tmp_path / "overall.csv"
    old.write_text("method,items,pg_energy_t2i,pg_acc_t2i,pg_energy_i2t,pg_acc_i2t\nij,3,0.3,0.5,0.2,0.4\n")
    t = read_summary_table(old)
    assert list(t.columns) == ["method", "items", "pg_energy_t2i", "pg_hit_t2i", "pg_energy_i2t", "pg_hit_i2t"]
    assert t.loc[0, "pg_hit_t2i"] == 0.5


def test_skipped_diagnostics_leave_every_metric_value_unchanged(tmp_path: Path, tiny_clip):
    """A run's default (no bootstrap, no FIxLIP diagnostics) and a run asking for both give the same metrics."""
    metrics = MetricOptions(faith_grid=8)
    runs = {}
    for name, opts in (("default", {"budget": 64}), ("asked", {"budget": 64, "n_boot": 4, "holdout": 32})):
        out = tmp_path / name
        evaluate(tiny_clip, "shapes:", ["fixlip"], out, dataset_options={"n": 2}, method_options={"fixlip": opts},
                 metrics=metrics)  # fmt: skip
        runs[name] = read_run(out).sort_values(["item_id", "object"]).reset_index(drop=True)
    a, b = runs["default"], runs["asked"]
    skip = {"seconds", "explanation"}
    cols = [c for c in a.columns if not c.startswith("seconds") and c not in skip]
    assert a[cols].astype(str).equals(b[cols].astype(str))
