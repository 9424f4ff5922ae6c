"""The command line of decisions: `dualex contrast`, `dualex zero-shot`, `dualex rank` on the bundled model."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

import dualex
from dualex.cli import main

SAMPLE = resources.files("dualex") / "assets" / "shapes" / "sample"
SCENE = str(SAMPLE / "scene.png")


def test_contrast_writes_figure_and_explanations(tmp_path, capsys):
    out = tmp_path / "c"
    rc = main(["contrast", SCENE, "a large purple star", "a small blue triangle", "--n-steps", "3",
               "--out", str(out), "--json"])  # fmt: skip
    assert rc == 0
    assert {p.name for p in out.iterdir()} >= {"figure.png", "a.safetensors", "b.safetensors", "contrast.json"}
    d = json.loads(capsys.readouterr().out)
    con = dualex.Contrast.load(out)
    assert d["difference"] == pytest.approx(con.difference)
    assert abs(con.decomposition()["residual"]) <= 1e-4
    assert con.labels == ("a large purple star", "a small blue triangle")


def test_zero_shot_report_and_files(tmp_path, capsys):
    out = tmp_path / "z"
    rc = main(["zero-shot", SCENE, "--classes", "star", "circle", "square", "--templates", "a {}",
               "there is a large purple {}", "--n-steps", "3", "--out", str(out)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    dec = json.loads((out / "decision.json").read_text())
    assert f"predicted {dec['predicted']!r}" in text
    assert sorted(dec["classes"]) == ["circle", "square", "star"] and len(dec["scores"]) == 3
    assert (out / "figure.png").stat().st_size > 0
    con = dualex.Contrast.load(out)
    assert con.labels == (dec["predicted"], dec["versus"])


def test_rank_a_folder_of_images(tmp_path, capsys):
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for name in ("scene.png", "scene_labels.png"):
        (gallery / name).write_bytes((SAMPLE / name).read_bytes())
    out = tmp_path / "r"
    rc = main(["rank", "a large purple star", str(gallery), "-k", "2", "--method", "gradxinput", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "ranking.json").read_text())
    assert summary["query_side"] == "text" and summary["explained"] == 2
    scores = summary["scores"]
    assert [scores[i] for i in summary["order"]] == sorted(scores, reverse=True)
    assert {p.name for p in out.iterdir()} >= {"rank_1.safetensors", "rank_2.png", "figure.png"}
    assert "1." in capsys.readouterr().out


def test_plain_errors(tmp_path, capsys):
    assert main(["zero-shot", SCENE, "--classes", "star", "circle", "--templates", "no brace",
                 "--out", str(tmp_path / "z")]) == 2  # fmt: skip
    assert "'{}'" in capsys.readouterr().err
    assert main(["rank", "a star", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["contrast", SCENE, "a", "b", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["contrast", SCENE, "a", "b", "--n-steps", "2", "--method", "gradxinput"]) == 2
    assert "does not apply" in capsys.readouterr().err
    assert Path(tmp_path / "z").exists() is False
