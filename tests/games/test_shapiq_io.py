"""Round trips between `Surrogate` and ``shapiq.InteractionValues``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualex.games.exact import exact_fixlip
from dualex.games.regression import Surrogate

shapiq = pytest.importorskip("shapiq")
pytestmark = pytest.mark.optional

from dualex.games.shapiq_io import (  # noqa: E402
    index_for,
    interaction_values_to_surrogate,
    surrogate_to_interaction_values,
)


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_round_trip_keeps_every_term(p: float) -> None:
    sur = exact_fixlip(np.random.default_rng(0).normal(size=16), p)
    iv = surrogate_to_interaction_values(sur, p=p, estimated=False)
    assert isinstance(iv, shapiq.InteractionValues)
    assert iv.index == index_for(p) == ("FBII" if p == 0.5 else "FWBII")
    assert iv.n_players == 4 and iv.max_order == 2 and iv.baseline_value == pytest.approx(sur.intercept)
    assert iv[()] == pytest.approx(sur.intercept) and iv[(1,)] == pytest.approx(float(sur.main[1]))
    assert iv[(0, 3)] == pytest.approx(float(sur.pair_matrix()[0, 3]))
    back = interaction_values_to_surrogate(iv)
    assert back.intercept == pytest.approx(sur.intercept)
    torch.testing.assert_close(back.main, sur.main)
    torch.testing.assert_close(back.pair_matrix(), sur.pair_matrix())


def test_first_order_surrogate_and_missing_terms() -> None:
    sur = Surrogate(
        0.5,
        torch.tensor([1.0, 2.0], dtype=torch.float64),
        torch.zeros(0, 2, dtype=torch.long),
        torch.zeros(0, dtype=torch.float64),
    )
    iv = surrogate_to_interaction_values(sur)
    assert iv.max_order == 1
    back = interaction_values_to_surrogate(iv)
    assert back.pairs.shape == (0, 2) and back.main.tolist() == [1.0, 2.0]
