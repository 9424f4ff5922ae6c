"""Integrated-Jacobian interactions (``method="ij"``).

Möller, Tilli, Vu, Padó, "Explaining Caption-Image Interactions in CLIP Models with Second-Order
Attributions", TMLR 2025 (arXiv:2408.14153).

For towers g (image) and h (text) split at layer L, with hidden states x and references r there,

    (h(x_t) − h(r_t))ᵀ (g(x_i) − g(r_i)) = Σ_{s,p} A[s, p],
    A[s, p] = U[:, s]ᵀ V[:, p] / (‖h(x_t)‖ ‖g(x_i)‖),
    U[k, s] = Σ_i ∫_0^1 ∂h_k/∂x_{s,i}(r + α(x − r)) dα · (x − r)_{s,i}     (same for V over patches),

i.e. U and V are integrated-gradients attributions of each embedding dimension to each position
(eq. 4 of the spec). The reference implementation runs one backward pass per embedding dimension
and materialises a (S·W)×(P·W) feature-pair matrix; here U and V are computed directly:

* forward mode: one JVP per (position, α) with the tangent (x − r) restricted to that position —
  ``torch.func.vmap`` over the positions of a chunk shares the primal pass, chunks hold
  ``internal_batch_size`` (position, α) rows;
* reverse mode: one VJP per (embedding dimension) over the N interpolation rows, batched over
  dimensions with ``torch.func.vmap``;
* structured mode (the default where the split is the last block of a CLS/EOS/last-position pooled
  tower, `dualex.models.base.PooledBlock`): a tangent confined to position s changes only row s of the
  last block's per-row maps (layer norm, key, value; the query too when s is the pooled row p), so

    1. one JVP of the adapter's per-row key/value map over all N·T rows gives every (dk_s, dv_s),
       and one JVP of its query map at row p gives dq_p;
    2. the pooled query's attention output a = softmax(q·kᵀ + m) v then changes by the rank-one
       da_s = P_s (q·dk_s (v_s − a) + dv_s) (plus, for s = p, the change of all logits by dq_p·kᵀ),
       the product rule of one softmax row, written once for every architecture;
    3. a JVP of the adapter's pooled-row remainder (out-projection, residual, MLP, final norm,
       projection) with tangents (da_s, [s = p] δ_p), batched over positions with ``torch.func.vmap``.

  Cost: about N forward passes of the last block instead of N·T, memory O(N·T·W). The same applies
  to a split at the input of an attention-pooling head (SigLIP's image tower, `DualEncoder.pooled_head`),
  whose query is a learned probe.
  Deeper splits run the dense forward/reverse modes through `DualEncoder.tail`, whose last block is
  pooled as well.
``mode="auto"`` takes the structured mode where it applies, else ``"dense"``: whichever of forward and
reverse needs fewer rows (positions vs embedding dimensions). Memory is O(D·(S + P)) for the result
plus one pass's activations.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from dualex.autodiff import math_attention
from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.methods import register_method
from dualex.methods.common import baseline_kinds, build_explanation, layer_pair
from dualex.methods.decomposition import normaliser, similarity_terms
from dualex.methods.dual import NotCoveredError, jvp_batch
from dualex.methods.ij_uncertainty import steps_hint
from dualex.methods.quadrature import alphas_and_weights
from dualex.methods.reference_cache import reference_states
from dualex.methods.shared import distinct_rows
from dualex.models.base import SIDES, DualEncoder, Pair, PooledBlock, Side, SideInputs
from dualex.progress import bar

Mode = Literal["auto", "structured", "dense", "forward", "reverse"]
MODES = ("auto", "structured", "dense", "forward", "reverse")


def _batched_jvp(f: Any, H: Tensor, tangents: Tensor) -> Tensor:
    """JVPs of ``f`` at the primal rows ``H`` ``(N, T, W)`` for a batch of tangents ``(c, N, T, W)``.

    ``vmap`` over the tangents shares the primal computation between them (about twice as fast as
    repeating the primal rows); an op without a batching rule falls back to the repeated rows.
    Returns ``(c, N, D)``.
    """
    c, N, T, W = tangents.shape
    try:
        batched: Tensor = torch.func.vmap(lambda t: torch.func.jvp(f, (H,), (t,))[1])(tangents)
        return batched
    except RuntimeError:
        primal = H.unsqueeze(0).expand(c, N, T, W).reshape(c * N, T, W)
        jv: Tensor = torch.func.jvp(f, (primal,), (tangents.reshape(c * N, T, W),))[1]
        return jv.reshape(c, N, -1)


def _default_chunk(device: torch.device) -> int:
    return 512 if device.type == "cuda" else 64


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device`` (CUDA: the driver's free memory; CPU: ``MemAvailable``)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return None


def path_bytes(n_steps: int, positions: int, width: int, itemsize: int = 4) -> int:
    """A lower bound on the memory of one tower's integration, in bytes.

    Every pass holds the N interpolated hidden states ``(N, T, W)``, a tangent (or cotangent result) of
    the same size and the tail's activations for N rows, so three ``N·T·W`` tensors is a floor; the
    chunking by ``internal_batch_size`` splits positions and dimensions, never the N steps.
    """
    return 3 * n_steps * positions * width * itemsize


def check_memory(n_steps: int, shapes: dict[str, tuple[int, int]], device: torch.device, itemsize: int = 4) -> None:
    """Refuse ``n_steps`` whose integration path alone cannot fit in the memory of ``device``.

    Args:
        n_steps: Quadrature nodes N.
        shapes: Per tower, ``(positions T, width W)`` at the split layer.
        device: Where the integration runs.
        itemsize: Bytes per element.

    Raises:
        InputError: the estimate exceeds the free memory, naming both and the largest N that fits.
    """
    need = max(path_bytes(n_steps, t, w, itemsize) for t, w in shapes.values())
    free = available_memory(device)
    if free is None or need <= free:
        return
    per_step = need / n_steps
    fits = int(free // per_step)
    raise InputError(
        f"n_steps={n_steps} needs at least {need / 2**30:,.1f} GiB on {device.type} (each pass holds all N "
        f"interpolation steps of a tower: 3 × N × {max(t for t, _ in shapes.values())} positions × width "
        f"× {itemsize} bytes), but only {free / 2**30:,.1f} GiB are free; use n_steps <= {max(fits, 1)} "
        "(10 to 50 steps are usual)"
    )


def structured_block(
    model: DualEncoder, side: Side, inputs: SideInputs, layer: int, rows: int, dtype: torch.dtype
) -> PooledBlock | None:
    """The `PooledBlock` the structured mode differentiates for a split at ``layer`` (an index), or None.

    The last block of a tower pooled at one row (``layer = n_layers - 1``), or an attention-pooling head
    (``layer = n_layers``, SigLIP's image tower).
    """
    n = model.tower(side).n_layers
    if layer == n - 1:
        return model.tower(side).pooled_block(inputs, rows, dtype)
    if layer == n:
        return model.tower(side).pooled_head(inputs, rows, dtype)
    return None


def structured_applies(model: DualEncoder, side: Side, inputs: SideInputs, layer: int) -> bool:
    """Whether the structured mode covers a split at ``layer`` (an index), see `structured_block`."""
    return structured_block(model, side, inputs, layer, 1, torch.float32) is not None


def _jvp_functorch(fn: Any, primals: tuple[Tensor, ...], tangents: tuple[Tensor, ...], nb: int) -> Any:
    """`dualex.methods.dual.jvp_batch` through ``torch.func`` (``vmap`` over one batch dimension)."""
    if nb == 0:
        return torch.func.jvp(fn, primals, tangents)
    out = fn(*primals)

    def one(*ts: Tensor) -> Any:
        return torch.func.jvp(fn, primals, ts)[1]

    return out, torch.func.vmap(one)(*tangents)


def structured_jacobian(
    block: PooledBlock,
    H: Tensor,
    delta: Tensor,
    w: Tensor,
    active: Tensor,
    *,
    rows: int,
    progress: Any = None,
    engine: Literal["auto", "dual", "functorch"] = "auto",
) -> Tensor:
    """``U`` ``(D, T)`` for a split at the input of a pooled last block (see the module docstring).

    Args:
        block: The tower's `PooledBlock` for ``N`` rows (one input broadcast).
        H: Path points entering the last block, ``(N, T, W)``.
        delta: ``x − r`` ``(T, W)``.
        w: Quadrature weights ``(N,)``.
        active: Positions with a non-zero ``delta`` row, ``(n,)`` long.
        rows: Pooled-row evaluations per batched JVP (bounds memory).
        progress: A tqdm bar to advance (optional).
        engine: How the block's maps are differentiated: ``"dual"`` (`dualex.methods.dual`: plain eager
            ops, all positions' tangents as one batch), ``"functorch"`` (``torch.func.jvp``, ``vmap`` over
            positions) or ``"auto"`` (dual, falling back to functorch for a map using an operation the
            dual numbers do not cover). The same numbers to float rounding.

    Returns:
        ``U[k, s] = Σ_n w_n ∂e_k/∂h_s(H_n) · δ_s``, float32.
    """
    if engine != "functorch":
        try:
            return _structured(block, H, delta, w, active, rows, progress, jvp_batch)
        except (NotCoveredError, TypeError, AttributeError):
            if engine == "dual":
                raise
    with math_attention():
        return _structured(block, H, delta, w, active, rows, progress, _jvp_functorch)


def _structured(
    block: PooledBlock, H: Tensor, delta: Tensor, w: Tensor, active: Tensor, rows: int, progress: Any, jvp: Any
) -> Tensor:
    N, T, W = H.shape
    p = int(block.index[0])
    tangent = delta.unsqueeze(0).expand(N, T, W)
    # 1. per-row maps: row s of the tangent output is the change caused by the tangent at position s alone
    (k, v), (dk, dv) = jvp(block.keys_values, (H,), (tangent,), 0)  # (N, h, T, d) each
    # copies, not views of H: forward AD gives a view's base a materialised zero tangent, which under
    # functorch's vmap would be a (chunk, N, T, W) buffer filled per call
    hp = H[:, p].clone()
    tp = delta[p].expand(N, W).clone()
    q, dq = jvp(block.query, (hp,), (tp,), 0)  # (N, h, d)
    # 2. the pooled query's attention output under a change of key/value row s (rank one per head)
    a, P = PooledBlock.attend(q, k, v, block.mask)  # (N, h, d), (N, h, T)
    dlogit = (dk * q.unsqueeze(-2)).sum(-1)  # (N, h, T): q·dk_s
    da = P.unsqueeze(-1) * (dlogit.unsqueeze(-1) * (v - a.unsqueeze(-2)) + dv)  # (N, h, T, d)
    dlq = torch.matmul(k, dq.unsqueeze(-1)).squeeze(-1)  # (N, h, T): dq·k_t, every logit when s = p
    dP = P * (dlq - (P * dlq).sum(-1, keepdim=True))
    da[:, :, p] = da[:, :, p] + torch.matmul(dP.unsqueeze(-2), v).squeeze(-2)
    da = da.permute(2, 0, 1, 3)  # (T, N, h, d)
    # 3. the pooled row's remainder, all positions of a chunk as one batch of tangents
    U: Tensor | None = None
    wf = w.float()
    per = max(1, rows // N)
    for start in range(0, active.numel(), per):
        pos = active[start : start + per]
        t_h = (pos == p).to(H.dtype)[:, None, None] * tp  # (c, N, W): δ_p at s = p only
        jv = jvp(block.finish, (hp, a), (t_h, da[pos]), 1)[1]  # (c, N, D)
        if U is None:
            U = torch.zeros(jv.shape[-1], T, dtype=torch.float32, device=H.device)
        U[:, pos] = torch.einsum("cnd,n->dc", jv.float(), wf)
        if progress is not None:
            progress.update(pos.numel() * N)
    assert U is not None  # callers pass at least one active position
    return U


def integrated_jacobian(
    model: DualEncoder,
    side: Side,
    inputs: SideInputs,
    x: Tensor,
    r: Tensor,
    layer: int,
    alphas: Tensor,
    weights: Tensor,
    *,
    mode: Mode = "auto",
    internal_batch_size: int | None = None,
    progress: Any = None,
) -> Tensor:
    """Integrated per-position attributions of each embedding dimension, ``U`` of shape ``(D, T)``.

    Args:
        model: The dual encoder.
        side: Which tower.
        inputs: One row of inputs (metadata for the tail: masks, pooling index).
        x: Hidden states of the input at ``layer``, ``(1, T, W)``.
        r: Hidden states of the reference at ``layer``, ``(1, T, W)``.
        layer: Split layer.
        alphas: Quadrature nodes ``(N,)`` in [0, 1].
        weights: Quadrature weights ``(N,)`` summing to 1.
        mode: ``"structured"`` (pooled last block, see the module docstring), ``"forward"`` (JVPs per
            position through the tail), ``"reverse"`` (VJPs per dimension), ``"dense"`` (the fewer of
            forward and reverse) or ``"auto"`` (structured where it applies, else dense).
        internal_batch_size: Rows (tail evaluations; pooled-row evaluations in the structured mode)
            per pass; bounds memory.
        progress: A tqdm bar to advance (optional).

    Returns:
        ``U[k, s] = Σ_n w_n Σ_i ∂e_k/∂h_{s,i}(r + α_n (x − r)) (x − r)_{s,i}``, float32, on ``x.device``.
    """
    dev = x.device
    delta = (x - r)[0]  # (T, W)
    T, W = delta.shape
    a = alphas.to(dev, x.dtype)
    w = weights.to(dev, x.dtype)
    N = a.numel()
    H = r + a[:, None, None] * (x - r)  # (N, T, W)

    def f(h: Tensor) -> Tensor:
        return model.tower(side).tail(inputs, h, layer)

    active = torch.nonzero(delta.abs().sum(-1) > 0, as_tuple=False).flatten()
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(repr(m) for m in MODES)}; got {mode!r}")
    block = structured_block(model, side, inputs, layer, N, x.dtype) if mode in ("auto", "structured") else None
    if mode in ("auto", "structured"):
        if block is not None:
            mode = "structured"
        elif mode == "structured":
            raise InputError(
                f"mode='structured' needs a split at the last block (layer -1) of a tower pooled at one row, or "
                f"at the input of an attention-pooling head; the {side} tower of {model.name} at layer {layer} "
                "is neither: use mode='auto' or 'dense'"
            )
        else:
            mode = "dense"
    if mode == "structured" and active.numel() > 0:
        assert block is not None
        structured_rows = internal_batch_size or 16 * _default_chunk(dev)
        return structured_jacobian(block, H, delta, w, active, rows=structured_rows, progress=progress)
    with torch.no_grad():
        D = f(x).shape[-1]
    if mode == "dense":
        mode = "forward" if active.numel() <= D else "reverse"
    rows = internal_batch_size or _default_chunk(dev)
    U = torch.zeros(D, T, dtype=torch.float32, device=dev)
    if active.numel() == 0:
        return U
    with math_attention():
        if mode == "forward":
            per = max(1, rows // N)
            for start in range(0, active.numel(), per):
                pos = active[start : start + per]
                c = pos.numel()
                tangent = torch.zeros(c, N, T, W, dtype=x.dtype, device=dev)
                tangent[torch.arange(c, device=dev), :, pos, :] = delta[pos][:, None, :]
                jv = _batched_jvp(f, H, tangent)  # (c, N, D)
                U[:, pos] = torch.einsum("cnd,n->dc", jv.float(), w.float())
                if progress is not None:
                    progress.update(c * N)
        elif mode == "reverse":
            per = max(1, rows // N)
            out, vjp_fn = torch.func.vjp(f, H)[:2]  # (output, vjp_fn) without has_aux
            for start in range(0, D, per):
                ks = torch.arange(start, min(start + per, D), device=dev)
                kc = ks.numel()
                cot = torch.zeros(kc, N, D, dtype=out.dtype, device=dev)
                cot[torch.arange(kc, device=dev), :, ks] = w[None, :].expand(kc, N).to(out.dtype)
                try:
                    (g,) = torch.func.vmap(vjp_fn)(cot)  # (kc, N, T, W)
                except RuntimeError:  # an op without a batching rule: one dimension at a time
                    g = torch.stack([vjp_fn(c_)[0] for c_ in cot])
                U[ks] = (g.sum(1) * delta).sum(-1).float()
                if progress is not None:
                    progress.update(kc * N)
    return U


def _old_reference_names(
    baselines: str | Mapping[str, str] | None, text: str | None, image: str | None
) -> str | Mapping[str, str] | None:
    """``baselines``, or the deprecated ``text_reference``/``image_reference`` as a ``baselines`` mapping."""
    if text is None and image is None:
        return baselines
    if baselines is not None:
        raise InputError("give the reference inputs once: baselines={'text': ..., 'image': ...}, not also "
                         "text_reference/image_reference")  # fmt: skip
    msg = ("ij's text_reference= and image_reference= are deprecated; use baselines={'text': ..., 'image': ...} "
           "(the one name for reference inputs across methods)")  # fmt: skip
    warnings.warn(msg, FutureWarning, stacklevel=3)
    return {k: v for k, v in (("text", text), ("image", image)) if v is not None}


@register_method(
    "ij",
    order=2,
    summary="integrated-Jacobian token × patch interactions (Möller et al., TMLR 2025)",
    cost="≈ 2 forward passes at the last block of a pooled tower (3 on a first call: the reference); "
    "else min(positions, D) × n_steps tail passes",
)
def explain_ij(
    model: DualEncoder,
    pair: Pair,
    *,
    layer: int = -1,
    text_layer: int | None = None,
    image_layer: int | None = None,
    n_steps: int = 10,
    quadrature: str = "riemann_right",
    baselines: str | Mapping[str, str] | None = None,
    units: Literal["cosine", "score"] = "cosine",
    mode: Mode = "auto",
    internal_batch_size: int | None = None,
    fp32: bool = True,
    progress: bool | None = None,
    subtract_reference: bool = False,
    text_reference: str | None = None,
    image_reference: str | None = None,
) -> list[Explanation]:
    """Integrated-Jacobian interactions of each (caption, image) pair.

    Args:
        model: The dual encoder.
        pair: Prepared batch of B pairs.
        layer: Split layer for both towers (hidden states entering block ``layer``; negative counts
            from the end, so -1 is the input of the last block — exCLIP's layer 11 on 12 blocks).
        text_layer: Override ``layer`` for the text tower.
        image_layer: Override ``layer`` for the image tower.
        n_steps: Number of quadrature nodes N.
        quadrature: Quadrature rule (captum's ``method`` names): ``"riemann_right"`` (α = k/N, k = 1..N, as the
            reference) or ``"gausslegendre"`` (and the other rules of `alphas_and_weights`; its
            ``"riemann_trapezoid"`` is the exact trapezoid rule, N/(N − 1) times captum's).
        baselines: The reference inputs the paths start from (captum's name, as for the gradient
            methods): a kind for both sides, or ``{"text": ..., "image": ...}``. Text: ``"default"`` (BOS,
            one filler, EOS, padding: exCLIP's) or ``"same_length"`` (BOS, fillers, EOS at the caption's
            EOS: the path ends at the reference, so completeness converges to the four-term identity);
            image: ``"zeros"`` (zeros after normalisation = dataset-mean grey), ``"black"``, ``"noise"``
            (for bi-encoders the second sentence's text references). None: each tower's
            ``path_reference``: text ``"default"`` for image-text models, ``"same_length"`` for text-text
            bi-encoders (xsbert's convention); image ``"zeros"``.
        units: ``"cosine"`` (the reference's default) or ``"score"`` (times the logit scale).
        mode: ``"auto"`` (structured where the split is the last block of a tower pooled at one row,
            else dense), ``"structured"``, ``"dense"`` (today's path: the fewer of forward and reverse),
            ``"forward"`` or ``"reverse"``; all give the same numbers to float rounding.
        internal_batch_size: Tail evaluations per pass (memory bound); default 64 on CPU, 512 on CUDA.
        fp32: Interpolate and differentiate fp16/bf16 models in float32 (a float copy of the model).
        progress: Show a progress bar (None: only on a terminal).
        text_reference, image_reference: Deprecated names of ``baselines["text"]`` and
            ``baselines["image"]`` (they still work, with a FutureWarning).
        subtract_reference: xsbert's remedy (`dualex.methods.decomposition`): normalise by
            ‖h(x_t) − r_t‖‖g(x_i) − r_i‖ (r: the embeddings where the paths start), so that the interactions
            add up to cos(h(x_t) − r_t, g(x_i) − r_i), the similarity of the model that subtracts the
            reference embeddings, instead of a reference-corrected part of the model's cosine.

    Returns:
        One `Explanation` per pair: ``cross`` ``(S, P)`` over all caption positions × image patches,
        ``cross_prefix`` for the image's CLS/prefix positions, ``target`` =
        (h(x_t) − h(r_t))ᵀ(g(x_i) − g(r_i)) / (‖h(x_t)‖‖g(x_i)‖) (× logit scale for ``units="score"``),
        and diagnostics ``path_target`` (what the sum converges to: differs from ``target`` only for a
        text reference whose EOS is elsewhere), ``convergence_delta`` (sum − path_target: the integration
        error, ij's counterpart of a sampled method's standard errors), ``relative_delta`` (its share of
        path_target) and ``n_steps_hint`` (steps for a 1 % relative error, Riemann rules; NaN otherwise);
        ``reference_terms`` holds the rest of the similarity (`Explanation.decomposition`: interactions −
        convergence_delta + reference terms = the model's cosine, or score in score units).
    """
    if units not in ("cosine", "score"):
        raise InputError(f"units must be 'cosine' or 'score', got {units!r}")
    refs = baseline_kinds(model, _old_reference_names(baselines, text_reference, image_reference),
                          default="path_reference")  # fmt: skip
    work = model.float32() if fp32 else model
    layers = {
        "text": work.tower("text").check_layer(layer if text_layer is None else text_layer),
        "image": work.tower("image").check_layer(layer if image_layer is None else image_layer),
    }
    alphas_and_weights(2, quadrature)  # the rule's name is checked before any model pass
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 1:
        raise InputError(f"n_steps must be a positive integer, got {n_steps!r}")
    dtype = torch.float32 if fp32 else work.dtype
    B = pair.batch_size
    states: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        for side in SIDES:
            # rows repeating one input (one image against K captions) share its states and U (methods.shared)
            row_of, distinct = distinct_rows(pair.side(side))
            inputs = pair.side(side).select(distinct)
            ref = work.tower(side).reference(inputs, refs[side])
            L = layers[side]
            tower = work.tower(side)
            x = tower.hidden(inputs, L).to(dtype)
            r, e_r = reference_states(tower, ref, L)  # once per model and reference
            r = r.to(dtype)
            n = x.shape[0]
            # the input's embedding and the α = 0 end of the path as the input's tail pools it, in one pass
            ends = tower.tail(inputs.select([*range(n), *range(n)]), torch.cat([x, r]), L).float()
            states[side] = {
                "row": row_of,
                "inputs": inputs,
                "x": x,
                "r": r,
                "e_x": ends[:n],
                "e_r": e_r.float(),
                "e_path0": ends[n:],
            }
    check_memory(
        n_steps,
        {side: (int(st["x"].shape[1]), int(st["x"].shape[2])) for side, st in states.items()},
        states["image"]["x"].device,
        torch.finfo(dtype).bits // 8,
    )
    alphas, weights = alphas_and_weights(n_steps, quadrature)
    scale = work.logit_scale if units == "score" else 1.0
    D = states["text"]["e_x"].shape[-1]
    total_rows = 0
    for side in SIDES:
        T = states[side]["x"].shape[1]
        total_rows += states[side]["x"].shape[0] * min(T, D) * n_steps
    out: list[Explanation] = []
    jacobians: dict[str, dict[int, Tensor]] = {side: {} for side in SIDES}  # per side, per distinct input
    parts = layer_pair(work, pair, {"text": layers["text"], "image": layers["image"]})  # a CNN stage's grid
    with bar(total_rows, "integrated Jacobians", progress) as pb:
        for b in range(B):
            U: dict[str, Tensor] = {}
            k = {side: states[side]["row"][b] for side in SIDES}
            for side in SIDES:
                st = states[side]
                if k[side] not in jacobians[side]:
                    jacobians[side][k[side]] = integrated_jacobian(
                        work,
                        side,
                        st["inputs"].select([k[side]]),
                        st["x"][k[side] : k[side] + 1],
                        st["r"][k[side] : k[side] + 1],
                        layers[side],
                        alphas,
                        weights,
                        mode=mode,
                        internal_batch_size=internal_batch_size,
                        progress=pb,
                    )
                U[side] = jacobians[side][k[side]]
            et, ei = states["text"]["e_x"][k["text"]], states["image"]["e_x"][k["image"]]
            r0_t, r0_i = states["text"]["e_path0"][k["text"]], states["image"]["e_path0"][k["image"]]
            norm = normaliser(et, ei, r0_t, r0_i, subtract_reference=subtract_reference)
            A = (U["text"].T @ U["image"]) * (scale / norm)  # (S, T_img)
            d_t = et - states["text"]["e_r"][k["text"]]
            d_i = ei - states["image"]["e_r"][k["image"]]
            target = float(d_t @ d_i) * scale / norm
            p_t = et - r0_t
            p_i = ei - r0_i
            path_target = float(p_t @ p_i) * scale / norm
            cols = parts.image.players(b).to(A.device)
            other = torch.ones(A.shape[1], dtype=torch.bool, device=A.device)
            other[cols] = False
            cos = float(torch.nn.functional.cosine_similarity(et, ei, dim=0))
            score = cos * work.logit_scale + work.logit_bias
            own = cos * scale + (work.logit_bias if units == "score" else 0.0)
            total = float(A.double().sum())
            ex = build_explanation(
                model,
                parts,
                b,
                method="ij",
                params={
                    "text_layer": layers["text"],
                    "image_layer": layers["image"],
                    "n_steps": n_steps,
                    "quadrature": quadrature,
                    "text_reference": refs["text"],
                    "image_reference": refs["image"],
                    "units": units,
                    "mode": mode,
                    "subtract_reference": subtract_reference,
                },
                score=score,
                cosine=cos,
                cross=A[:, cols],
                cross_prefix=A[:, other] if bool(other.any()) else None,
                target=target,
                baseline=own - target,
                diagnostics={
                    "path_target": path_target,
                    "convergence_delta": total - path_target,
                    "reference_delta": total - target,
                    "relative_delta": abs(total - path_target) / max(abs(path_target), 1e-12),
                    "n_steps_hint": steps_hint(total - path_target, path_target, n_steps, quadrature),
                },
                reference_terms=similarity_terms(
                    et,
                    ei,
                    r0_t,
                    r0_i,
                    scale=scale,
                    bias=work.logit_bias if units == "score" else 0.0,
                    subtract_reference=subtract_reference,
                ),
            )
            out.append(ex)
    return out
