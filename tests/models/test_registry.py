from __future__ import annotations

import pytest

from dualex.errors import InputError
from dualex.models.registry import load, resolve_model
from dualex.testing import tiny_hf_clip


def test_resolve_model_accepts_adapters_and_names():
    model = tiny_hf_clip()
    assert resolve_model(model) is model
    named = resolve_model("py:dualex.testing:tiny_hf_clip")
    assert named.name == "tiny-hf-clip"


def test_bundled_and_factory_names_are_registered():
    assert load("shapes", device="cpu").name == "shapes"  # registered by dualex.models.shapes
    with pytest.raises(InputError, match="py:module:function"):
        load("nosuchprefix:x")
    with pytest.raises(InputError, match="py:module:function"):
        load("py:dualex.testing")
