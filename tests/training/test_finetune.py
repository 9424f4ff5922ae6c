from __future__ import annotations

import json
import math
import random

import pytest
import torch

import dualex
from dualex.cli import main
from dualex.errors import InputError, UnsupportedModelError
from dualex.training.finetune import (
    FinetuneConfig,
    coco_caption_pairs,
    epoch_batches,
    finetune,
    in_batch_recall,
    infonce_loss,
    sigmoid_loss,
)


def test_infonce_loss_matches_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    cos = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T
    L = 7.0 * cos
    want = 0.5 * (-(L.diag() - L.logsumexp(1)).mean() - (L.diag() - L.logsumexp(0)).mean())
    assert float(infonce_loss(a, b, 7.0)) == pytest.approx(float(want), rel=1e-5)
    assert float(infonce_loss(a, a, 50.0)) < 1e-3  # identical pairs are easy
    s = sigmoid_loss(a, b, 10.0, -2.0)
    z = 2 * torch.eye(5) - 1
    assert float(s) == pytest.approx(float(torch.log1p(torch.exp(-z * (10 * cos - 2))).sum(1).mean()), rel=1e-5)
    assert in_batch_recall(a, a) == 1.0


def test_epoch_batches_never_pair_two_captions_of_one_image():
    pairs = [(f"im{i}", f"cap{i}-{j}", f"im{i}") for i in range(10) for j in range(3)]
    batches = epoch_batches(pairs, 4, random.Random(0))
    seen = [img for b in batches for img, _ in b]
    assert sorted(seen) == sorted(f"im{i}" for i in range(10))  # every image once (last batch of 2 kept)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert epoch_batches(pairs, 3, random.Random(0)) == epoch_batches(pairs, 3, random.Random(0))
    assert [len(b) for b in epoch_batches(pairs[:12], 3, random.Random(0))] == [3]  # a lone last pair is dropped


def test_coco_caption_pairs(toy, tmp_path):
    root = toy.coco_fixture(tmp_path / "coco", n_images=3)
    pairs = coco_caption_pairs(root)
    assert len(pairs) == 6 and pairs[0][1] == "a red square" and pairs[0][0].endswith("train2017/000.png")
    assert coco_caption_pairs(root / "annotations" / "captions_train2017.json") == pairs
    with pytest.raises(InputError, match="not found"):
        coco_caption_pairs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="captions"):
        coco_caption_pairs(tmp_path / "empty")


def test_config_checks(tiny_clip):
    for bad in ({"epochs": 0}, {"batch_size": 1}, {"lr": 0.0}, {"weight_decay": -1.0}, {"warmup": 1.0}):
        with pytest.raises(InputError):
            FinetuneConfig(**bad).check()
    with pytest.raises(InputError, match="transformers tokenizer"):  # the tiny test CLIP has a word tokenizer
        finetune(tiny_clip, [("a", "b"), ("c", "d")], "unused-dir", epochs=1)


def test_finetune_tiny_clip_loss_decreases_and_reloads(toy, tmp_path):
    src = toy.tiny_clip_dir(tmp_path / "base")
    pairs = coco_caption_pairs(toy.coco_fixture(tmp_path / "coco", n_images=8))
    out = tmp_path / "tuned"
    model = dualex.load(f"hf:{src}", device="cpu")
    res = finetune(model, pairs, out, epochs=1, batch_size=4, lr=2e-3, warmup=0.0, seed=0)
    assert res.steps == 2 and len(res.losses) == 2 and all(math.isfinite(v) for v in res.losses)
    assert res.loss_after < res.loss_before
    assert res.n_images == 8 and res.n_pairs == 16 and res.config["batch_size"] == 4
    assert res.config["weight_decay"] == 1e-4 and res.config["base_model"] == f"hf:{src}"
    assert not any(p.requires_grad for p in model.module.parameters()) and not model.module.training
    reloaded = dualex.load(f"hf:{out}", device="cpu")
    pair = reloaded.prepare([pairs[0][0]], [pairs[0][1]])
    assert torch.allclose(reloaded.tower("image").encode(pair.image), model.tower("image").encode(model.prepare(
        [pairs[0][0]], [pairs[0][1]]).image), atol=1e-5)  # fmt: skip
    assert torch.allclose(reloaded.tower("text").encode(pair.text), model.tower("text").encode(pair.text), atol=1e-5)
    meta = json.loads((out / "dualex_finetune.json").read_text())
    assert meta["loss_after"] == pytest.approx(res.loss_after) and meta["steps"] == 2
    ex = dualex.explain(reloaded, pairs[0][0], pairs[0][1], method="ij", n_steps=2)
    assert ex.cross is not None and torch.isfinite(ex.cross).all()


def test_cli_finetune(toy, tmp_path, capsys):
    src = toy.tiny_clip_dir(tmp_path / "base")
    coco = toy.coco_fixture(tmp_path / "coco", n_images=4)
    out = tmp_path / "tuned"
    rc = main(["finetune", "--model", f"hf:{src}", "--dataset", f"coco:{coco}", "--out", str(out),
               "--epochs", "1", "--batch-size", "4", "--lr", "1e-3", "--device", "cpu"])  # fmt: skip
    assert rc == 0 and "contrastive loss" in capsys.readouterr().out
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    assert main(["finetune", "--model", f"hf:{src}", "--dataset", f"flickr:{coco}", "--out", str(out)]) == 2


def test_unsupported_family():
    from dualex.testing import tiny_hf_siglip2

    with pytest.raises(UnsupportedModelError, match="finetune supports"):
        finetune(tiny_hf_siglip2(), [("a", "b"), ("c", "d")], epochs=1)


def test_finetune_open_clip_saves_a_loadable_state_dict(toy, tmp_path):
    pytest.importorskip("open_clip")
    from safetensors.torch import load_file

    from dualex.testing import tiny_openclip

    pairs = coco_caption_pairs(toy.coco_fixture(tmp_path / "coco", n_images=4))
    model = tiny_openclip(layers=1)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.raises(InputError, match="open_clip architecture"):
        finetune(model, pairs, tmp_path / "x", epochs=1, batch_size=4)
    res = finetune(model, pairs, tmp_path / "oc", epochs=1, batch_size=4, lr=1e-3, openclip_arch="tiny")
    assert res.steps == 1 and res.load_name == f"openclip:tiny@{tmp_path / 'oc' / 'open_clip_model.safetensors'}"
    saved = load_file(str(tmp_path / "oc" / "open_clip_model.safetensors"))
    state = model.module.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in state)
    assert any(not torch.equal(before[k], state[k]) for k in state)  # it trained
    fresh = tiny_openclip(layers=1, seed=1)
    fresh.module.load_state_dict(saved)  # open_clip's own loader reads the same file by path
    img = fresh.prepare([pairs[0][0]], [pairs[0][1]])
    assert torch.allclose(fresh.tower("image").encode(img.image), model.tower("image").encode(img.image), atol=1e-5)
    assert json.loads((tmp_path / "oc" / "dualex_finetune.json").read_text())["load_name"] == res.load_name
