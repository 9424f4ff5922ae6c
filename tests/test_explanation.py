"""`Explanation.tokens`: display strings for every tokenizer, raw pieces in `pieces`, old files still load."""

from __future__ import annotations

import functools
import json

import pytest
import torch

import dualex
from dualex.bytelevel import display_piece
from dualex.explanation import Explanation
from dualex.testing import TINY_FAMILIES, tiny_pair_inputs

MARKERS = ("</w>", "Ġ", "\u2581", "##")


@functools.cache
def model(name: str) -> dualex.DualEncoder:
    return TINY_FAMILIES[name]()


@pytest.mark.parametrize(("piece", "shown"), [
    ("a</w>", "a"), ("photo</w>", "photo"), ("cafÃ©</w>", "café"), ("Ġphoto", "photo"), ("\u2581photo", "photo"),
    ("##ing", "ing"), ("Ã", "Ã"), ("<|startoftext|>", "<|startoftext|>"), ("Ġ", " "),
])  # fmt: skip
def test_display_piece(piece, shown):
    assert display_piece(piece) == shown


@pytest.mark.parametrize("family", ["hf-clip", "hf-siglip", "openclip", "sentence", "openclip:RN50"])
def test_tokens_are_display_strings_for_every_tokenizer(family):
    m = model(family)
    images, _ = tiny_pair_inputs(m)
    ex = dualex.explain(m, images[0], "a café photo of dogs", method="random")
    assert ex.pieces is not None and len(ex.pieces) == len(ex.tokens)
    players = [t for t, s in zip(ex.tokens, ex.special.tolist(), strict=True) if not s]
    assert players and not any(mark in t for t in players for mark in MARKERS), players
    assert all(t == t.strip() and t for t in players)
    known = [t for t in players if not (t.startswith(("[", "<")) and t.endswith(("]", ">")))]  # not [UNK]
    assert known and all(t in ex.text for t in known), known  # the caption's own characters
    assert ex.words() == ex.tokens


def test_bundled_clip_bpe_spells_words_not_pieces():
    ex = dualex.explain("shapes", dualex.testing.random_image(0), "a photo of a café", method="random")
    assert ex.tokens[1:-1] == ["a", "photo", "of", "a", "café"]
    assert ex.pieces[1:-1] == ["a</w>", "photo</w>", "of</w>", "a</w>", "cafÃ©</w>"]


def test_file_from_before_pieces_loads_with_display_tokens(tmp_path):
    from safetensors.torch import save_file

    ex = dualex.explain("shapes", dualex.testing.random_image(0), "a café", method="random")
    path = ex.save(tmp_path / "new.safetensors")
    assert Explanation.load(path).pieces == ex.pieces and Explanation.load(path).tokens == ex.tokens
    meta = {k: v for k, v in json.loads(json.dumps(ex.to_metadata())).items() if k != "pieces"}
    meta["tokens"] = ex.pieces  # dualex 0.2 stored the raw pieces as tokens, and no checksum of the metadata
    tensors = {k: v.contiguous() for k, v in ex.tensors().items()}
    tensors["special"] = tensors["special"].to(torch.uint8)
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"dualex": json.dumps(meta)})
    old = Explanation.load(tmp_path / "old.safetensors")
    assert old.tokens == ex.tokens and old.pieces == ex.pieces
