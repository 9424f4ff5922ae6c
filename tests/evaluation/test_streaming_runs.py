"""Local runs over `webdataset:` and `parquet:` shards: same rows as the source dataset, resume by footers, errors."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dualex.datasets import open_dataset
from dualex.datasets.parquet import write_parquet
from dualex.datasets.webdataset import write_webdataset
from dualex.evaluation import read_run
from dualex.evaluation.resume import done_in, shard_index, shard_tag, shards_of
from dualex.evaluation.run import MetricOptions, evaluate
from dualex.evaluation.store import UNITS_KEY, RunStore, part_tag

METRICS = MetricOptions(metrics="pointing,insertion_deletion,completeness")
METHODS = ["gradxinput", "random"]
VOLATILE = ["worker", "dataset"]  # and the timings (seconds*): all else must be equal


def _values(df):
    drop = [c for c in df if c in VOLATILE or str(c).startswith("seconds")]
    df = df.drop(columns=drop).sort_values(["item_id", "method", "object"])
    return df.reset_index(drop=True)


def assert_same_rows(a, b) -> None:
    a, b = _values(a), _values(b)
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for c in a.columns:
        x, y = a[c].tolist(), b[c].tolist()
        if a[c].dtype.kind == "f":
            np.testing.assert_allclose(np.array(x, float), np.array(y, float), rtol=1e-5, atol=1e-6, err_msg=c)
        else:
            assert [str(v) for v in x] == [str(v) for v in y], c


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    write_webdataset(open_dataset("shapes:", n=5), root / "wds", shard_size=2)
    write_parquet(open_dataset("shapes:", n=5), root / "pq", shard_size=2)
    return root


def test_webdataset_run_equals_the_source_dataset_and_resumes_by_part(tmp_path: Path, shards: Path, tiny_clip):
    evaluate(tiny_clip, "shapes:", METHODS, tmp_path / "ref", dataset_options={"n": 5}, metrics=METRICS)
    spec = f"webdataset:{shards / 'wds'}"
    out = tmp_path / "run"
    res = evaluate(tiny_clip, spec, METHODS, out, metrics=METRICS, shard_size=2, batch_size=2)
    assert (res.units_total, res.units_run, res.units_done_before, res.errors) == (10, 10, 0, 0)
    assert_same_rows(read_run(tmp_path / "ref"), read_run(out))
    assert set(read_run(out)["dataset"]) == {"webdataset"}
    store = RunStore(out)
    parts = open_dataset(spec).parts()
    index = shard_index(store)
    assert set(index) == {part_tag(p) for p in parts}  # every shard is tagged with its part
    footer = pq.read_metadata(store.shards()[0]).metadata
    assert UNITS_KEY in footer
    assert done_in(store, shards_of(index, parts[1])) == {(f"heldout-0000{i}", m) for i in (2, 3) for m in METHODS}
    # a lost shard: only its units are redone, found from the other shards' footers alone
    lost = store.shards()[1]
    lost_units = len(done_in(store, [lost.name]))
    lost.unlink()
    again = evaluate(tiny_clip, spec, METHODS, out, metrics=METRICS, shard_size=2, batch_size=2)
    assert (again.units_run, again.units_done_before) == (lost_units, 10 - lost_units)
    assert_same_rows(read_run(tmp_path / "ref"), read_run(out))
    assert evaluate(tiny_clip, spec, METHODS, out, metrics=METRICS).units_run == 0
    # a new method on a resumed run, with a limit on a fresh directory reading only the parts it needs
    lim = evaluate(tiny_clip, spec, ["random"], tmp_path / "lim", metrics=METRICS, limit=3)
    assert lim.units_total == 3 and sorted(read_run(tmp_path / "lim")["item_id"].unique()) == [
        f"heldout-0000{i}" for i in range(3)]  # fmt: skip


def test_parquet_run_equals_the_webdataset_run(tmp_path: Path, shards: Path, tiny_clip):
    evaluate(tiny_clip, f"webdataset:{shards / 'wds'}", ["random"], tmp_path / "w", metrics=METRICS)
    res = evaluate(tiny_clip, f"parquet:{shards / 'pq'}", ["random"], tmp_path / "p", metrics=METRICS)
    assert res.units_run == 5 and res.errors == 0
    assert_same_rows(read_run(tmp_path / "w"), read_run(tmp_path / "p"))


def test_untagged_shards_of_older_runs_count_for_every_part(tmp_path: Path, shards: Path, tiny_clip):
    spec = f"webdataset:{shards / 'wds'}"
    out = tmp_path / "run"
    evaluate(tiny_clip, spec, ["random"], out, metrics=METRICS)
    store = RunStore(out)
    rows = [r for p in store.shards() for r in pq.read_table(p).to_pylist()]
    for p in store.shards():
        p.unlink()
    store.write_shard(rows, worker="old")  # as written before shards were tagged
    assert shard_tag(store.shards()[0].name) is None
    assert evaluate(tiny_clip, spec, ["random"], out, metrics=METRICS).units_run == 0


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_bad_shard_items_are_error_rows_and_retried_on_request(tmp_path: Path, shards: Path, tiny_clip):
    root = tmp_path / "wds"
    root.mkdir()
    (root / "00000.tar").write_bytes((shards / "wds" / "00000.tar").read_bytes())
    with tarfile.open(root / "00001.tar", "w") as tar:
        _member(tar, "broken.png", b"not a png")
        _member(tar, "broken.txt", b"a red circle")
        _member(tar, "nocaption.png", (shards / "wds" / "00000.tar").read_bytes()[:10])
    out = tmp_path / "run"
    res = evaluate(tiny_clip, f"webdataset:{root}", ["random"], out, metrics=METRICS)
    assert (res.units_run, res.errors) == (4, 2)
    df = read_run(out)
    err = df[(df.level == "pair") & df.error.notna()].set_index("item_id")
    assert err.loc["broken", "error"].startswith("load: cannot read 00001.tar:broken.png as an image")
    assert "no caption member nocaption.txt" in err.loc["nocaption", "error"]
    assert (out / "summary" / "errors.csv").exists() and "broken" in (out / "summary" / "errors.csv").read_text()
    assert evaluate(tiny_clip, f"webdataset:{root}", ["random"], out, metrics=METRICS).units_run == 0
    again = evaluate(tiny_clip, f"webdataset:{root}", ["random"], out, metrics=METRICS, retry_errors=True)
    assert (again.units_run, again.errors) == (2, 2)
    assert len(read_run(out).query("level == 'pair'")) == 4  # retried units are not duplicated
