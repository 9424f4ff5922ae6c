"""The shapes CLIP training code: seeded batches, curriculum, and a two-step run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dualex.errors import InputError
from dualex.models.shapes import asset_dir, build_model, build_tokenizer
from dualex.training.shapes_train import TRAIN_WORDS, TrainConfig, learning_rate, make_batch, objects_at, train


def test_batches_are_a_function_of_the_step():
    cfg = TrainConfig(batch_size=6)
    a_img, a_txt = make_batch(7, cfg)
    b_img, b_txt = make_batch(7, cfg)
    assert a_txt == b_txt and all(np.array_equal(x, y) for x, y in zip(a_img, b_img, strict=True))
    assert len(a_img) == 6 and len(a_txt) == 12 and a_txt[:6] != make_batch(8, cfg)[1][:6]
    assert all(t != n for t, n in zip(a_txt[:6], a_txt[6:], strict=True))  # negatives differ from the truth


def test_curriculum_grows_from_one_object_and_schedule_warms_up():
    assert objects_at(0, 100) == (1,)
    assert 4 in objects_at(50, 100) and 4 in objects_at(99, 100, "keep_singles")
    assert 1 in objects_at(99, 100, "keep_singles") and 1 not in objects_at(99, 100)
    with pytest.raises(InputError):
        objects_at(0, 100, "nope")
    cfg = TrainConfig(steps=1000, warmup=10)
    assert learning_rate(0, cfg) < learning_rate(9, cfg) == pytest.approx(cfg.lr)
    assert learning_rate(999, cfg) == pytest.approx(0.05 * cfg.lr, rel=1e-3)


def test_every_training_word_is_in_the_compact_vocabulary():
    tok = build_tokenizer()
    vocab = set(tok(TRAIN_WORDS)["input_ids"])
    _, texts = make_batch(3, TrainConfig(batch_size=16, steps=10))
    assert set(tok(texts)["input_ids"][0]) <= vocab
    assert all(set(ids) <= vocab for ids in tok(texts)["input_ids"])


def test_two_steps_train_only_the_rows_of_used_tokens():
    cfg = TrainConfig(steps=2, batch_size=4, workers=0, log_every=1)
    lines: list[str] = []
    module, summary = train(cfg, log=lines.append)
    assert len(lines) == 2 and "loss" in lines[0] and summary["train_seconds"] > 0
    start = build_model(cfg.seed).text_model.embeddings.token_embedding.weight
    after = module.text_model.embeddings.token_embedding.weight
    tok = build_tokenizer()
    seen = {i for step in range(2) for ids in tok(make_batch(step, cfg)[1])["input_ids"] for i in ids}
    changed = (after != start).any(-1)
    assert bool(changed[sorted(seen)].all())  # rows of the tokens the two batches used moved
    others = torch.ones_like(changed)
    others[sorted(set(tok(TRAIN_WORDS)["input_ids"]))] = False
    assert not bool(changed[others].any())  # rows of tokens no caption can hold are exactly as initialised


def test_bundled_metrics_record_the_defaults_that_trained_them():
    m = json.loads((asset_dir() / "metrics.json").read_text())
    cfg = m["training"]["config"]
    defaults = TrainConfig()
    for key in ("steps", "batch_size", "lr", "warmup", "weight_decay", "seed", "curriculum", "colour_every"):
        assert cfg[key] == getattr(defaults, key), key
    g = m["grounding"]["layer-1"]["pge"]
    assert g["ij"] > g["gradxinput_caption"] and g["ij"] > g["gradxinput_phrase"] and g["ij"] > 3 * g["uniform"]
