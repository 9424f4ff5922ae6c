"""The run-directory store: atomic shards, resume keys, newest-wins reading, manifest checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dualex.errors import InputError
from dualex.evaluation.store import BASE_COLUMNS, RunStore, read_run, safe_name, value_columns

MANIFEST = {"model": "m", "dataset": {"kind": "shapes", "path": None}, "methods": ["ij"],
            "method_options": {"ij": {}}, "options": {"metrics": ["pointing"]}}  # fmt: skip


def unit(item: str, method: str = "ij", *, n_objects: int = 1, error: str | None = None, score: float = 1.0):
    rows = [{"item_id": item, "method": method, "object": -1, "level": "pair", "score": score, "error": error}]
    rows += [{"item_id": item, "method": method, "object": k, "level": "object", "class_name": "circle",
              "boxes": [[0.0, 0.0, 4.0, 4.0]], "pg_energy_t2i": 0.5} for k in range(n_objects)]  # fmt: skip
    return rows


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    s = RunStore(tmp_path / "run")
    s.open(MANIFEST)
    return s


def test_round_trip_and_schema(store: RunStore):
    path = store.write_shard([*unit("a", n_objects=2), *unit("b")])
    assert path is not None and path.parent == store.shard_dir and path.name.startswith("part-")
    df = read_run(store.root)
    assert list(df.columns) == [*BASE_COLUMNS, "pg_energy_t2i"]  # the base columns, then what the rows hold
    assert str(df["pg_energy_t2i"].dtype) == "float64" and value_columns(df) == ["pg_energy_t2i", "score"]
    assert len(df) == 5 and set(df["item_id"]) == {"a", "b"}
    obj = df[df["level"] == "object"]
    assert [list(map(list, b)) for b in obj["boxes"]] == [[[0.0, 0.0, 4.0, 4.0]]] * 3
    assert (df["worker"] == "local").all()
    assert store.write_shard([]) is None


def test_nan_metrics_become_null_and_bad_columns_fail(store: RunStore):
    store.write_shard([{"item_id": "a", "method": "ij", "object": -1, "level": "pair", "aid": math.nan}])
    assert read_run(store.root)["aid"].isna().all()
    with pytest.raises(InputError, match="not a valid name"):
        store.write_shard([{"item_id": "a", "method": "ij", "Bad Name": 1}])
    with pytest.raises(InputError, match="holds number in one row and numbers in another"):
        store.write_shard([{"item_id": "a", "method": "ij", "x": 1.0}, {"item_id": "b", "method": "ij", "x": [1.0]}])
    with pytest.raises(InputError, match="unsupported value"):
        store.write_shard([{"item_id": "a", "method": "ij", "x": {"nested": 1}}])


def test_metric_columns_typed_from_values_and_unified_across_shards(store: RunStore):
    import numpy as np

    pair = {"item_id": "a", "method": "ij", "object": -1, "level": "pair"}
    store.write_shard([{**pair, "flag": True, "count": 3, "curve": np.array([0.5, 1.0]), "note": "x", "gone": None}])
    store.write_shard([{**pair, "item_id": "b", "curve": None, "gone": 2.5}])  # null-only and missing columns
    df = read_run(store.root).set_index("item_id")
    assert df.loc["a", "flag"] == 1.0 and df.loc["a", "count"] == 3.0 and df.loc["a", "note"] == "x"
    assert list(df.loc["a", "curve"]) == [0.5, 1.0] and df.loc["b", "curve"] is None
    assert math.isnan(df.loc["b", "count"]) and df.loc["b", "gone"] == 2.5 and math.isnan(df.loc["a", "gone"])
    assert value_columns(df.reset_index()) == ["flag", "count", "gone"]  # numeric columns; curves and text not


def test_done_keys_retry_errors_and_newest_wins(store: RunStore):
    store.write_shard(unit("a"))
    store.write_shard(unit("b", error="load: broken", n_objects=0))
    assert store.done_keys() == {("a", "ij"), ("b", "ij")}
    assert store.done_keys(retry_errors=True) == {("a", "ij")}
    store.write_shard(unit("b", score=2.0))  # the retry succeeded
    assert store.done_keys(retry_errors=True) == {("a", "ij"), ("b", "ij")}
    df = read_run(store.root)
    b = df[df["item_id"] == "b"]
    assert len(b) == 2 and b["error"].isna().all() and float(b[b.level == "pair"]["score"].iloc[0]) == 2.0
    assert not df.duplicated(["item_id", "method", "object"]).any()


def test_partial_and_corrupt_files_are_ignored(store: RunStore):
    store.write_shard(unit("a"))
    (store.shard_dir / ".tmp-part-0-local-x.parquet").write_bytes(b"half a shard")  # a killed write
    (store.shard_dir / "part-99999999999999999999-local-bad.parquet").write_bytes(b"not parquet")
    (store.root / "explanations" / "ij").mkdir(parents=True)
    (store.root / "explanations" / "ij" / "x.safetensors.tmp").write_bytes(b"")
    with pytest.warns(UserWarning, match="unreadable shard"):
        assert store.done_keys() == {("a", "ij")}
    assert store.clean_tmp() == 2
    assert not list(store.shard_dir.glob(".tmp-*"))


def test_manifest_resume_rules(tmp_path: Path, store: RunStore):
    again = RunStore(store.root)
    m = again.open({**MANIFEST, "methods": ["fixlip"], "method_options": {"fixlip": {"budget": 64}}})
    assert m["methods"] == ["ij", "fixlip"] and len(m["resumed"]) == 1
    assert json.loads(store.manifest_path.read_text())["method_options"] == {"ij": {}, "fixlip": {"budget": 64}}
    with pytest.raises(InputError, match="holds a run with model"):
        again.open({**MANIFEST, "model": "other"})
    with pytest.raises(InputError, match="ran method 'ij' with options"):
        again.open({**MANIFEST, "method_options": {"ij": {"n_steps": 3}}})
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        RunStore(stray).open(MANIFEST)
    with pytest.raises(InputError, match="not a dualex run directory"):
        read_run(tmp_path / "nowhere")


def test_safe_names_are_distinct():
    assert safe_name("123-4") == "123-4"
    a, b = safe_name("a/b"), safe_name("a_b")
    assert a != b and "/" not in a
