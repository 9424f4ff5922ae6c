from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dualex.analysis.failure_modes import (
    FEATURES,
    choose_k,
    class_statistics,
    failure_modes,
    label_cluster,
    map_features,
    write_report,
)
from dualex.cli import main
from dualex.errors import InputError


def _mask(cells):
    m = torch.zeros(4, 4, dtype=torch.bool)
    for r, c in cells:
        m[r, c] = True
    return m


def test_map_features_known_maps():
    own = _mask([(0, 0), (0, 1), (1, 0), (1, 1)])
    other = _mask([(3, 3)])
    one = torch.zeros(4, 4)
    one[0, 1] = 2.0
    one[2, 2] = -5.0
    f = map_features(one, own, other)
    assert f["box_fraction"] == 0.25 and f["box_coverage"] == 0.25 and f["energy_in_box"] == 1.0
    assert f["spread"] == 0.0 and f["peak_distance"] == 0.0 and f["hit"] == 1.0 and f["other_objects_mass"] == 0.0
    uniform = torch.ones(4, 4)
    g = map_features(uniform, own, other)
    assert g["spread"] == pytest.approx(1.0) and g["energy_in_box"] == pytest.approx(0.25)
    assert g["other_objects_mass"] == pytest.approx(1 / 16) and g["box_coverage"] == 1.0
    away = torch.zeros(4, 4)
    away[3, 3] = 1.0
    h = map_features(away, own, other)
    assert h["hit"] == 0.0 and h["other_objects_mass"] == 1.0
    assert h["peak_distance"] == pytest.approx(math.hypot(2, 2) / math.hypot(4, 4))
    neg = map_features(-torch.ones(4, 4), own, other)  # nothing positive: no focus at all
    assert neg["spread"] == 1.0 and neg["energy_in_box"] == 0.0 and neg["box_coverage"] == 0.0


def test_label_cluster():
    label, cat, dom = label_cluster({"box_fraction": -1.2, "box_coverage": -0.8, "spread": 0.3, "n_objects": 0.1})
    assert label == "small objects / low box coverage" and cat == "object coverage"
    assert [f for f, _ in dom] == ["box_fraction", "box_coverage"]
    assert label_cluster({"other_objects_mass": 2.0})[:2] == ("attribution on other objects", "correlated context")
    assert label_cluster({"cooc_rarity": 0.9, "n_objects": 0.6})[0] == "rare class co-occurrence / many objects"
    assert label_cluster({f: 0.1 for f in FEATURES})[1] == "mixed"
    assert label_cluster({"energy_in_box": 3.0})[1] == "mixed"  # a high energy describes no failure
    causes_first = label_cluster({"energy_in_box": -3.0, "peak_distance": 2.0, "box_fraction": -0.6})
    assert causes_first[0] == "small objects / attribution outside the box"
    assert label_cluster({"peak_distance": 1.0})[:2] == ("peak far from the object", "localisation")


def test_class_statistics():
    import pandas as pd

    objs = pd.DataFrame({"item_id": ["a", "a", "b", "c"], "class_name": ["dog", "cat", "dog", "dog"]})
    rarity, cooc = class_statistics(objs)
    assert rarity["dog"] == pytest.approx(-math.log(3 / 4)) and rarity["cat"] == pytest.approx(-math.log(1 / 4))
    assert cooc[("dog", "cat")] == pytest.approx(-math.log(1.5 / 4)) and cooc[("cat", "dog")] == pytest.approx(
        -math.log(1.5 / 2)
    )


def test_choose_k_separates_blobs():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 0.1, (6, 3)), rng.normal(3, 0.1, (6, 3)), rng.normal(-3, 0.1, (6, 3))])
    k, sil, labels = choose_k(X)
    assert k == 3 and sil[3] == max(sil.values()) and len(set(labels[:6])) == 1
    assert choose_k(X[:3])[0] == 2 and choose_k(X[:2])[0] == 1
    assert choose_k(X, 1)[0] == 1
    with pytest.raises(InputError):
        choose_k(X, 0)


