"""`process_items`: items explained in batches give the rows of item-by-item work; failures stay per item."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from dualex.datasets import open_dataset
from dualex.errors import InputError
from dualex.evaluation import read_run
from dualex.evaluation.run import MetricOptions, evaluate
from dualex.evaluation.work import WorkConfig, process_item, process_items
from dualex.explanation import Explanation
from dualex.methods import METHODS, explain_pair, register_method
from dualex.models.base import DualEncoder, Pair

FAST = MetricOptions(faith_coalitions=24, faith_grid=5)
OPTS: dict[str, dict[str, Any]] = {"ij": {"n_steps": 2}, "gradxinput": {}, "random": {}}
TIMING = ("seconds", "seconds_load", "seconds_save")


def _rows_close(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert set(ra) == set(rb)
        for key in ra:
            if key.startswith("seconds"):
                continue
            va, vb = ra[key], rb[key]
            if isinstance(va, float) and isinstance(vb, float):
                assert (math.isnan(va) and math.isnan(vb)) or math.isclose(va, vb, rel_tol=1e-4, abs_tol=1e-5), key
            elif isinstance(va, list) and va and isinstance(va[0], float):
                assert all(math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-5) for x, y in zip(va, vb, strict=True)), key
            else:
                assert va == vb, key


def test_batched_items_give_the_rows_and_explanations_of_item_by_item_work(tiny_clip):
    items = open_dataset("shapes:", n=4).items()  # captions of different lengths: the batch is padded
    assert len({len(it.caption.split()) for it in items}) > 1
    cfg = WorkConfig(list(OPTS), OPTS, FAST, 64, "shapes")
    saved: dict[tuple[str, str, str], Explanation] = {}

    def sink(tag: str) -> Callable[[str, str, Explanation], str]:
        def save(method: str, item_id: str, ex: Explanation) -> str:
            saved[(tag, method, item_id)] = ex
            return f"{method}/{item_id}"

        return save

    batched = process_items(tiny_clip, [(it, list(OPTS)) for it in items], cfg, sink("batch"))
    single = [process_item(tiny_clip, it, list(OPTS), cfg, sink("one")) for it in items]
    for a, b in zip(batched, single, strict=True):
        _rows_close(a, b)
        assert all(r.get("error") is None for r in a if r["level"] == "pair")
        assert all(r["seconds"] > 0 for r in a if r["level"] == "pair")
    for (tag, method, item_id), ex in saved.items():
        if tag == "batch":
            one = saved[("one", method, item_id)]
            assert ex.tokens == one.tokens and ex.token_offsets == one.token_offsets  # batch padding cut off
            for name in ("text_main", "image_main", "cross"):
                x, y = getattr(ex, name, None), getattr(one, name, None)
                if x is not None:
                    torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


def test_a_failing_batch_falls_back_to_one_item_at_a_time(tiny_clip):
    calls: list[int] = []

    def picky(model: DualEncoder, pair: Pair) -> list[Explanation]:
        calls.append(pair.batch_size)
        if any("circle" in t for t in pair.text.texts):
            raise ValueError("no circles here")
        return explain_pair(model, pair, "gradxinput")

    register_method("test-picky", order=2, summary="fails on circles")(picky)
    try:
        items = [it for it in open_dataset("shapes:", n=12).items()]
        circles = [it for it in items if "circle" in it.caption][:1]
        others = [it for it in items if "circle" not in it.caption][:3]
        units = [(it, ["test-picky", "gradxinput"]) for it in [*others[:1], *circles, *others[1:]]]
        cfg = WorkConfig(["test-picky", "gradxinput"], {}, MetricOptions(metrics="completeness"), 64, "shapes")
        out = process_items(tiny_clip, units, cfg, None)
    finally:
        METHODS.remove("test-picky")
    assert calls[0] == 4 and calls[1:] == [1, 1, 1, 1]  # one batched call, then one per item
    for (item, _), rows in zip(units, out, strict=True):
        pair_rows = {r["method"]: r for r in rows if r["level"] == "pair"}
        assert set(pair_rows) == {"test-picky", "gradxinput"}
        assert pair_rows["gradxinput"].get("error") is None
        err = pair_rows["test-picky"].get("error")
        if "circle" in item.caption:
            assert err == "explain: no circles here"
        else:
            assert err is None and pair_rows["test-picky"]["seconds"] > 0


def test_batch_size_is_validated(tmp_path, tiny_clip):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="batch_size"):
            evaluate(tiny_clip, "shapes:", ["random"], tmp_path / "r", batch_size=bad)
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- metrics as entries
GOLDEN = Path(__file__).parent / "data" / "shapes_run_before_registry.json"


def _plain(x: Any) -> Any:
    import numpy as np

    if isinstance(x, np.ndarray):
        return [_plain(v) for v in x.tolist()]
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if x != x else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


@pytest.mark.slow
def test_registered_metrics_give_the_values_of_the_hand_written_ladder(tmp_path):
    """The bundled shapes model run of `GOLDEN` was written before the metric registry (a hand-written ladder)."""
    out = tmp_path / "run"
    evaluate("shapes", "shapes:", ["ij", "fixlip", "gradxinput", "random"], out, dataset_options={"n": 2},
             method_options={"ij": {"n_steps": 2}, "fixlip": {"budget": 64}}, metrics=MetricOptions(faith_grid=5),
             batch_size=2, progress=False)  # fmt: skip
    df = read_run(out).sort_values(["item_id", "method", "object"])
    want = json.loads(GOLDEN.read_text())
    assert len(df) == len(want)
    for (_, row), old in zip(df.iterrows(), want, strict=True):
        new = {c: _plain(row[c]) for c in df.columns if not c.startswith("seconds") and c != "worker"}
        new = {c: v for c, v in new.items() if v is not None}
        assert set(new) == set(old), (row["item_id"], row["method"], row["object"])
        for c, v in old.items():
            if isinstance(v, float) or (isinstance(v, list) and v and isinstance(v[0], float)):
                assert new[c] == pytest.approx(v, rel=1e-6, abs=1e-9), c
            else:
                assert new[c] == v, c


def _one_item_rows(tiny_clip, metrics: str) -> list[dict[str, Any]]:
    item = open_dataset("shapes:", n=1).items()[0]
    cfg = WorkConfig(["random"], {}, MetricOptions(metrics=metrics, faith_grid=5), 64, "shapes")
    return process_item(tiny_clip, item, ["random"], cfg, None)


@pytest.fixture
def user_metric():
    from dualex.metrics import METRICS, register_metric

    names: list[str] = []

    def make(name: str, fn: Callable[..., Any], **kw: Any) -> None:
        register_metric(name, **kw)(fn)
        names.append(name)

    yield make
    for n in names:
        METRICS.remove(n)


def test_a_metric_failure_is_its_own_error_and_the_others_still_run(tiny_clip, user_metric):
    def broken(explanation, item, model, game):
        raise ValueError("nothing to see")

    def clash(explanation, item, model, game):
        return {"score": 1.0}

    def per_object(explanation, item, model, game):
        return [ValueError("no box here") if k == 0 else {"k_index": float(k)} for k in range(len(item.objects))]

    user_metric("t_broken", broken)
    user_metric("t_clash", clash)
    user_metric("t_objects", per_object, level="object")
    rows = _one_item_rows(tiny_clip, "t_broken,t_clash,t_objects,completeness")
    pair, objs = rows[0], rows[1:]
    assert pair["error"] == ("metric t_broken: nothing to see; metric t_clash: it returned the column(s) score, "
                             "which the row already has")  # fmt: skip
    assert pair["error_type"] == "ValueError" and "completeness_error" in pair and "seconds_t_broken" in pair
    assert objs[0]["error"] == "metric t_objects: no box here" and "k_index" not in objs[0]
    assert [o["k_index"] for o in objs[1:]] == [float(k) for k in range(1, len(objs))]


def test_the_game_is_built_only_for_metrics_that_need_it(tiny_clip, user_metric):
    seen: list[Any] = []
    user_metric("t_no_game", lambda explanation, item, model, game: seen.append(game) or {})
    user_metric("t_game", lambda explanation, item, model, game: seen.append(game) or {}, needs=("game",))
    _one_item_rows(tiny_clip, "t_no_game")
    _one_item_rows(tiny_clip, "t_no_game,t_game")
    assert seen[0] is None and seen[1] is None and type(seen[2]).__name__ == "DualEncoderGame"
