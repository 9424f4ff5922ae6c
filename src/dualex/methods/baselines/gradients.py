"""First-order gradient attributions of the similarity: gradient × input and integrated gradients.

* **Gradient × input** (``method="gradxinput"``): Shrikumar et al., "Not Just a Black Box: Learning
  Important Features Through Propagating Activation Differences" (arXiv:1605.01713, 2016);
  ``a_i = x_i · ∂f/∂x_i`` (or ``(x_i − r_i) · ∂f/∂x_i`` against a reference r).
* **Integrated gradients** (``method="ig"``): Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep
  Networks", ICML 2017 (arXiv:1703.01365);
  ``a_i = (x_i − r_i) · ∫_0^1 ∂f/∂x_i(r + α (x − r)) dα``, with completeness
  ``Σ_i a_i = f(x) − f(r)``.

The explained function f is the pair's similarity (cosine, or the model's score for
``units="score"``). Inputs x are the hidden states entering block ``layer`` of a tower (0 = the
embedding output), attributed per position by summing over the hidden width, as captum's
``LayerIntegratedGradients`` does. ``side`` picks what moves along the path:

* ``"image"``: the image hidden states go from the reference to the input, the caption stays;
  ``Σ image = f(x_t, x_i) − f(x_t, r_i)``;
* ``"text"``: the same for the caption;
* ``"both"``: both move together on one path (captum's behaviour for several inputs);
  ``Σ text + Σ image = f(x_t, x_i) − f(r_t, r_i)``.

Outputs: ``text_main`` ``(S,)`` over all caption positions (special tokens included and flagged) and
``image_main`` ``(P,)`` over the patches. The image's CLS/prefix positions are players of neither
side; their attribution is kept in ``diagnostics["image_prefix"]``. With a reference (``ig``, or
``gradxinput`` with ``baselines``) it is exactly 0 at layer 0 of a CLIP-style tower: the CLS embedding
does not depend on the pixels, so x − r is 0 there. Plain gradient × input (``baselines=None``)
multiplies by x itself and gives the CLS position a share (0.0044 cosine units on a random ViT-B/32).

Peer conventions (checked against captum 0.9 on a random ViT-B/32): ``ig`` equals captum's
``LayerIntegratedGradients`` to 1e-7 with ``quadrature="gausslegendre"`` or ``"riemann_right"``, and
``gradxinput`` equals ``LayerGradientXActivation``; ``quadrature="riemann_trapezoid"`` is the exact
trapezoid rule (weights summing to 1), N/(N − 1) times captum's, whose weights sum to (N − 1)/N
(`dualex.methods.quadrature.alphas_and_weights`). ``multiply_by_inputs=False`` returns the plain gradient
summed over the hidden width, which is identically 0 wherever the hidden states enter a LayerNorm (every
block of a pre-LN transformer: adding a constant to all width entries of a position changes nothing
downstream), so on such towers those maps are float noise; `explain_gradxinput` then warns.

Conditional maps: both methods explain the pair's score as a whole and define no per-token image
map, so ``cross`` is None and ``image_map(span)`` raises. For a span-conditional first-order map
explain the pair (image, span text) instead; for true token × patch terms use ``method="ij"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch import Tensor

from dualex.explanation import Explanation
from dualex.methods import register_method
from dualex.methods.common import (
    SideOption,
    Units,
    baseline_kinds,
    build_explanation,
    check_units,
    layer_pair,
    row_chunks,
    rows_per_pass,
    scores_of,
    sides_of,
    similarity,
)
from dualex.methods.quadrature import alphas_and_weights
from dualex.methods.shared import SideMemo, distinct_rows
from dualex.models.base import SIDES, DualEncoder, Pair, Side, SideInputs
from dualex.progress import bar


def reference_kinds(model: DualEncoder, baselines: str | Mapping[str, str] | None) -> dict[str, str]:
    """Reference kind per side from captum-style ``baselines`` (`methods.common.baseline_kinds`; None: each
    tower's ``aligned_reference``, text ``"same_length"`` and image ``"zeros"``)."""
    return baseline_kinds(model, baselines, default="aligned_reference")


def _layers(model: DualEncoder, layer: int, text_layer: int | None, image_layer: int | None) -> dict[Side, int]:
    return {
        "text": model.tower("text").check_layer(layer if text_layer is None else text_layer),
        "image": model.tower("image").check_layer(layer if image_layer is None else image_layer),
    }


def path_attributions(
    model: DualEncoder,
    inputs: Mapping[Side, SideInputs],
    x: Mapping[Side, Tensor],
    r: Mapping[Side, Tensor],
    layers: Mapping[Side, int],
    moving: tuple[Side, ...],
    alphas: Tensor,
    weights: Tensor,
    units: str,
    *,
    multiply_by: Mapping[Side, Tensor] | None = None,
    internal_batch_size: int = 32,
    progress: Any = None,
) -> dict[Side, Tensor]:
    """Per-position path attributions of one pair's similarity.

    The sides in ``moving`` follow ``r + α (x − r)`` together; the others stay at ``x``. For each
    moving side, ``a[t] = Σ_w m[t, w] · Σ_n w_n ∂f/∂h[t, w](α_n)``, with ``m = x − r`` unless
    ``multiply_by`` gives another multiplier (gradient × input).

    Args:
        model: The dual encoder.
        inputs: One-row inputs per side (metadata for the tails).
        x: Hidden states of the inputs at the split layers, ``(1, T, W)`` per side.
        r: Hidden states of the references, same shapes (used for the moving sides).
        layers: Split layer per side.
        moving: Sides that move along the path.
        alphas: Quadrature nodes ``(N,)``.
        weights: Quadrature weights ``(N,)``.
        units: ``"cosine"`` or ``"score"``.
        multiply_by: Per moving side, the ``(1, T, W)`` multiplier (default ``x − r``).
        internal_batch_size: Path points per tail pass.
        progress: A tqdm bar advanced by path points.

    Returns:
        ``{side: (T,) float32}`` for the moving sides, on the model's device.
    """
    fixed: dict[Side, Tensor] = {}
    with torch.no_grad():
        for s in SIDES:
            if s not in moving:
                fixed[s] = model.tower(s).tail(inputs[s], x[s], layers[s])
    acc = {s: torch.zeros_like(x[s][0], dtype=torch.float32) for s in moving}
    dev = x[moving[0]].device
    a_all = alphas.to(dev)
    w_all = weights.to(dev)
    for start in range(0, a_all.numel(), internal_batch_size):
        a = a_all[start : start + internal_batch_size]
        w = w_all[start : start + internal_batch_size]
        h = {s: (r[s] + a[:, None, None].to(x[s].dtype) * (x[s] - r[s])).requires_grad_(True) for s in moving}
        with torch.enable_grad():
            emb = {s: model.tower(s).tail(inputs[s], h[s], layers[s]) for s in moving}
            emb.update(fixed)
            f = similarity(model, emb["text"], emb["image"], units)
            grads = torch.autograd.grad((f * w.to(f.dtype)).sum(), [h[s] for s in moving])
        for s, g in zip(moving, grads, strict=True):
            acc[s] += g.float().sum(0)
        if progress is not None:
            progress.update(a.numel())
    out: dict[Side, Tensor] = {}
    for s in moving:
        m = (x[s] - r[s]) if multiply_by is None else multiply_by[s]
        out[s] = (acc[s] * m[0].float()).sum(-1)
    return out


def _batched_path_rows(
    model: DualEncoder,
    pair: Pair,
    layers: Mapping[Side, int],
    moving: tuple[Side, ...],
    alphas: Tensor,
    weights: Tensor,
    units: str,
    multiplier: str,
    kinds: Mapping[str, str],
    dtype: torch.dtype,
    chunk: int,
    progress: Any = None,
) -> list[dict[Side, Tensor]]:
    """`path_attributions` of every pair of a batch, several pairs per pass.

    Each pass holds ``chunk // N`` pairs with their N path points (at least one pair). Pairs are
    independent rows of the towers, so the gradient of the summed, weighted similarities with respect to
    each row's hidden states is that row's own gradient: the result equals `path_attributions` per pair
    (up to float rounding of the batched products).

    Returns:
        Per pair, ``{side: (T,) float32}`` for the moving sides, on the model's device.
    """
    N = alphas.numel()
    per_pass = max(1, chunk // N)
    out: list[dict[Side, Tensor]] = []
    for idx in row_chunks(pair.batch_size, per_pass):
        m = len(idx)
        inputs = {s: pair.side(s).select(idx) for s in SIDES}
        x: dict[Side, Tensor] = {}
        r: dict[Side, Tensor] = {}
        fixed: dict[Side, Tensor] = {}
        with torch.no_grad():  # rows repeating a side's input run its forward once (methods.shared)
            for s in SIDES:
                first, distinct = distinct_rows(inputs[s])
                one = inputs[s].select(distinct)
                spread = torch.tensor(first, device=model.device)
                x_one = model.tower(s).hidden(one, layers[s]).to(dtype)
                x[s] = r[s] = x_one[spread]
                if s in moving and kinds:
                    r[s] = model.tower(s).hidden(model.tower(s).reference(one, kinds[s]), layers[s]).to(dtype)[spread]
                if s not in moving:
                    fixed[s] = model.tower(s).tail(one, x_one, layers[s])[spread].repeat_interleave(N, 0)
        rep = [i for i in range(m) for _ in range(N)]  # pair-major: N path points of pair 0, then pair 1 ...
        dev = x[moving[0]].device
        a = alphas.to(dev).repeat(m)
        w = weights.to(dev).repeat(m)
        with torch.enable_grad():
            h = {
                s: (r[s][rep] + a[:, None, None].to(x[s].dtype) * (x[s][rep] - r[s][rep])).requires_grad_(True)
                for s in moving
            }
            emb = {s: model.tower(s).tail(inputs[s].select(rep), h[s], layers[s]) for s in moving}
            emb.update(fixed)
            f = similarity(model, emb["text"], emb["image"], units)
            grads = torch.autograd.grad((f * w.to(f.dtype)).sum(), [h[s] for s in moving])
        attr: dict[Side, Tensor] = {}
        for s, g in zip(moving, grads, strict=True):
            acc = g.float().reshape(m, N, *g.shape[1:]).sum(1)
            if multiplier == "input":
                mult = x[s]
            elif multiplier == "none":
                mult = torch.ones_like(x[s])
            else:
                mult = x[s] - r[s]
            attr[s] = (acc * mult.float()).sum(-1)
        out.extend({s: attr[s][k] for s in moving} for k in range(m))
        if progress is not None:
            progress.update(m * N)
    return out


def _explain_path(
    model: DualEncoder,
    pair: Pair,
    *,
    method: str,
    side: str,
    layer: int,
    text_layer: int | None,
    image_layer: int | None,
    alphas: Tensor,
    weights: Tensor,
    baselines: str | Mapping[str, str] | None,
    multiplier: str,
    units: str,
    internal_batch_size: int | None,
    fp32: bool,
    progress: bool | None,
    params: dict[str, Any],
) -> list[Explanation]:
    """Shared driver: ``multiplier`` is ``"delta"`` (x − r, with references), ``"input"`` (x) or ``"none"``."""
    check_units(units)
    moving = sides_of(side)
    work = model.float32() if fp32 else model
    layers = _layers(work, layer, text_layer, image_layer)
    parts = layer_pair(work, pair, layers)  # the parts at the split layers (a CNN stage's feature map)
    kinds = reference_kinds(work, baselines) if multiplier == "delta" else {}
    chunk = rows_per_pass(internal_batch_size, work.device)
    dtype = torch.float32 if fp32 else work.dtype
    scores, cosines = scores_of(model, pair)
    out: list[Explanation] = []
    # Several pairs per pass where all N path points of a pair fit in one (``chunk`` path points).
    batched = pair.batch_size > 1 and alphas.numel() <= chunk
    with bar(pair.batch_size * alphas.numel(), f"{method} attributions", progress) as pb:
        rows = (
            _batched_path_rows(work, pair, layers, moving, alphas, weights, units, multiplier, kinds, dtype, chunk, pb)
            if batched
            else []
        )
        memo = SideMemo(pair)  # per side, once per distinct input
        for b in range(pair.batch_size):
            inputs = {s: pair.side(s).select([b]) for s in SIDES}
            refs = {s: memo.get(s, b, "ref", partial(work.tower(s).reference, inputs[s], kinds[s])) for s in moving} \
                if kinds else {}  # fmt: skip
            if refs or not batched:
                with torch.no_grad():
                    x = {s: memo.get(s, b, "x", partial(work.tower(s).hidden, inputs[s], layers[s])).to(dtype)
                         for s in SIDES}  # fmt: skip
                    r = {**x, **{s: memo.get(s, b, "r", partial(work.tower(s).hidden, refs[s], layers[s])).to(dtype)
                                 for s in refs}}  # fmt: skip
            if batched:
                attr = rows[b]
            else:
                mult = None
                if multiplier == "input":
                    mult = {s: x[s] for s in moving}
                elif multiplier == "none":
                    mult = {s: torch.ones_like(x[s]) for s in moving}
                attr = path_attributions(
                    work,
                    inputs,
                    x,
                    r,
                    layers,
                    moving,
                    alphas,
                    weights,
                    units,
                    multiply_by=mult,
                    internal_batch_size=chunk,
                    progress=pb,
                )
            terms: dict[str, Any] = {}
            diag: dict[str, float] = {}
            total = 0.0
            if "text" in attr:
                terms["text_main"] = attr["text"].cpu()
                total += float(attr["text"].double().sum())
            if "image" in attr:
                a_img = attr["image"].cpu()
                cols = parts.image.players(b)
                terms["image_main"] = a_img[cols]
                prefix = torch.ones(a_img.shape[0], dtype=torch.bool)
                prefix[cols] = False
                diag["image_prefix"] = float(a_img[prefix].double().sum())
                total += float(a_img.double().sum())
            target: float | None = None
            baseline = 0.0
            if refs:
                with torch.no_grad():
                    e_x = {s: memo.get(s, b, "e_x", partial(work.tower(s).tail, inputs[s], x[s], layers[s]))
                           for s in SIDES}  # fmt: skip
                    e_path = {**e_x, **{s: memo.get(s, b, "e_path",
                                                    partial(work.tower(s).tail, inputs[s], r[s], layers[s]))
                                        for s in moving}}  # fmt: skip
                    e_ref = {**e_x, **{s: memo.get(s, b, "e_ref", partial(work.tower(s).tail, refs[s], r[s], layers[s]))
                                       for s in moving}}  # fmt: skip
                    f_x = float(similarity(work, e_x["text"], e_x["image"], units)[0])
                    f_path = float(similarity(work, e_path["text"], e_path["image"], units)[0])
                    f_ref = float(similarity(work, e_ref["text"], e_ref["image"], units)[0])
                diag["path_target"] = f_x - f_path
                if method == "ig":
                    diag["convergence_delta"] = total - (f_x - f_path)
                    own = float(scores[b]) if units == "score" else float(cosines[b])
                    target, baseline = f_x - f_ref, own - (f_x - f_ref)
            diag["attributed_total"] = total
            row_params = {
                "side": side,
                "text_layer": layers["text"],
                "image_layer": layers["image"],
                "baselines": {s: kinds[s] for s in moving} if kinds else None,
                "units": units,
                **params,
            }
            out.append(
                build_explanation(
                    model,
                    parts,
                    b,
                    method=method,
                    params=row_params,
                    score=float(scores[b]),
                    cosine=float(cosines[b]),
                    cross=None,
                    target=target,
                    baseline=baseline,
                    diagnostics=diag,
                    **terms,
                )
            )
    return out


@register_method(
    "ig",
    order=1,
    summary="integrated gradients of the similarity at a split layer, per token and per patch "
    "(Sundararajan et al. 2017)",
    cost="n_steps forward+backward passes of the towers above the split layer",
)
def explain_ig(
    model: DualEncoder,
    pair: Pair,
    *,
    side: SideOption = "both",
    layer: int = 0,
    text_layer: int | None = None,
    image_layer: int | None = None,
    n_steps: int = 32,
    quadrature: str = "gausslegendre",
    baselines: str | Mapping[str, str] | None = None,
    units: Units = "cosine",
    internal_batch_size: int | None = None,
    fp32: bool = True,
    progress: bool | None = None,
) -> list[Explanation]:
    """Integrated gradients of each pair's similarity with respect to hidden states.

    Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks", ICML 2017 (arXiv:1703.01365).

    Args:
        model: The dual encoder.
        pair: Prepared batch of B pairs.
        side: ``"both"`` (caption and image move together), ``"text"`` or ``"image"``.
        layer: Split layer of both towers (hidden states entering block ``layer``; 0 = embedding output,
            negative values count from the end).
        text_layer: Override ``layer`` for the text tower.
        image_layer: Override ``layer`` for the image tower.
        n_steps: Number of quadrature nodes.
        quadrature: Rule of `dualex.methods.quadrature.alphas_and_weights` (captum's ``method`` names):
            ``"gausslegendre"`` (captum's default), ``"riemann_right"``, ``"riemann_trapezoid"``, ...;
            all but ``"riemann_trapezoid"`` give captum's numbers, which is the exact trapezoid rule
            here and N/(N − 1) times captum's (its weights sum to (N − 1)/N).
        baselines: Reference kind(s) for `DualEncoder.reference`: None (text ``"same_length"``, image
            ``"zeros"``), one kind for both sides, or ``{"text": ..., "image": ...}``.
        units: ``"cosine"`` or ``"score"`` (the model's own logit, ``logit_scale · cos + bias``).
        internal_batch_size: Path points per pass (memory bound); default 16 on CPU, 256 on CUDA. When
            ``n_steps`` fits, ``internal_batch_size // n_steps`` pairs of the batch share each pass.
        fp32: Differentiate fp16/bf16 models in float32 (a float copy of the model).
        progress: Show a progress bar (None: only on a terminal).

    Returns:
        One `Explanation` per pair with ``text_main`` ``(S,)`` and/or ``image_main`` ``(P,)``; ``target``
        = f(input) − f(reference) with the moving sides at their references; diagnostics
        ``path_target`` (the path's start as the tail pools it; differs from ``target`` only for a text
        reference pooled elsewhere), ``convergence_delta`` (Σ attributions − path_target, → 0 as
        ``n_steps`` grows), ``image_prefix`` (CLS/prefix positions, included in the sums) and
        ``attributed_total``.
    """
    alphas, weights = alphas_and_weights(n_steps, quadrature)
    return _explain_path(
        model,
        pair,
        method="ig",
        side=side,
        layer=layer,
        text_layer=text_layer,
        image_layer=image_layer,
        alphas=alphas,
        weights=weights,
        baselines=baselines,
        multiplier="delta",
        units=units,
        internal_batch_size=internal_batch_size,
        fp32=fp32,
        progress=progress,
        params={"n_steps": n_steps, "quadrature": quadrature},
    )


@register_method(
    "gradxinput",
    order=1,
    summary="gradient × input of the similarity at a split layer, per token and per patch (Shrikumar et al. 2016)",
    cost="1 forward+backward pass of the towers above the split layer",
)
def explain_gradxinput(
    model: DualEncoder,
    pair: Pair,
    *,
    side: SideOption = "both",
    layer: int = 0,
    text_layer: int | None = None,
    image_layer: int | None = None,
    baselines: str | Mapping[str, str] | None = None,
    multiply_by_inputs: bool = True,
    units: Units = "cosine",
    fp32: bool = True,
    internal_batch_size: int | None = None,
    progress: bool | None = None,
) -> list[Explanation]:
    """Gradient × input of each pair's similarity with respect to hidden states.

    Shrikumar, Greenside, Shcherbina, Kundaje, "Not Just a Black Box: Learning Important Features Through
    Propagating Activation Differences", arXiv:1605.01713 (2016); captum's ``InputXGradient`` at a layer.

    Args:
        model: The dual encoder.
        pair: Prepared batch of B pairs.
        side: ``"both"``, ``"text"`` or ``"image"``: the towers whose hidden states are attributed.
        layer: Split layer of both towers (0 = embedding output; negative counts from the end).
        text_layer: Override ``layer`` for the text tower.
        image_layer: Override ``layer`` for the image tower.
        baselines: None multiplies the gradient by the hidden states themselves (classic
            gradient × input); a reference kind (or per-side mapping, as for ``"ig"``) multiplies by
            ``x − r`` instead, which is integrated gradients with one right-Riemann step.
        multiply_by_inputs: False returns the plain gradient summed over the hidden width (captum's
            ``multiply_by_inputs=False``; ``baselines`` is then ignored). Behind a LayerNorm (every
            pre-LN transformer block) that sum is identically 0, so the maps are float noise: a
            ``UserWarning`` says so when every value is below 1e-5 (× max(1, |score|)).
        units: ``"cosine"`` or ``"score"``.
        fp32: Differentiate fp16/bf16 models in float32.
        internal_batch_size: Pairs per forward+backward pass (memory bound; default 16 on CPU, 256 on
            CUDA).
        progress: Show a progress bar.

    Returns:
        One `Explanation` per pair with ``text_main`` and/or ``image_main``; ``target`` is None (no
        completeness claim); diagnostics ``attributed_total`` and ``image_prefix`` (and, with
        ``baselines``, ``path_target``: what the sum would be for an exact first-order model).
    """
    one = torch.ones(1, dtype=torch.float64)
    if not multiply_by_inputs:
        multiplier, baselines = "none", None
    else:
        multiplier = "input" if baselines is None else "delta"
    out = _explain_path(
        model,
        pair,
        method="gradxinput",
        side=side,
        layer=layer,
        text_layer=text_layer,
        image_layer=image_layer,
        alphas=one,
        weights=one,
        baselines=baselines,
        multiplier=multiplier,
        units=units,
        internal_batch_size=internal_batch_size,
        fp32=fp32,
        progress=progress,
        params={"multiply_by_inputs": multiply_by_inputs},
    )
    if not multiply_by_inputs:
        _warn_if_gradient_sums_vanish(out)
    return out


def _warn_if_gradient_sums_vanish(out: list[Explanation]) -> None:
    """Warn when plain-gradient maps summed over the width are all float noise (a LayerNorm follows)."""
    import warnings

    largest = max(
        (float(t.abs().max()) for ex in out for t in (ex.text_main, ex.image_main) if t is not None and t.numel()),
        default=0.0,
    )
    scale = max([1.0, *(abs(ex.score) for ex in out)])
    if largest <= 1e-5 * scale:
        warnings.warn(
            f"gradxinput with multiply_by_inputs=False: every value is below {1e-5 * scale:.1g} (largest "
            f"{largest:.1g}); the plain gradient summed over the hidden width is identically 0 where the hidden "
            "states enter a LayerNorm (every pre-LN transformer block), so these maps are float noise. Use "
            "multiply_by_inputs=True (gradient x input) or method='ig'",
            UserWarning,
            stacklevel=4,  # the caller of dualex.explain
        )
