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
    {}, {"budget": 4}, {"budget": np.int64(4)}, {"p": np.float32(0.5)}, {"p": 0.25}, {"units": "score"},
    {"layer": None}, {"layer": -1}, {"progress": False}, {"device": object()},
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


@pytest.mark.parametrize(("options", "pattern"), [
    ({"p": 1.5}, r"option p of method 'fixlip' must be a keep probability strictly between 0 and 1, got 1\.5"),
    ({"p": 0}, r"strictly between 0 and 1, got 0"),
    ({"budget": 0}, r"option budget of method 'fixlip' must be a positive integer, got 0"),
    ({"budget": -8}, r"must be a positive integer, got -8"),
    ({"n_boot": 1}, r"option n_boot of method 'fixlip' must be 0 \(no standard errors\) or at least 2"),
    ({"internal_batch_size": 0}, r"internal_batch_size .* must be a positive integer"),
])  # fmt: skip
def test_values_out_of_range_refused_before_the_model_loads(options, pattern, monkeypatch):
    import dualex
    import dualex.methods as methods_mod

    def never(*_a, **_kw):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(methods_mod, "resolve_model", never)
    with pytest.raises(InputError, match=pattern):
        dualex.explain("openclip:ViT-L-14@random", "scene.png", "a caption", method="fixlip", **options)


def test_ranges_hold_for_every_method_that_takes_the_option():
    fns = {name: info.fn for name, info in list_methods().items()}
    for name in methods_with_option("n_steps", fns):
        with pytest.raises(InputError, match="positive integer"):
            check_options(fns[name], {"n_steps": 0}, what=f"method {name!r}")
        check_options(fns[name], {"n_steps": 1}, what=f"method {name!r}")
    for name in methods_with_option("p", fns):
        check_options(fns[name], {"p": 0.3}, what=f"method {name!r}")
