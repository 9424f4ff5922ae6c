from __future__ import annotations

import json
import random
import re
from types import SimpleNamespace

import pytest

from dualex.analysis.common import char_span_positions
from dualex.analysis.mismatch import (
    as_item,
    category_swapper,
    hard_negative_analysis,
    mismatch_analysis,
)
from dualex.cli import main
from dualex.datasets.base import GroundTruth, Item
from dualex.errors import InputError

CAPTION = "a red circle and a blue square"
RED, CIRCLE, BLUE, SQUARE = 2, 3, 6, 7  # token positions (BOS at 0)
# circle: patches (0..1, 0..1) = {0, 1, 4, 5}; square: patches (2..3, 2..3) = {10, 11, 14, 15}


def _objects(toy, box_a=(0, 0, 2, 2), box_b=(2, 2, 4, 4)):
    return [
        {"class_name": "circle", "phrase": "red circle", "boxes": [toy.patch_box(*box_a)]},
        {"class_name": "square", "phrase": "blue square", "boxes": [toy.patch_box(*box_b)]},
    ]


def _unit(toy, item_id, cross, *, method="ij", objects=None, caption=CAPTION, first_order=False):
    ex = toy.make_explanation(caption, cross, method=method, first_order=first_order)
    return {"item_id": item_id, "method": method, "caption": caption, "explanation": ex,
            "objects": objects if objects is not None else _objects(toy)}  # fmt: skip


def test_shares_on_known_items(toy, run_writer):
    ideal = {(RED, 0): 1.0, (CIRCLE, 5): 0.5, (RED, 10): -0.3, (BLUE, 15): 1.0, (SQUARE, 0): -0.2}
    # a->b: matching +1, cross +0.4; b->a: matching -1, cross 0 (zero is not negative)
    mixed = {(RED, 0): 1.0, (CIRCLE, 11): 0.4, (BLUE, 14): -1.0}
    three = "a red circle and a blue square and a green star"
    units = [
        _unit(toy, "ideal", ideal),
        _unit(toy, "mixed", mixed),
        _unit(toy, "three", {(2, 0): 1.0}, caption=three, objects=[
            *_objects(toy), {"class_name": "star", "phrase": "green star", "boxes": [toy.patch_box(0, 3, 1, 4)]}]),
        {"item_id": "nofile", "method": "ij", "caption": CAPTION, "objects": _objects(toy)},
        _unit(toy, "single", ideal, objects=_objects(toy)[:1]),
        _unit(toy, "grad1", ideal, method="grad", first_order=True),
        _unit(toy, "grad2", ideal, method="grad", first_order=True),
    ]  # fmt: skip
    run = run_writer(units)
    res = mismatch_analysis(run)
    ij = res.shares.set_index("method").loc["ij"]
    assert ij["n_pairs"] == 4 and ij["n_items"] == 2
    assert ij["matching_positive"] == pytest.approx(3 / 4)
    assert ij["cross_negative"] == pytest.approx(2 / 4)
    assert ij["both"] == pytest.approx(2 / 4)
    assert ij["matching_above_cross"] == pytest.approx(3 / 4)  # ideal a->b, ideal b->a, mixed a->b
    p = res.pairs.set_index(["item_id", "object_a"])
    assert p.loc[("ideal", 0), "matching"] == pytest.approx(1.5) and p.loc[("ideal", 0), "cross"] == pytest.approx(-0.3)
    assert p.loc[("mixed", 1), "matching"] == pytest.approx(-1.0) and p.loc[("mixed", 1), "cross"] == 0.0
    reasons = {(i, m): r for i, m, r in res.skipped}
    assert len(res.skipped) == 2  # the first-order method is reported once
    assert reasons[("nofile", "ij")] == "no explanation file"
    assert "no token × patch" in reasons[("*", "grad")]
    allp = mismatch_analysis(run, method="ij", exactly_two=False)
    assert allp.shares.iloc[0]["n_pairs"] == 4 + 6  # every ordered pair of the three-object caption too
    assert "match>0" in res.to_text()


