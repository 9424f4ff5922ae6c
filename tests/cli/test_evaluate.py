"""`dualex evaluate` / `dualex summary` from the command line, including a run killed midway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dualex.cli import main
from dualex.datasets import open_dataset
from dualex.evaluation import read_run

# Enough items that the kill lands midway even on a fast, idle machine (5 items once all finished within one poll).
N_ITEMS = 40
ARGS = ["evaluate", "--model", "py:dualex.testing:tiny_hf_clip", "--dataset", "shapes:", "-D", f"n={N_ITEMS}",
        "--methods", "ij", "-O", "ij.n_steps=2", "--metrics", "pointing,completeness", "--shard-size", "1",
        "--no-progress"]  # fmt: skip


@pytest.mark.slow
def test_killed_run_resumes_without_losing_or_duplicating_rows(tmp_path: Path, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DUALEX_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "dualex", *ARGS, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while not list((out / "shards").glob("part-*.parquet")):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else "exited"
            assert time.monotonic() < deadline, "no shard appeared"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    partial = read_run(out)
    done_before = partial[partial.level == "pair"]["item_id"].nunique()
    assert 1 <= done_before < N_ITEMS  # killed midway

    assert main([*ARGS, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{N_ITEMS - done_before} unit(s) run now, {done_before} already done" in printed
    assert "## Overall (per method)" in printed

    df = read_run(out)
    items = open_dataset("shapes:", n=N_ITEMS).items()
    pair = df[df.level == "pair"]
    assert sorted(pair["item_id"]) == sorted(it.id for it in items)  # complete
    assert not df.duplicated(["item_id", "method", "object"]).any()  # unique
    obj = df[df.level == "object"]
    assert len(obj) == sum(len(it.objects) for it in items)
    assert not list((out / "shards").glob(".tmp-*"))
    files = sorted(p.stem for p in (out / "explanations" / "ij").glob("*.safetensors"))
    assert files == sorted(it.id for it in items)


def test_summary_command_and_errors(tmp_path: Path, capsys):
    out = tmp_path / "run"
    args = [a if a != f"n={N_ITEMS}" else "n=2" for a in ARGS]
    assert main([*args, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| ij " in text and "Per class" in text
    assert (out / "summary" / "summary.md").read_text().strip() == text.strip()
    assert main(["summary", str(tmp_path / "missing")]) == 2
    assert "not a dualex run directory" in capsys.readouterr().err
    assert main([*args, "--out", str(out), "-O", "fixlip.budget=8"]) == 2
    assert "not in --methods" in capsys.readouterr().err
    assert main([*args[:-1], "--dataset", "pascal:/x", "--out", str(tmp_path / "r2")]) == 2
    assert "unknown dataset kind" in capsys.readouterr().err


def test_run_directory_turning_read_only_gives_one_plain_line(tmp_path: Path, capsys, monkeypatch):
    import errno

    from dualex.evaluation import store as store_mod

    out = tmp_path / "run"
    real_unlink = Path.unlink

    def read_only(self, *_args):  # the manifest was written; then the mount turned read-only
        raise OSError(errno.EROFS, "Read-only file system", str(self.shard_dir))

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name == ".lock":  # what a read-only mount does to the lock at release
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(store_mod.RunStore, "_write_shard", read_only)
    monkeypatch.setattr(Path, "unlink", unlink)
    code = main([*ARGS[:6], "n=1", *ARGS[7:], "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err and "cannot write results" in err
    assert len(err.strip().splitlines()) == 1, err
