"""`Explanation`, the central result type: shapes, conditional maps, first-order views, totals, files;
`Explanation.tokens`: display strings for every tokenizer, raw pieces in `pieces`, old files still load."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dualex
from dualex.bytelevel import display_piece
from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.testing import TINY_FAMILIES, tiny_pair_inputs

TEXT = "red circle"
TOKENS = ["<bos>", "red", "circle", "<eos>"]
OFFSETS = [None, (0, 3), (4, 10), None]
SPECIAL = torch.tensor([True, False, False, True])


def make(cross: torch.Tensor | None = None, **kw) -> Explanation:
    """A 4-position caption (2 players) x 2 x 2 grid explanation built by hand."""
    if cross is None and "text_main" not in kw:
        cross = torch.arange(16, dtype=torch.float32).reshape(4, 4) * (~SPECIAL)[:, None]
    return Explanation(cross=cross, tokens=list(TOKENS), special=SPECIAL.clone(), text=TEXT, grid=(2, 2),
                       score=3.0, cosine=0.3, method="test", params=kw.pop("params", {}), token_offsets=list(OFFSETS),
                       **kw)  # fmt: skip


def test_shapes_are_checked_and_tensors_become_float_cpu():
    ex = make()
    assert ex.n_tokens == 4 and ex.n_patches == 4 and ex.players.tolist() == [1, 2]
    assert ex.cross is not None and ex.cross.dtype == torch.float32
    with pytest.raises(ValueError, match="cross must have shape"):
        make(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="special must have shape"):
        Explanation(cross=None, tokens=["a"], special=torch.zeros(2, dtype=torch.bool), text="a", grid=(1, 1),
                    score=0.0, cosine=0.0, method="x", params={})  # fmt: skip
    with pytest.raises(ValueError, match="no matching attribution term"):
        make(stderr={"text_pairs": torch.zeros(4, 4)})


def test_words_spans_and_conditional_maps():
    ex = make()
    assert ex.words() == ["<bos>", "red", "circle", "<eos>"]
    assert ex.span("circle").tolist() == [2] and ex.span(None).tolist() == [1, 2]
    assert ex.image_map("red").flatten().tolist() == ex.cross[1].tolist()  # type: ignore[index]
    assert torch.equal(ex.image_map(), (ex.cross[1] + ex.cross[2]).reshape(2, 2))  # type: ignore[index]
    left = torch.tensor([[True, False], [True, False]])
    scores = ex.text_scores(left)
    assert scores.tolist() == [0.0, 4.0 + 6.0, 8.0 + 10.0, 0.0]  # columns 0 and 2; specials zero
    with pytest.raises(InputError):
        ex.span("square")


def test_first_order_explanations_have_no_span_maps():
    ex = make(None, text_main=torch.tensor([9.0, 1.0, 2.0, 9.0]), image_main=torch.ones(4))
    assert ex.image_map().flatten().tolist() == [1.0] * 4
    assert ex.text_scores().tolist() == [0.0, 1.0, 2.0, 0.0]
    with pytest.raises(InputError, match="no token × patch interactions"):
        ex.image_map("red")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=8, max_size=8))
def test_marginal_first_order_of_interactions_adds_up_to_the_total_on_each_side(values):
    cross = torch.zeros(4, 4)
    cross[1:3] = torch.tensor(values, dtype=torch.float32).reshape(2, 4)
    ex = make(cross)
    text, image = ex.first_order()
    assert float(text.sum()) == pytest.approx(ex.total(), abs=1e-4)
    assert float(image.sum()) == pytest.approx(ex.total(), abs=1e-4)
    assert text[0] == 0 and text[3] == 0


def test_first_order_with_main_effects_shares_each_pair_by_p():
    cross = torch.zeros(4, 4)
    cross[1, 0] = 2.0
    ex = make(cross, text_main=torch.tensor([0.0, 1.0, 0.0, 0.0]), image_main=torch.zeros(4), params={"p": 0.25})
    text, image = ex.first_order()
    assert text[1] == pytest.approx(1.0 + 0.25 * 2.0) and image[0] == pytest.approx(0.25 * 2.0)
    assert ex.first_order(p=0.5)[1][0] == pytest.approx(1.0)


def test_total_counts_each_within_side_pair_once_and_completeness_follows_the_target():
    pairs = torch.zeros(4, 4)
    pairs[1, 2] = pairs[2, 1] = 0.5  # one pair, stored symmetrically
    ex = make(torch.zeros(4, 4), text_pairs=pairs, intercept=1.0, target=2.0)
    assert ex.total() == pytest.approx(1.5)
    attributed, target, err, rel = ex.completeness_terms()
    assert (attributed, target, err, rel) == pytest.approx((1.5, 2.0, -0.5, 0.25))
    assert ex.completeness()["error"] == pytest.approx(-0.5)
    assert all(math.isnan(v) for v in make().completeness_terms()[1:])  # no target: nothing claimed


def test_decomposition_adds_up_to_the_similarity():
    ex = make(target=3.0 - 0.5, baseline=0.5)
    parts = ex.decomposition()
    assert parts["similarity"] == 3.0 and parts["residual"] == pytest.approx(0.0, abs=1e-9)
    assert parts["attributed"] - parts["method_error"] + parts["baseline"] == pytest.approx(3.0)


def test_save_and_load_round_trip_every_field(tmp_path: Path):
    ex = make(torch.ones(4, 4), text_main=torch.tensor([0.0, 1.0, 2.0, 0.0]), image_main=torch.arange(4.0), target=5.0,
              stderr={"cross": torch.full((4, 4), 0.1)}, diagnostics={"r2": 0.9})  # fmt: skip
    path = ex.save(tmp_path / "ex")
    assert path.name == "ex.safetensors"
    back = Explanation.load(path)
    for name in ("cross", "text_main", "image_main", "special"):
        assert torch.equal(getattr(back, name), getattr(ex, name)), name
    assert torch.equal(back.stderr["cross"], ex.stderr["cross"])
    assert (back.tokens, back.text, back.grid, back.target, back.diagnostics) == (
        ex.tokens, ex.text, tuple(ex.grid), ex.target, ex.diagnostics)  # fmt: skip
    assert back.token_offsets == [None, (0, 3), (4, 10), None]
    with pytest.raises(InputError, match="not found"):
        Explanation.load(tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------- tokens and pieces
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


def test_second_sentence_tokens_of_bi_encoders_are_display_strings_too(tmp_path):
    m = model("sentence")
    ex = dualex.explain(m, "the girl is carrying a baby", "a dog plays", method="random")
    assert ex.image_pieces is not None and len(ex.image_pieces) == len(ex.image_tokens)
    assert not any(mark in t for t in ex.image_tokens for mark in MARKERS), ex.image_tokens
    back = Explanation.load(ex.save(tmp_path / "tt.safetensors"))
    assert back.image_tokens == ex.image_tokens and back.image_pieces == ex.image_pieces
