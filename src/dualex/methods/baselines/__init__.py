"""Baseline methods the papers compare against, each a ``method=`` of `dualex.explain`.

First order, gradients: ``"gradxinput"``, ``"ig"`` (`gradients`). First order, attention:
``"grad_eclip"`` (`grad_eclip`), ``"game"`` (`gradient_rollout`), ``"legrad"`` (`legrad`), ``"rollout"``
(`rollout`). First order, dense features: ``"maskclip"`` (`maskclip`), ``"clip_surgery"``
(`clip_surgery`). First order, perturbation: ``"rise"`` (`rise`). Second order: ``"interaction_cam"``
(`interaction_cam`), ``"interaction_lime"`` (`interaction_lime`), ``"fixlip_si"`` (`fixlip_si`).
Sanity floor: ``"random"`` (`random`).
"""

from __future__ import annotations

from dualex.methods.baselines import (
    clip_surgery,
    fixlip_si,
    grad_eclip,
    gradient_rollout,
    gradients,
    interaction_cam,
    interaction_lime,
    legrad,
    maskclip,
    random,
    rise,
    rollout,
)

__all__ = [
    "clip_surgery",
    "fixlip_si",
    "grad_eclip",
    "gradient_rollout",
    "gradients",
    "interaction_cam",
    "interaction_lime",
    "legrad",
    "maskclip",
    "random",
    "rise",
    "rollout",
]
