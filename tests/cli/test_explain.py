"""The command line: `dualex explain`, `dualex methods`, clear one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dualex.cli import main
from dualex.testing import random_image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny SigLIP saved as a transformers directory, loadable as `hf:DIR` offline."""
    from transformers import SiglipImageProcessor

    from dualex.testing import tiny_hf_siglip, tiny_hf_tokenizer

    d = tmp_path_factory.mktemp("tiny-siglip")
    tiny_hf_siglip().module.save_pretrained(d)
    tiny_hf_tokenizer(pad_is_eos=True).save_pretrained(d)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(random_image(3, (48, 64))).save(path)
    return path


def test_explain_writes_figure_and_json(model_dir, image_file, tmp_path, capsys):
    out = tmp_path / "fig.png"
    saved = tmp_path / "ex.safetensors"
    rc = main([
        "explain", str(image_file), "a red dog", "--model", f"hf:{model_dir}", "--out", str(out),
        "--span", "red dog", "--box", "0,0,32,24", "--n-steps", "3", "--save", str(saved), "--json",
    ])
    assert rc == 0
    assert out.exists() and out.stat().st_size > 1000
    d = json.loads(capsys.readouterr().out)
    assert d["method"] == "ij" and len(d["cross"]) == len(d["tokens"])
    assert np.asarray(d["spans"]["red dog"]).shape == tuple(d["grid"])
    assert len(d["boxes"][0]["text_scores"]) == len(d["tokens"])
    from dualex import Explanation

    ex = Explanation.load(saved)
    np.testing.assert_allclose(ex.cross.numpy(), np.asarray(d["cross"]), rtol=1e-6, atol=1e-9)


def test_explain_summary(model_dir, image_file, capsys):
    rc = main(["explain", str(image_file), "a red dog", "--model", f"hf:{model_dir}", "--n-steps", "2",
               "-O", "text_reference=\"same_length\"", "--span", "dog"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "method ij" in text and "span 'dog'" in text and "target" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--span", "purple cat"], "does not occur"),
        (["--box", "0,0,500,500"], "outside the image"),
        (["--layer", "7"], "out of range"),
        (["--method", "nope"], "unknown method"),
    ],
)
def test_bad_input_is_one_plain_line(model_dir, image_file, capsys, args, message):
    rc = main(["explain", str(image_file), "a red dog", "--model", f"hf:{model_dir}", "--n-steps", "2", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("dualex: error:")


def test_missing_image_and_unknown_model(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "none.png"), "a dog", "--model", "nope:x"]) == 2
    assert "unknown model name" in capsys.readouterr().err
    rc = main(["explain", str(tmp_path / "none.png"), "a dog", "--model", f"hf:{tmp_path / 'absent'}"])
    assert rc == 2
    assert "not found" in capsys.readouterr().err


def test_methods_lists_ij(capsys):
    assert main(["methods"]) == 0
    assert "ij" in capsys.readouterr().out
