"""`dualex.options`: options checked against the signature of the function that takes them."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest

from dualex.errors import InputError
from dualex.methods import list_methods
from dualex.options import check_options, methods_with_option, option_names


def method(
    model: Any,
    pair: Any,
    *,
    budget: int = 8,
    p: float = 0.5,
    units: Literal["cosine", "score"] = "cosine",
    layer: int | None = None,
    progress: bool | None = None,
    device: Any = None,
) -> None:
    """A method-like signature."""


def open_method(model: Any, pair: Any, **kw: Any) -> None:
    """Takes anything."""


@pytest.mark.parametrize("options", [
    {}, {"budget": 4}, {"budget": np.int64(4)}, {"p": 1}, {"p": 0.25}, {"units": "score"}, {"layer": None},
    {"layer": -1}, {"progress": False}, {"device": object()},
])  # fmt: skip
def test_accepted(options):
    check_options(method, options, what="method 'm'")


@pytest.mark.parametrize(("options", "pattern"), [
    ({"nosuch": 1}, r"method 'm' has no option 'nosuch' \(valid options: budget, device, layer, p, progress, units\)"),
    ({"budgt": 1}, r"did you mean 'budget'"),
    ({"n_samples": 1}, r"'n_samples': it is called 'budget' now"),
    ({"keep_prob": 0.3}, r"'keep_prob': it is called 'p' now"),
    ({"budget": 1e8}, r"budget of method 'm' must be an integer, got 100000000\.0 \(float\)"),
    ({"budget": True}, r"must be an integer, got True"),
    ({"p": "half"}, r"p of method 'm' must be a number"),
    ({"units": "logits"}, r"must be 'cosine' or 'score'"),
    ({"layer": 1.5}, r"must be an integer or None"),
    ({"progress": "yes"}, r"must be true/false or None"),
])  # fmt: skip
def test_refused(options, pattern):
    with pytest.raises(InputError, match=pattern):
        check_options(method, options, what="method 'm'")


def test_var_keyword_takes_anything():
    check_options(open_method, {"whatever": 1}, what="method 'o'")
    assert option_names(open_method) is None
    assert option_names(method) == ["budget", "device", "layer", "p", "progress", "units"]


def test_every_registered_method_has_checkable_options():
    """New methods are covered without a list: their signature is the contract."""
    fns = {name: info.fn for name, info in list_methods().items()}
    for name, fn in fns.items():
        names = option_names(fn)
        assert names is None or "model" not in names, name
        with pytest.raises(InputError, match=rf"method '{name}' has no option 'no_such_option'"):
            check_options(fn, {"no_such_option": 1}, what=f"method {name!r}")
    assert {"ij", "ig", "gradxinput"} <= set(methods_with_option("layer", fns))
    assert "fixlip" not in methods_with_option("layer", fns)


def test_sampling_methods_share_one_vocabulary():
    fns = {name: info.fn for name, info in list_methods().items()}
    for name in ("fixlip", "interaction_lime"):
        assert {"budget", "p", "seed", "progress", "internal_batch_size"} <= set(option_names(fns[name]) or ())
    assert "progress" in (option_names(fns["random"]) or ())
