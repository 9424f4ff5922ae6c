"""A real two-node Ray cluster on 127.0.0.1: `dualex shards` + `dualex evaluate --engine ray` with the second
node killed mid-run ends with exit 0 and exactly the local engine's rows and values, no duplicates."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("ray")

from test_streaming_runs import assert_same_rows  # (tests/evaluation is on sys.path)

from dualex.cli import main
from dualex.evaluation import read_run
from dualex.evaluation.ray_cluster import LocalCluster, _children
from dualex.evaluation.run import MetricOptions, evaluate

SRC = str(Path(__file__).resolve().parents[2] / "src")
MODEL = "py:dualex.testing:tiny_hf_clip"
N_ITEMS = 48  # enough that work is left after node 1 writes its first shard, even when it joins late


def _descendants(pid: int) -> set[int]:
    kids, out, todo = _children(), set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += kids.get(p, [])
    return out


def _kill_when_node_writes(cluster: LocalCluster, shard_dir: Path, stop: threading.Event, log: list[str]) -> None:
    """Kill node 1's raylet as soon as one of its workers has written a shard (or after 240 s)."""
    raylet = None
    deadline = time.monotonic() + 240
    while not stop.is_set() and time.monotonic() < deadline:
        raylet = raylet or cluster.raylet(1)
        if raylet is not None:
            ours = _descendants(raylet)
            for p in sorted(shard_dir.glob("part-*.parquet")) if shard_dir.exists() else []:
                workers = set(pq.read_table(p, columns=["worker"]).column("worker").to_pylist())
                if any(int(w.rsplit("-", 1)[1]) in ours for w in workers if w and w.startswith("ray-")):
                    n = len(list(shard_dir.glob("part-*.parquet")))
                    cluster.kill_node(1)
                    log.append(f"killed node 1 after {n} shards at {time.time()}")
                    return
        time.sleep(0.2)
    if raylet is not None and not stop.is_set():
        cluster.kill_node(1)
        log.append("killed node 1 at the deadline")


@pytest.mark.slow
@pytest.mark.optional
def test_two_node_cluster_survives_a_node_killed_mid_run(tmp_path: Path, tiny_clip):
    shards = tmp_path / "shards"
    assert main(["shards", "--dataset", "shapes:", "-D", f"n={N_ITEMS}", "--out", str(shards), "--shard-size", "3",
                 "--no-progress"]) == 0  # fmt: skip
    metrics = MetricOptions(metrics="pointing,insertion_deletion,completeness")
    evaluate(tiny_clip, f"webdataset:{shards}", ["random"], tmp_path / "local", metrics=metrics)
    out = tmp_path / "ray"
    env_extra = {"PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1",
                 "DUALEX_PROGRESS": "0"}  # fmt: skip
    with LocalCluster(2, cpus=1, env=env_extra) as cluster:
        stop, log = threading.Event(), []
        killer = threading.Thread(target=_kill_when_node_writes, args=(cluster, out / "shards", stop, log))
        killer.start()
        try:
            res = subprocess.run(
                [sys.executable, "-m", "dualex", "evaluate", "--model", MODEL, "--dataset", f"webdataset:{shards}",
                 "--methods", "random", "--metrics", "pointing,insertion_deletion,completeness", "--out", str(out),
                 "--engine", "ray", "--concurrency", "2", "--batch-size", "2", "--max-retries", "3", "--no-progress"],
                env=cluster.driver_env(), capture_output=True, text=True, timeout=600,
            )  # fmt: skip
        finally:
            stop.set()
            killer.join()
        assert cluster.raylet(1) is None, f"node 1 was not killed: {log} {res.stderr[-2000:]}"
    assert res.returncode == 0, res.stderr[-3000:]
    assert log and log[0].startswith("killed node 1"), log
    killed_at = float(log[0].rsplit(" ", 1)[1])
    later = [p for p in (out / "shards").glob("part-*.parquet") if p.stat().st_mtime > killed_at]
    assert later, f"no work was left after the kill: {log}"  # the run went on without the node
    assert f"{N_ITEMS} unit(s) run now" in res.stdout
    ray_rows, local_rows = read_run(out), read_run(tmp_path / "local")
    assert not ray_rows.duplicated(["item_id", "method", "object"]).any()
    assert_same_rows(local_rows, ray_rows)
    workers = {w.rsplit("-", 1)[0] for w in ray_rows["worker"]}
    assert all(w.startswith("ray-") for w in workers)