# A run with two kinds of failures and a block of successes (captions name two objects each):
#   "small": a one-patch kite whose span map is spread over the whole image, peak elsewhere;
#   "context": a 2×2-patch fork whose span map sits on the dining table next to it.
def _failure_run(toy, run_writer):
    rng = np.random.default_rng(0)
    units = []

    def add(item_id, caption, objs, maps):
        tokens, offsets = toy.word_tokens(caption)
        A = torch.zeros(len(tokens), 16)
        rows = []
        for o, m in zip(objs, maps, strict=True):
            s, e = toy.span_of(caption, o["phrase"])
            pos = [i for i, off in enumerate(offsets) if off and off[0] < e and off[1] > s]
            A[pos[0]] = torch.as_tensor(m, dtype=torch.float32).flatten()
            box = torch.zeros(4, 4, dtype=torch.bool)
            x0, y0, x1, y1 = (int(v) // 16 for v in o["boxes"][0])
            box[y0:y1, x0:x1] = True
            hit = float(box.flatten()[int(A[pos[0]].argmax())])
            rows.append({**o, "pg_hit_t2i": hit})
        units.append({"item_id": item_id, "caption": caption, "objects": rows,
                      "explanation": toy.make_explanation(caption, A)})  # fmt: skip

    def peak_at(cells, value=1.0, noise=0.05):
        m = rng.uniform(-noise, noise, (4, 4))
        for r, c in cells:
            m[r, c] += value
        return m

    for i in range(8):  # successes
        add(f"ok{i}", "a red circle and a blue square",
            [{"class_name": "circle", "phrase": "red circle", "boxes": [toy.patch_box(0, 0, 2, 2)]},
             {"class_name": "square", "phrase": "blue square", "boxes": [toy.patch_box(2, 2, 4, 4)]}],
            [peak_at([(0, 0), (1, 1)]), peak_at([(2, 2), (3, 3)])])  # fmt: skip
    for i in range(5):  # small objects, diffuse maps
        diffuse = 0.3 + rng.uniform(0, 0.05, (4, 4))
        diffuse[3, 0] += 0.1
        add(f"small{i}", "a kite above a truck",
            [{"class_name": "kite", "phrase": "kite", "boxes": [toy.patch_box(0, 3, 1, 4)]},
             {"class_name": "truck", "phrase": "truck", "boxes": [toy.patch_box(2, 0, 4, 4)]}],
            [diffuse, peak_at([(3, 1), (2, 2)])])  # fmt: skip
    for i in range(5):  # correlated context: the fork's words point at the table
        add(f"context{i}", "a fork on a dining table",
            [{"class_name": "fork", "phrase": "fork", "boxes": [toy.patch_box(0, 0, 2, 2)]},
             {"class_name": "dining table", "phrase": "dining table", "boxes": [toy.patch_box(2, 0, 4, 4)]}],
            [peak_at([(3, 1), (3, 2)], 2.0), peak_at([(2, 1), (3, 3)])])  # fmt: skip
    return run_writer(units)


def test_failure_modes_finds_the_two_kinds(toy, run_writer, tmp_path):
    run = _failure_run(toy, run_writer)
    res = failure_modes(run)
    assert res.method == "ij" and res.n_objects == 36 and res.n_failed == 10 and res.k == 2
    groups = {}
    for c in res.clusters:
        items = set(res.failures[res.failures["cluster"] == c.cluster]["item_id"])
        groups[c.label] = (items, c)
        assert c.size == 5 and c.share == 0.5 and len(c.examples) == 5
    by_kind = {min(items)[:-1]: c for items, c in groups.values()}  # "small" / "context"
    assert set(by_kind) == {"small", "context"}
    assert {e["item_id"][:-1] for e in by_kind["small"].examples} == {"small"}
    small, context = by_kind["small"], by_kind["context"]
    assert "small objects" in small.label or "diffuse attribution" in small.label
    assert small.z["box_fraction"] < 0 and small.z["spread"] > 0 and small.classes == [("kite", 5)]
    assert "attribution on other objects" in context.label and context.category == "correlated context"
    paths = write_report(res, tmp_path / "rep")
    data = json.loads(paths[0].read_text())
    assert data["ij"]["k"] == 2 and len(data["ij"]["clusters"]) == 2 and data["ij"]["features"] == list(FEATURES)
    md = paths[1].read_text()
    assert "### Cluster 0" in md and "`small" in md and "| box_fraction |" in md
    assert failure_modes(run, k=1).clusters[0].size == 10
    assert failure_modes(run, k=3).k == 3


def test_failure_modes_edge_cases(toy, run_writer):
    units = [{"item_id": "a", "caption": "a red circle", "objects": [
        {"class_name": "circle", "phrase": "red circle", "boxes": [toy.patch_box(0, 0, 2, 2)]}],
        "explanation": toy.make_explanation("a red circle", {(2, 0): 1.0})}]  # fmt: skip
    grad = {**units[0], "method": "grad", "explanation": toy.make_explanation("a red circle", {(2, 0): 1.0},
                                                                            method="grad", first_order=True)}
    run = run_writer([*units, grad])
    with pytest.raises(InputError, match="no token × patch"):
        failure_modes(run, method="grad")
    res = failure_modes(run, method="ij")  # pg_hit_t2i not in the run: recomputed from the maps (a hit)
    assert res.n_failed == 0 and res.k == 0 and res.clusters == []
    assert "0 of 1 objects fail" in res.to_markdown()
    energy = failure_modes(run, method="ij", metric="pg_energy_t2i", threshold=1.5)
    assert energy.n_failed == 1 and energy.k == 1
    with pytest.raises(InputError, match="no values"):
        failure_modes(run, method="ij", metric="pgr")
    with pytest.raises(InputError, match="not in this run"):
        failure_modes(run, method="fixlip")


def test_cli(toy, run_writer, capsys):
    run = _failure_run(toy, run_writer)
    assert main(["failures", str(run)]) == 0
    out = capsys.readouterr().out
    assert "10 of 36 objects fail" in out and "attribution on other objects" in out
    assert json.loads((run / "analysis" / "failures.json").read_text())["ij"]["n_failed"] == 10
    assert main(["failures", str(run), "--k", "two"]) == 2