def test_disjoint_and_bad_pairs(toy, run_writer):
    # the boxes share patch 5 (row 1, col 1); all the interaction there would count on both sides
    overlap = {(RED, 5): 2.0, (RED, 0): -0.5, (BLUE, 15): 1.0}
    units = [
        _unit(toy, "overlap", overlap, objects=_objects(toy, box_b=(1, 1, 4, 4))),
        _unit(toy, "same", overlap, objects=_objects(toy, box_b=(0, 0, 2, 2))),
    ]
    run = run_writer(units)
    plain = mismatch_analysis(run).pairs.set_index("object_a")
    assert plain.loc[0, "matching"] == pytest.approx(1.5) and plain.loc[0, "cross"] == pytest.approx(2.0)
    assert plain.loc[0, "overlap"] == pytest.approx(0.25)
    res = mismatch_analysis(run, disjoint=True)
    d = res.pairs.set_index("object_a")
    assert d.loc[0, "matching"] == pytest.approx(-0.5) and d.loc[0, "cross"] == 0.0
    assert any("same patches" in r for _, _, r in res.skipped)
    with pytest.raises(InputError, match="pass run_dir"):
        mismatch_analysis(__import__("dualex").evaluation.read_run(run))


def test_no_usable_items(toy, run_writer):
    run = run_writer([_unit(toy, "single", {(RED, 0): 1.0}, objects=_objects(toy)[:1])])
    with pytest.raises(InputError, match="exactly two"):
        mismatch_analysis(run)


def test_cli_run_mode(toy, run_writer, tmp_path, capsys):
    run = run_writer([_unit(toy, "ideal", {(RED, 0): 1.0, (RED, 10): -1.0, (BLUE, 15): 1.0, (SQUARE, 0): -1.0})])
    assert main(["mismatch", str(run), "--out", str(tmp_path / "m.csv")]) == 0
    out = capsys.readouterr().out
    assert "100.0%" in out and (tmp_path / "m.csv").exists() and (tmp_path / "m.json").exists()
    assert main(["mismatch"]) == 2
    assert main(["mismatch", "--hard-negatives"]) == 2


# ---------------------------------------------------------------------------------------------------- hard negatives
def _item(item_id="x", image=None):
    circle = GroundTruth("circle", [(0.0, 0.0, 32.0, 32.0)], "red circle", 2, 12)
    square = GroundTruth("square", [(32.0, 32.0, 64.0, 64.0)], "blue squares", 19, 31)
    return Item(item_id, image, "a red circle and a blue squares", [circle, square])


def test_category_swapper():
    swap = category_swapper(["circle", "square", "star", "cross", "squares-ish"])
    it = _item()
    sw = swap(it, 1, random.Random(0))
    ch = sw.changes[0]
    assert ch.object == 1 and ch.original == "squares"
    assert ch.replacement in ("stars", "crosses")  # plural kept; present classes excluded
    assert sw.caption[ch.start : ch.end] == ch.replacement and sw.caption.startswith("a red circle and a blue ")
    assert swap(it, 1, random.Random(0)) == sw  # seeded
    syn = Item("y", None, "a man on a bench", [GroundTruth("person", [(0, 0, 4, 4)], "man", 2, 5)])
    sw = category_swapper(["person", "dog"])(syn, 0, random.Random(0))
    assert sw.caption == "a dog on a bench" and sw.changes[0].original == "man"
    assert category_swapper(["circle", "square"])(it, 0, random.Random(0)) is None  # nothing absent to swap in


def test_as_item_reads_dataset_records_and_dicts():
    gt = SimpleNamespace(class_name="dog", boxes=[(1, 2, 3, 4)], phrase="dog", start=2, end=5, cell=None)
    rec = SimpleNamespace(id="7-1", image="im.jpg", caption="a dog runs", objects=[gt], error=None)
    it = as_item(rec)
    assert it.id == "7-1" and it.objects[0].start == 2 and it.objects[0].boxes == [(1.0, 2.0, 3.0, 4.0)]
    d = as_item({"id": 3, "image": "a.png", "caption": "two cats", "objects": [
        {"category": "cat", "phrase": "cats", "box": [0, 0, 5, 5]},
        {"class_name": "x", "phrase": "nothing", "boxes": []}]})  # fmt: skip
    assert d.id == "3" and [o.phrase for o in d.objects] == ["cats"] and d.objects[0].start == 4
    with pytest.raises(InputError, match="no caption"):
        as_item({"objects": []})


