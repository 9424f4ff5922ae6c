"""Baseline methods the papers compare against, each a ``method=`` of `dualex.explain`.

First order: ``"gradxinput"``, ``"ig"`` (`gradients`), ``"grad_eclip"`` (`grad_eclip`), ``"game"``
(`game`). Second order: ``"interaction_cam"`` (`interaction_cam`), ``"interaction_lime"``
(`interaction_lime`), ``"fixlip_si"`` (`fixlip_si`). Sanity floor: ``"random"`` (`random`).
"""

from __future__ import annotations

from dualex.methods.baselines import (
    fixlip_si,
    game,
    grad_eclip,
    gradients,
    interaction_cam,
    interaction_lime,
    random,
)

__all__ = ["fixlip_si", "game", "grad_eclip", "gradients", "interaction_cam", "interaction_lime", "random"]
