"""Shared fixtures: tiny models built in code (no downloads), quiet and deterministic."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DUALEX_PROGRESS", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_clip():
    from dualex.testing import tiny_hf_clip

    return tiny_hf_clip()
