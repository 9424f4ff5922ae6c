"""FIxLIP on tiny models: fields and units, exactness at full budget, estimator agreement, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dualex
from dualex.errors import InputError
from dualex.games.exact import enumerate_coalitions, exact_fixlip, weighted_banzhaf_values
from dualex.games.game import DualEncoderGame
from dualex.games.regression import fit_product_surrogate, fit_surrogate
from dualex.games.sampler import sample_banzhaf
from dualex.games.surrogate import explanation_terms, surrogate_of
from dualex.methods import explain_pair
from dualex.methods.fixlip import choose_split
from dualex.testing import random_image, tiny_hf_clip

CAPTION = "red dog sits"  # 3 players between BOS and EOS


@pytest.fixture(scope="module")
def small() -> tuple[dualex.DualEncoder, dualex.Pair]:
    """A 16-px tiny CLIP: 2×2 patches + 3 tokens = 7 players (2^7 = 128 coalitions)."""
    model = tiny_hf_clip(image_size=16, patch_size=8)
    return model, model.prepare(random_image(1), CAPTION)


@pytest.fixture(scope="module")
def exact_values(small) -> np.ndarray:
    """v(S) of all 128 coalitions in enumeration order (bit i = joint player i, patches first)."""
    model, pair = small
    game = DualEncoderGame(model, pair)
    Zi, Zt = enumerate_coalitions(4), enumerate_coalitions(3)
    V = game.grid(Zi, Zt).cpu().numpy()  # V[a, b] = v(image a ∪ text b); joint index = a + 16 b
    return V.T.reshape(-1)


def test_fields_units_and_diagnostics(tiny_clip) -> None:
    ex = dualex.explain(tiny_clip, random_image(0), "a red dog on grass", method="fixlip", budget=2**9, holdout=64)
    S = len(ex.tokens)
    assert ex.cross.shape == (S, 16) and ex.text_pairs.shape == (S, S) and ex.image_pairs.shape == (16, 16)
    assert ex.text_main.shape == (S,) and ex.image_main.shape == (16,)
    for t in (ex.cross, ex.text_pairs, ex.text_pairs.T):
        assert (t[ex.special] == 0).all()
    assert ex.text_main[ex.special].abs().sum() == 0
    for m in (ex.text_pairs, ex.image_pairs):
        assert torch.equal(m, m.T) and m.diagonal().abs().sum() == 0
    d = ex.diagnostics
    assert ex.target == pytest.approx(d["v_full"] - d["v_empty"]) and ex.baseline == pytest.approx(d["v_empty"])
    assert d["v_full"] == pytest.approx(ex.score, abs=1e-4)  # unmasked pair = the model's own score
    c = ex.completeness()
    for key in ("r2", "spearman", "r2_train", "attributed", "target", "error"):
        assert key in c and np.isfinite(c[key])
    assert c["attributed"] == pytest.approx(
        ex.intercept
        + float(ex.text_main.sum() + ex.image_main.sum())
        + float(ex.cross.sum())
        + float(ex.text_pairs.triu(1).sum())
        + float(ex.image_pairs.triu(1).sum()),
        abs=1e-4,
    )
    assert d["n_values"] <= 2**9 and d["m_image"] + d["m_text"] + 2 + d["holdout_values"] >= d["n_passes"] - 64
    assert ex.params["units"] == "score" and ex.params["p"] == 0.5 and ex.method == "fixlip"


@pytest.mark.parametrize("estimator", ["crossmodal", "agnostic"])
@pytest.mark.parametrize("p", [0.5, 0.3])
def test_full_budget_gives_exact_fixlip(small, exact_values, estimator: str, p: float) -> None:
    model, pair = small
    ex = explain_pair(model, pair, "fixlip", p=p, budget=2**7, estimator=estimator, holdout=0)[0]
    truth = exact_fixlip(exact_values, p)
    got = surrogate_of(ex)
    assert ex.diagnostics["n_values"] == 128
    assert got.intercept == pytest.approx(truth.intercept, abs=1e-5)
    torch.testing.assert_close(got.main, truth.main, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.pair_matrix(), truth.pair_matrix(), atol=1e-5, rtol=0)
    # the first-order conversion is the exact weighted Banzhaf value
    text, image = ex.first_order()
    phi = weighted_banzhaf_values(exact_values, p)
    np.testing.assert_allclose(image.numpy(), phi[:4], atol=1e-4)
    np.testing.assert_allclose(text[ex.players].numpy(), phi[4:], atol=1e-4)


def test_crossmodal_and_agnostic_estimators_agree_in_expectation(exact_values) -> None:
    """Both estimators, run on the tiny CLIP's game at a partial budget, average to the same values."""
    v, p, budget, runs = exact_values, 0.5, 96, 60
    idx = 1 << np.arange(7)
    truth = exact_fixlip(v, p)
    t_vec = torch.cat([truth.main, truth.pair_values]).numpy()

    def agnostic(seed: int) -> np.ndarray:
        s = sample_banzhaf(7, budget, p, np.random.default_rng(seed))
        f = fit_surrogate(s.coalitions, v[s.coalitions @ idx] - v[0], s.weights)
        return torch.cat([f.main, f.pair_values]).numpy()

    def crossmodal(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        mi, mt = choose_split(budget, 4, 3)
        si, st = sample_banzhaf(4, mi, p, rng), sample_banzhaf(3, mt, p, rng)
        V = v[(si.coalitions @ idx[:4])[:, None] + (st.coalitions @ idx[4:])[None, :]] - v[0]
        f = fit_product_surrogate(si.coalitions, si.weights, st.coalitions, st.weights, V)
        return torch.cat([f.main, f.pair_values]).numpy()

    a = np.stack([agnostic(s) for s in range(runs)])
    c = np.stack([crossmodal(1000 + s) for s in range(runs)])
    scale = np.abs(t_vec).max()
    single = np.abs(a - t_vec).max(1).mean()
    assert single > 0.02 * scale  # a partial budget: single runs are noisy
    for est in (a, c):  # the mean of 60 runs is much closer to the truth than a single run
        assert np.abs(est.mean(0) - t_vec).max() < 0.25 * single
    assert np.abs(a.mean(0) - c.mean(0)).max() < 0.4 * single


@pytest.mark.parametrize(
    ("pairs", "expect"),
    [
        ("crossmodal", (True, False, False)),
        ("none", (False, False, False)),
        (5, (True, True, True)),
        ([(0, 5), (1, 2)], (True, False, True)),
    ],
)
def test_pair_options(small, pairs, expect) -> None:
    model, pair = small
    ex = explain_pair(model, pair, "fixlip", budget=64, pairs=pairs, holdout=0)[0]
    has = (ex.cross is not None, ex.text_pairs is not None, ex.image_pairs is not None)
    assert has == expect
    if pairs == 5:  # the reference's clique rule: all 3 tokens (at least 5 if there were), then 2 patches
        assert ex.diagnostics["n_pairs"] == 10 and int((ex.image_pairs != 0).sum()) == 2
    if pairs == "none":
        assert ex.image_map().shape == (2, 2)


def test_seed_and_batches(small) -> None:
    model, pair = small
    a = explain_pair(model, pair, "fixlip", budget=48, seed=3, holdout=0)[0]
    b = explain_pair(model, pair, "fixlip", budget=48, seed=3, holdout=0)[0]
    c = explain_pair(model, pair, "fixlip", budget=48, seed=4, holdout=0)[0]
    assert torch.equal(a.cross, b.cross) and not torch.equal(a.cross, c.cross)
    both = dualex.explain(
        model, [random_image(1), random_image(2)], [CAPTION, "a cat"], method="fixlip", budget=48, seed=3, holdout=0
    )
    alone = dualex.explain(model, random_image(2), "a cat", method="fixlip", budget=48, seed=3, holdout=0)
    # the batch pads "a cat" to 5 positions; explain cuts the padding: the shapes of the pair alone
    assert len(both) == 2 and both[1].n_tokens == alone.n_tokens == 4 and both[1].players.numel() == 2
    assert (both[1].cross[both[1].special] == 0).all()
    torch.testing.assert_close(both[1].cross, alone.cross, atol=1e-5, rtol=0)
    torch.testing.assert_close(both[0].cross, a.cross, atol=1e-5, rtol=0)


def test_save_load_and_shapiq_round_trip(small, tmp_path) -> None:
    model, pair = small
    ex = explain_pair(model, pair, "fixlip", budget=64, holdout=16)[0]
    back = dualex.Explanation.load(ex.save(tmp_path / "fx"))
    assert back.intercept == pytest.approx(ex.intercept) and torch.equal(back.text_pairs, ex.text_pairs)
    assert back.completeness()["r2"] == pytest.approx(ex.completeness()["r2"])
    pytest.importorskip("shapiq")
    from dualex.games.shapiq_io import from_interaction_values, to_interaction_values

    iv = to_interaction_values(ex)
    assert iv.n_players == 7 and iv.index == "FBII"
    again = from_interaction_values(iv, like=ex)
    torch.testing.assert_close(again.cross, ex.cross)
    assert again.intercept == pytest.approx(ex.intercept)


def test_auto_split_gives_each_side_enough_coalitions_when_the_budget_allows() -> None:
    assert choose_split(616, 10, 4, split="reference") == (61, 10)  # 4 tokens: 11 text-side terms
    assert choose_split(616, 10, 4) == (56, 11)
    assert choose_split(616, 10, 4, "crossmodal") == (61, 10)  # 5 text-side terms: already enough
    assert choose_split(200, 10, 4) == choose_split(200, 10, 4, split="reference")  # 56·11 > 200


def test_explanation_terms_place_caption_players() -> None:
    from dualex.games.surrogate import Surrogate

    sur = Surrogate(
        0.1,
        torch.arange(5, dtype=torch.float64),
        torch.tensor([[0, 1], [0, 3], [3, 4]]),
        torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
    )
    t = explanation_terms(sur, 3, torch.tensor([1, 2]), 4)  # 3 patches; caption players at positions 1, 2
    assert t["text_main"].tolist() == [0, 3, 4, 0] and t["image_main"].tolist() == [0, 1, 2]
    assert t["cross"][1].tolist() == [2, 0, 0] and t["text_pairs"][1, 2] == 3 and t["image_pairs"][0, 1] == 1


@pytest.mark.parametrize(
    "options",
    [
        {"p": 0.0},
        {"p": 1.0},
        {"budget": 3},
        {"estimator": "exact"},
        {"pairs": "some"},
        {"pairs": 1},
        {"holdout": 2},
        {"internal_batch_size": 0},
        {"image_masking": "blur"},
        {"text_masking": "blur"},
        {"m_image": 0},
        {"pairs": [(0, 99)]},
    ],
)
def test_bad_options_raise_input_errors(small, options) -> None:
    model, pair = small
    with pytest.raises(InputError):
        explain_pair(model, pair, "fixlip", **{"budget": 16, "holdout": 0, **options})


@pytest.mark.parametrize("factory", ["tiny_hf_siglip", "tiny_openclip", "tiny_sentence"])
def test_other_adapters(factory: str) -> None:
    import dualex.testing

    model = getattr(dualex.testing, factory)()
    image = "two people walk a dog" if model.tower("image").modality == "text" else random_image(0)
    ex = dualex.explain(model, image, "a dog", method="fixlip", budget=64, holdout=16)
    P = ex.n_patches
    assert ex.cross.shape == (ex.n_tokens, P) and np.isfinite(ex.completeness()["r2_train"])
    assert ex.target == pytest.approx(ex.score - ex.baseline, abs=1e-3)


def test_metrics_read_the_same_surrogate(small) -> None:
    """The one reader of explanations predicts what the explanation's own fields say (patches first)."""
    model, pair = small
    ex = explain_pair(model, pair, "fixlip", budget=64, holdout=0)[0]
    keep = torch.rand(50, 7, generator=torch.Generator().manual_seed(0)) < 0.5  # 4 patches, then 3 tokens
    img, txt = keep[:, :4].double(), keep[:, 4:].double()
    tp = ex.players
    direct = (
        ex.intercept
        + img @ ex.image_main.double()
        + txt @ ex.text_main.double()[tp]
        + ((txt @ ex.cross.double()[tp]) * img).sum(1)
        + ((img @ ex.image_pairs.double().triu(1)) * img).sum(1)
        + ((txt @ ex.text_pairs.double()[tp][:, tp].triu(1)) * txt).sum(1)
    )
    torch.testing.assert_close(surrogate_of(ex).predict(keep), direct, atol=1e-5, rtol=0)
    # the game the metrics measure is the game FIxLIP fits: v(N) - v(∅) is the explanation's target
    game = DualEncoderGame(model, pair)
    v0, vN = game.empty_and_full()
    assert vN - v0 == pytest.approx(ex.target, abs=1e-6)


def test_huge_budget_is_exact_on_a_small_game_and_refused_at_once_on_a_large_one(small, exact_values, monkeypatch):
    """Issue 24: ``budget=10**12`` hung in the sampler; now exact where it can be, else refused before any pass."""
    model, pair = small
    ex = explain_pair(model, pair, "fixlip", budget=10**12, n_boot=0)[0]
    truth = exact_fixlip(exact_values, 0.5)
    torch.testing.assert_close(surrogate_of(ex).pair_matrix(), truth.pair_matrix(), atol=1e-5, rtol=0)
    assert ex.diagnostics["exact"] == 1.0 and ex.diagnostics["n_values"] == 128
    from dualex.datasets.shapes_generator import sample_image_path

    shapes = dualex.load("shapes")

    def boom(*args, **kwargs):
        raise AssertionError("no tower pass before the budget is checked")

    for side in ("text", "image"):
        monkeypatch.setattr(shapes.tower(side), "encode", boom)
    for estimator in ("crossmodal", "agnostic"):
        with pytest.raises(InputError, match=r"budget 1,000,000,000,000"):
            dualex.explain(shapes, str(sample_image_path()), "a large purple star", method="fixlip", budget=10**12,
                           estimator=estimator)  # fmt: skip


def test_default_diagnostics_are_cross_fitted_without_extra_passes(small) -> None:
    model, pair = small
    fast = explain_pair(model, pair, "fixlip", budget=40, holdout=0, n_boot=0)[0]
    ex = explain_pair(model, pair, "fixlip", budget=40, n_boot=0)[0]
    old = explain_pair(model, pair, "fixlip", budget=40, holdout=256, n_boot=0)[0]
    assert ex.diagnostics["n_passes"] == fast.diagnostics["n_passes"] < old.diagnostics["n_passes"]
    assert torch.equal(ex.cross, fast.cross) and torch.equal(ex.cross, old.cross)  # diagnostics never change it
    assert ex.params["diagnostics"] == "crossfit" and old.params["diagnostics"] == "holdout"
    assert ex.diagnostics["crossfit_values"] > 0 and old.diagnostics["holdout_values"] > 0
    assert "r2" in ex.completeness() and "r2" not in fast.diagnostics
