"""Engine options that need no cluster: connecting to an address that does not answer, --dtype, retries."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dualex.errors import InputError
from dualex.evaluation.precision import canonical_dtype
from dualex.evaluation.run import MetricOptions, evaluate

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed on exit: nothing listens there


def test_an_address_that_does_not_answer_is_one_line_within_seconds():
    pytest.importorskip("ray")
    from dualex.evaluation.engine_ray import connect

    port = _dead_port()
    t0 = time.monotonic()
    with pytest.raises(InputError, match=rf"no Ray cluster answers at 127.0.0.1:{port} \(--ray-address"):
        connect(f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 10
    with pytest.raises(InputError, match="is not HOST:PORT"):
        connect("nonsense")


@pytest.mark.optional
def test_ray_address_from_the_environment_fails_in_one_line(tmp_path: Path):
    pytest.importorskip("ray")
    port = _dead_port()
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}", "PYTHONPATH": SRC}
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "dualex", "evaluate", "--model", "py:dualex.testing:tiny_hf_clip", "--dataset",
         "shapes:", "-D", "n=1", "--methods", "random", "--out", str(tmp_path / "run"), "--engine", "ray"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert time.monotonic() - t0 < 60  # start-up included; the refusal itself takes a few seconds at most
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"no Ray cluster answers at 127.0.0.1:{port} (RAY_ADDRESS" in lines[0], res.stderr


def test_dtype_is_checked_and_recorded(tmp_path: Path, tiny_clip):
    assert canonical_dtype("BF16") == "bfloat16" and canonical_dtype(None) is None
    with pytest.raises(InputError, match="dtype must be one of"):
        evaluate(tiny_clip, "shapes:", ["random"], tmp_path / "bad", dataset_options={"n": 1}, dtype="int8")
    with pytest.raises(InputError, match="max_retries"):
        evaluate(tiny_clip, "shapes:", ["random"], tmp_path / "bad", dataset_options={"n": 1}, max_retries=-1)
    out = tmp_path / "run"
    metrics = MetricOptions(metrics="completeness")
    res = evaluate("py:dualex.testing:tiny_hf_clip", "shapes:", ["random"], out, dataset_options={"n": 1},
                   metrics=metrics, dtype="fp32", device="cpu")  # fmt: skip
    assert res.units_run == 1 and res.errors == 0
    assert json.loads((out / "manifest.json").read_text())["options"]["dtype"] == "float32"
    with pytest.raises(InputError, match="holds a run with options"):  # another dtype is another run
        evaluate("py:dualex.testing:tiny_hf_clip", "shapes:", ["random"], out, dataset_options={"n": 1},
                 metrics=metrics, dtype="bf16", device="cpu")  # fmt: skip


def test_run_directory_urls(tmp_path: Path, tiny_clip):
    metrics = MetricOptions(metrics="completeness")
    res = evaluate(tiny_clip, "shapes:", ["random"], f"file://{tmp_path / 'run'}", dataset_options={"n": 1},
                   metrics=metrics)  # fmt: skip
    assert res.run_dir == tmp_path / "run" and (tmp_path / "run" / "manifest.json").exists()
    with pytest.raises(InputError, match="is a URL; dualex writes runs to a file system path"):
        evaluate(tiny_clip, "shapes:", ["random"], "s3://bucket/run", dataset_options={"n": 1}, metrics=metrics)
