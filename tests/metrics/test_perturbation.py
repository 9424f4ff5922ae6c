"""Insertion/deletion and AID on games whose curves are known."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_toy import ToyEncoder, additive, caption

from dualex.games.surrogate import Surrogate
from dualex.games.surrogate import surrogate_of as surrogate
from dualex.metrics import area, greedy_sets, insertion_deletion, ranking_sets
from dualex.metrics.perturbation import default_starts


def test_area_of_known_curves():
    assert area(torch.linspace(0, 1, 11)) == pytest.approx(0.5)
    assert area(torch.ones(5)) == pytest.approx(1.0)
    assert area(torch.tensor([0.0, 1.0, 1.0])) == pytest.approx(0.75)
    assert math.isnan(area(torch.tensor([0.0, float("nan")])))


def test_ranking_sets():
    ins, dele = ranking_sets(torch.tensor([0.1, 3.0, -1.0, 2.0]))
    assert ins.shape == (5, 4)
    assert ins[2].tolist() == [False, True, False, True]
    assert dele[1].tolist() == [True, False, True, True]
    assert (ins.sum(1) == torch.arange(5)).all() and (dele.sum(1) == torch.arange(4, -1, -1)).all()


def test_first_order_curves_on_additive_game():
    # v(S) = 7 + Σ a_i; players: 2 words, then 2 patches (grid 1x2). Sorted a: 4, 3, 2, 1 (total 10).
    model = additive([3.0, 1.0, 2.0, 4.0], n_text=2, grid=(1, 2), intercept=7.0)
    pair = model.prepare(None, caption(2))
    ex = model.explanation(pair)
    c = insertion_deletion(model, pair, ex)
    assert c.order == 1
    assert c.v_empty == pytest.approx(7.0) and c.v_full == pytest.approx(17.0)
    assert c.insertion.tolist() == pytest.approx([0.0, 0.4, 0.7, 0.9, 1.0])
    assert c.deletion.tolist() == pytest.approx([1.0, 0.6, 0.3, 0.1, 0.0])
    assert c.insertion_auc == pytest.approx(0.625)
    assert c.deletion_auc == pytest.approx(0.375)
    assert c.aid == pytest.approx(0.25)
    # the reversed explanation swaps the curves: AID flips sign exactly
    bad = model.explanation(pair, main=-model.main)
    cb = insertion_deletion(model, pair, bad)
    assert cb.aid == pytest.approx(-0.25)


def test_pairs_scoring_below_the_empty_coalition_keep_aid_meaningful():
    # every part lowers the score: v(N) - v(∅) = -10. Ranking by the true values is still the best order.
    model = additive([-3.0, -1.0, -2.0, -4.0], n_text=2, grid=(1, 2), intercept=7.0)
    pair = model.prepare(None, caption(2))
    c = insertion_deletion(model, pair, model.explanation(pair))
    assert c.insertion.tolist() == pytest.approx([0.0, -0.1, -0.3, -0.6, -1.0])  # least harmful parts first
    assert c.deletion.tolist() == pytest.approx([-1.0, -0.9, -0.7, -0.4, 0.0])
    assert c.aid == pytest.approx(0.25)
    assert insertion_deletion(model, pair, model.explanation(pair, main=-model.main)).aid == pytest.approx(-0.25)


def test_second_order_greedy_finds_interacting_pair():
    # two words that are individually harmful (-1) but together strongly positive (+5): the best
    # 2-set is {w0, w1} (value 3); patches have small positive main effects.
    n = 4
    main = torch.tensor([-1.0, -1.0, 0.5, 0.2])
    pairs = torch.zeros(n, n)
    pairs[0, 1] = pairs[1, 0] = 5.0
    model = ToyEncoder(main, pairs, n_text=2, grid=(1, 2))
    pair = model.prepare(None, caption(2))
    ex = model.explanation(pair)
    c = insertion_deletion(model, pair, ex)
    assert c.order == 2 and c.n_starts == n
    # brute force: best value of each size
    best = []
    for k in range(n + 1):
        vals = []
        for s in itertools.combinations(range(n), k):
            keep = torch.zeros(1, n, dtype=torch.bool)
            keep[0, list(s)] = True
            vals.append(float(surrogate(ex).predict(keep)[0]))
        best.append((max(vals), min(vals)))
    total = best[n][0]
    assert c.raw_insertion.tolist() == pytest.approx([b[0] for b in best])
    assert c.raw_deletion.tolist() == pytest.approx([b[1] for b in reversed(best)])
    assert c.insertion.tolist() == pytest.approx([b[0] / abs(total) for b in best])
    # a first-order view cannot see the pair: its AID is lower
    assert insertion_deletion(model, pair, ex, order=1).aid < c.aid


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=6, max_size=6))
def test_greedy_is_exact_without_interactions(values):
    main = torch.tensor(values, dtype=torch.float64)
    sur = Surrogate.from_matrix(main, torch.zeros(6, 6, dtype=torch.float64))
    mx, mn, vmx, vmn = greedy_sets(sur)
    srt = torch.sort(main, descending=True).values
    assert vmx.tolist() == pytest.approx([0.0, *torch.cumsum(srt, 0).tolist()])
    assert vmn.tolist() == pytest.approx([0.0, *torch.cumsum(srt.flip(0), 0).tolist()])
    assert (mx.sum(1) == torch.arange(7)).all() and (mn.sum(1) == torch.arange(7)).all()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=5 + 25, max_size=5 + 25))
def test_greedy_size_one_is_exact_and_values_match_sets(values):
    main = torch.tensor(values[:5], dtype=torch.float64)
    p = torch.tensor(values[5:], dtype=torch.float64).reshape(5, 5)
    p = torch.triu(p, 1)
    p = p + p.T
    sur = Surrogate.from_matrix(main, p)
    mx, mn, vmx, vmn = greedy_sets(sur)
    assert vmx[1] == pytest.approx(float(main.max())) and vmn[1] == pytest.approx(float(main.min()))
    assert sur.predict(mx, intercept=False).tolist() == pytest.approx(vmx.tolist())
    assert sur.predict(mn, intercept=False).tolist() == pytest.approx(vmn.tolist())


def test_default_starts_for_many_players():
    g = torch.Generator().manual_seed(0)
    n = 150
    main = torch.randn(n, generator=g, dtype=torch.float64)
    sur = Surrogate.from_matrix(main, torch.zeros(n, n, dtype=torch.float64))
    s = default_starts(sur)
    assert 19 * 3 <= s.numel() <= 114 and len(set(s.tolist())) == s.numel()
    zero = Surrogate.from_matrix(torch.zeros(20, dtype=torch.float64), torch.zeros(20, 20))
    assert default_starts(zero).numel() == 20


def test_on_a_real_tiny_clip(tiny_clip):
    from dualex.testing import random_image

    pair = tiny_clip.prepare(random_image(0, (32, 32)), "a red circle")
    from dualex.methods import explain_pair

    ex = explain_pair(tiny_clip, pair, "ij", n_steps=3)[0]
    c = insertion_deletion(tiny_clip, pair, ex, internal_batch_size=7)
    n = 16 + 3
    assert c.insertion.shape == (n + 1,) and c.deletion.shape == (n + 1,)
    assert c.insertion[0] == pytest.approx(0.0) and c.insertion[-1] == pytest.approx(1.0)
    assert c.deletion[0] == pytest.approx(1.0) and c.deletion[-1] == pytest.approx(0.0)
    assert c.aid == pytest.approx(c.insertion_auc - c.deletion_auc)