def test_hard_negatives_with_a_tiny_clip(tiny_clip):
    import dualex
    from dualex.testing import random_image

    items = [_item(f"i{k}", random_image(k, (64, 64))) for k in range(2)]
    res = hard_negative_analysis(
        tiny_clip, items, method="ij", categories=["circle", "square", "star", "cross"], seed=1, n_steps=2,
        compare_original=True,
    )
    rows = res.rows
    assert len(rows) == 2 and res.summary["n"] == 2 and res.summary["n_captions"] == 2
    assert (rows["negative"] == (rows["swapped_box"] < 0)).all()
    assert set(res.summary) >= {"negative", "score_lower", "original_positive", "lower_than_original"}
    r = rows.iloc[0]
    it = items[0]
    obj = next(o for o in it.objects if o.class_name == r["class_name"])
    # recompute the swapped words × box interaction independently
    ex = dualex.explain(tiny_clip, it.image, r["caption"], method="ij", n_steps=2)
    start = r["caption"].index(r["replacement"], 2)
    pos = char_span_positions(ex, start, start + len(r["replacement"]))
    want = float(ex.cross[pos][:, ex.patches(obj.boxes).flatten()].sum())
    assert r["swapped_box"] == pytest.approx(want, rel=1e-4, abs=1e-7)
    s = tiny_clip.score(tiny_clip.prepare([it.image, it.image], [it.caption, r["caption"]])).score
    assert r["score_drop"] == pytest.approx(float(s[0] - s[1]), abs=1e-5)
    assert "swapped words × box" in res.to_text()


def test_shapes_swapper_on_generator_scenes_and_dataset_items():
    gen = pytest.importorskip("dualex.datasets.shapes_generator")
    from dualex.analysis.mismatch import shapes_swapper

    scene = gen.generate_scene(3, n_objects=2, size=64)
    it = as_item(scene)
    assert [o.phrase for o in it.objects] == scene.phrases
    sw = shapes_swapper("colour")(it, 0, random.Random(0))
    assert sw is not None and sw.kind == "colour" and sw.caption != scene.caption
    for ch in sw.changes:
        assert sw.caption[ch.start : ch.end] == ch.replacement != ch.original
        assert ch.original in gen.COLOURS and ch.replacement in gen.COLOURS  # only the colour word
        assert ch.original == scene.objects[scene.spans[ch.object].object].colour
    datasets = pytest.importorskip("dualex.datasets")
    for raw in datasets.open_dataset("shapes:", n=12, size=64):  # items rebuilt into generator scenes
        item = as_item(raw)
        sw = shapes_swapper("shape")(item, 0, random.Random(1))
        assert sw is not None and sw.caption != item.caption
        words, new_words = re.findall(r"\w+", item.caption), re.findall(r"\w+", sw.caption)
        assert len(words) == len(new_words)
        if len(set(o.class_name for o in item.objects)) > 1:
            assert sorted(words) == sorted(new_words)  # two shapes exchanged
        for ch in sw.changes:
            assert ch.original == item.objects[ch.object].class_name and ch.replacement in gen.SHAPES


def test_cli_hard_negatives_on_a_coco_fixture(toy, tmp_path, capsys):
    model_dir = toy.tiny_clip_dir(tmp_path / "clip")
    coco = toy.coco_instances_fixture(tmp_path / "coco")
    out = tmp_path / "hn.csv"
    rc = main(["mismatch", "--hard-negatives", "--model", f"hf:{model_dir}", "--dataset", f"coco:{coco}",
               "--limit", "3", "-O", "n_steps=2", "--device", "cpu",
               "--out", str(out)])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and "hard negatives: 3 changed objects in 3 captions" in text
    import pandas as pd

    rows = pd.read_csv(out)
    for r in rows.itertuples():  # a category absent from the image was swapped in
        own = {"dog", "mat"} if int(r.item_id.split("-")[0]) % 2 else {"cat", "square"}
        assert r.original in own and r.replacement in {"dog", "mat", "cat", "square"} - own
    assert json.loads(out.with_suffix(".json").read_text())["n"] == 3
