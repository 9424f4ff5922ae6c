"""The Ray engine on a local CPU-only Ray instance with a tiny model: same run directory as local."""

from __future__ import annotations

from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from dualex.evaluation import load_explanation, read_run  # noqa: E402
from dualex.evaluation.resume import done_in  # noqa: E402
from dualex.evaluation.run import MetricOptions, evaluate  # noqa: E402
from dualex.evaluation.store import RunStore  # noqa: E402

MODEL = "py:dualex.testing:tiny_hf_clip"
METRICS = MetricOptions(metrics="pointing,insertion_deletion,completeness")


@pytest.fixture
def local_ray():
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.optional
def test_ray_engine_writes_the_same_run_directory(tmp_path: Path, local_ray):
    out = tmp_path / "run"
    opts = {"ij": {"n_steps": 2}, "random": {}}
    first = evaluate(MODEL, "shapes:", ["ij"], out, dataset_options={"n": 3}, method_options=opts, metrics=METRICS)
    assert first.units_run == 3
    res = evaluate(MODEL, "shapes:", ["ij", "random"], out, dataset_options={"n": 3}, method_options=opts,
                   metrics=METRICS, engine="ray", shard_size=2)  # fmt: skip
    assert res.units_run == 3 and res.units_done_before == 3 and res.errors == 0  # only the new method ran
    df = read_run(out)
    pair = df[df.level == "pair"]
    assert len(pair) == 6 and not df.duplicated(["item_id", "method", "object"]).any()
    rnd = df[df.method == "random"]
    assert rnd["worker"].str.startswith("ray-").all()
    assert len(rnd[rnd.level == "object"]) == len(df[(df.method == "ij") & (df.level == "object")])
    assert rnd.loc[rnd.level == "pair", "aid"].notna().all()
    for _, row in rnd[rnd.level == "pair"].iterrows():
        assert load_explanation(out, row).method == "random"
    ray_shards = list((out / "shards").glob("part-*-ray*.parquet"))  # written by the workers themselves
    assert len(ray_shards) >= 2 and all(len(done_in(RunStore(out), [p.name])) <= 2 for p in ray_shards)
    assert evaluate(MODEL, "shapes:", ["ij", "random"], out, dataset_options={"n": 3}, method_options=opts,
                    metrics=METRICS, engine="ray").units_run == 0  # fmt: skip
