"""Image trunks split unit by unit: pixels -> hidden states at a layer -> the pure tail to the embedding.

An image tower that is not open_clip's own ViT (timm towers, open_clip's ModifiedResNet, CoCa's
attention-pooled ViT, transformers' EfficientNet) is run here as ``stem``, a list of *units* and a
``head``; a layer is the tower's own unit:

* transformer trunks (timm ViT, EVA-01/02, Perception Encoder, ViTamin's blocks after its conv stem,
  relative-position ViTs): a unit is one block; the hidden positions are prefix tokens (CLS, registers)
  and one token per patch of the final stride;
* convolutional and hierarchical trunks (ConvNeXt, ResNet, FastViT/MobileCLIP, Swin, EfficientNet):
  a unit is one *stage*; the hidden positions at a layer are that stage's input feature-map positions,
  row-major, each standing for one ``stride × stride`` cell of the input canvas.

Layer ``l`` (0 = after the stem) is the state entering unit ``l``; ``l = n_layers`` is the output of the
last unit, before the head's norm and pooling. Hidden states are always ``(B, T, W)`` tokens (feature maps
flattened, channels last), so `dualex.methods.ij` works unchanged on any trunk. `Trunk.tail` is a pure
function of the hidden states, safe under ``torch.func.jvp``/``vjp``/``vmap``: timm's fused attention
kernels (no forward-mode derivative) are switched off while a trunk runs (`unfused`), which changes
nothing but rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dualex.errors import InputError, UnsupportedModelError

Layout = tuple[int, tuple[int, int]]
"""``(n_prefix, (rows, cols))``: hidden positions before the grid, and the grid of the rest."""


@contextlib.contextmanager
def unfused(module: nn.Module) -> Iterator[None]:
    """Within the block, timm attention modules of ``module`` use written-out attention (``fused_attn = False``).

    Fused scaled-dot-product kernels have no forward-mode AD; the written-out path computes the same
    attention. The previous flags are restored on exit.
    """
    saved = [(m, m.fused_attn) for m in module.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    for m, _ in saved:
        setattr(m, "fused_attn", False)  # noqa: B010  # timm's flag, untyped on nn.Module
    try:
        yield
    finally:
        for m, flag in saved:
            setattr(m, "fused_attn", flag)  # noqa: B010


@dataclass(frozen=True)
class _Shape:
    """The native layout of a state: ``"nchw"``, ``"nhwc"`` or ``"tokens"``, its spatial grid and prefix."""

    kind: str
    grid: tuple[int, int]
    n_prefix: int = 0


def to_tokens(state: Tensor, kind: str) -> Tensor:
    """A native state as ``(B, T, W)`` tokens (feature maps flattened row-major, channels last)."""
    if kind == "nchw":
        return state.flatten(2).transpose(1, 2)
    if kind == "nhwc":
        return state.flatten(1, 2)
    return state


def from_tokens(h: Tensor, shape: _Shape) -> Tensor:
    """The inverse of `to_tokens` for a state of ``shape`` (a reshape, no copy where possible)."""
    rows, cols = shape.grid
    if shape.kind == "nchw":
        return h.transpose(1, 2).reshape(h.shape[0], h.shape[2], rows, cols)
    if shape.kind == "nhwc":
        return h.reshape(h.shape[0], rows, cols, h.shape[2])
    return h


class Trunk:
    """An image trunk as ``stem -> units -> head`` with hidden states at any unit boundary.

    Subclasses give `stem`, `unit`, `head`, `n_layers` and the native layout of each state. Shapes of
    the states are found once, by one probe pass at the trunk's input size (`probe`).

    Args:
        module: The torch module holding the trunk's weights (for `unfused` and devices).
        image_size: ``(H, W)`` the trunk takes.
    """

    family = "trunk"
    has_attention = False

    def __init__(self, module: nn.Module, image_size: tuple[int, int]) -> None:
        self.module = module
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self._shapes: list[_Shape] | None = None

    # ---------------------------------------------------------------- to implement
    @property
    def n_layers(self) -> int:
        """Number of units (blocks or stages); hidden states exist at layers 0..n_layers."""
        raise NotImplementedError

    def stem(self, pixels: Tensor) -> Tensor:
        """Normalised pixels ``(B, 3, H, W)`` -> the native state entering unit 0."""
        raise NotImplementedError

    def unit(self, index: int, state: Tensor) -> Tensor:
        """Unit ``index`` on a native state."""
        raise NotImplementedError

    def head(self, state: Tensor) -> Tensor:
        """The native state after the last unit -> unnormalised embeddings ``(R, D)``."""
        raise NotImplementedError

    def kind_at(self, layer: int) -> str:
        """The native layout of the state entering unit ``layer``: ``"nchw"``, ``"nhwc"`` or ``"tokens"``."""
        raise NotImplementedError

    def prefix_at(self, layer: int) -> int:
        """Hidden positions before the grid at ``layer`` (CLS, registers); 0 for feature maps."""
        return 0

    def token_grid(self) -> tuple[int, int]:
        """The patch grid of a token trunk (overridden by transformer trunks)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- shared
    def probe(self) -> list[_Shape]:
        """The layout of every state ``0..n_layers``, from one pass on a zero image (cached)."""
        if self._shapes is None:
            p = next(iter(self.module.parameters()))
            x = torch.zeros(1, 3, *self.image_size, dtype=p.dtype, device=p.device)
            shapes: list[_Shape] = []
            with torch.no_grad(), unfused(self.module):
                s = self.stem(x)
                for i in range(self.n_layers + 1):
                    kind = self.kind_at(i)
                    if kind == "nchw":
                        grid = (int(s.shape[2]), int(s.shape[3]))
                    elif kind == "nhwc":
                        grid = (int(s.shape[1]), int(s.shape[2]))
                    else:
                        grid = self.token_grid()
                    shapes.append(_Shape(kind, grid, self.prefix_at(i)))
                    if i < self.n_layers:
                        s = self.unit(i, s)
            self._shapes = shapes
        return self._shapes

    def layout(self, layer: int) -> Layout:
        """``(n_prefix, (rows, cols))`` of the hidden positions at ``layer``."""
        s = self.probe()[self.check_layer(layer)]
        return s.n_prefix, s.grid

    def check_layer(self, layer: int) -> int:
        """Checks a layer index (negative counts from the end) and returns it in 0..n_layers.

        Raises:
            InputError: The layer is out of range.
        """
        n = self.n_layers
        idx = layer + n if layer < 0 else layer
        if not 0 <= idx <= n:
            raise InputError(f"image layer {layer} is out of range: this {self.family} trunk has layers 0..{n}")
        return idx

    def hidden(self, pixels: Tensor, layer: int) -> Tensor:
        """Hidden states entering unit ``layer``, ``(B, T, W)``."""
        layer = self.check_layer(layer)
        shapes = self.probe()
        with unfused(self.module):
            s = self.stem(pixels)
            for i in range(layer):
                s = self.unit(i, s)
        return to_tokens(s, shapes[layer].kind)

    def tail(self, hidden: Tensor, layer: int) -> Tensor:
        """Units ``layer..`` and the head on ``hidden`` ``(R, T, W)``: embeddings ``(R, D)``. Pure."""
        layer = self.check_layer(layer)
        shape = self.probe()[layer]
        rows, cols = shape.grid
        if hidden.dim() != 3 or hidden.shape[1] != shape.n_prefix + rows * cols:
            raise InputError(
                f"hidden states at image layer {layer} must be (R, {shape.n_prefix + rows * cols}, W), "
                f"got {tuple(hidden.shape)}"
            )
        with unfused(self.module):
            s = from_tokens(hidden, shape)
            for i in range(layer, self.n_layers):
                s = self.unit(i, s)
            return self.head(s)

    def encode(self, pixels: Tensor) -> Tensor:
        """Full forward pass: (B, 3, H, W) normalised pixels -> (B, D) unnormalised embeddings."""
        return self.tail(self.hidden(pixels, 0), 0)


# ---------------------------------------------------------------------------------------------- timm
def _head_after(trunk: Any, post: nn.Module | None) -> Callable[[Tensor], Tensor]:
    """timm's ``forward_head`` then open_clip's adapter head (``post``: projection/MLP/attention pool)."""

    def head(x: Tensor) -> Tensor:
        y: Tensor = trunk.forward_head(x)
        return post(y) if post is not None else y

    return head


class TimmViTTrunk(Trunk):
    """timm ``VisionTransformer`` (ViT, SigLIP's ViT, ViTamin, hybrid MCi ViTs), ``Eva`` (EVA-01/02,
    Perception Encoder) and ``VisionTransformerRelPos``: a unit is one block."""

    family = "timm-vit"
    has_attention = True

    def __init__(self, trunk: nn.Module, image_size: tuple[int, int], post: nn.Module | None = None) -> None:
        super().__init__(trunk, image_size)
        self.trunk: Any = trunk
        self.kind = type(trunk).__name__
        if self.kind not in ("VisionTransformer", "Eva", "VisionTransformerRelPos"):
            raise UnsupportedModelError(f"timm {self.kind} is not a transformer trunk dualex splits")
        if getattr(trunk, "dynamic_img_size", False):
            raise UnsupportedModelError("timm towers with dynamic_img_size are not supported; build at a fixed size")
        self._head = _head_after(trunk, post)

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.trunk.blocks)

    def kind_at(self, layer: int) -> str:
        """Every block holds tokens ('tokens')."""
        return "tokens"

    def prefix_at(self, layer: int) -> int:
        """The trunk's prefix tokens (CLS and registers) before the patches, at every block."""
        return int(getattr(self.trunk, "num_prefix_tokens", 0))

    def token_grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch embedding's grid."""
        g = self.trunk.patch_embed.grid_size
        return int(g[0]), int(g[1])

    def _rope(self) -> Any:
        """EVA's rotary embedding for the fixed grid (no patch dropout in eval), or None."""
        t = self.trunk
        if getattr(t, "rope", None) is None:
            return None
        if hasattr(t.rope, "feat_shape"):
            return t.rope.get_embed()
        return t.rope.get_embed(shape=t.patch_embed.grid_size)

    def stem(self, pixels: Tensor) -> Tensor:
        """Patch embedding and prefix tokens (+ positions and pre-norm except RelPos): (B, 3, H, W) -> (B, T, W)."""
        t = self.trunk
        x = t.patch_embed(pixels)
        if self.kind == "Eva":
            x, _ = t._pos_embed(x)
            out: Tensor = t.norm_pre(x)
            return out
        if self.kind == "VisionTransformerRelPos":
            if t.cls_token is not None:
                x = torch.cat((t.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
            tokens: Tensor = x
            return tokens
        x = t._pos_embed(x)
        x = t.patch_drop(x)
        out = t.norm_pre(x)
        return out

    def unit(self, index: int, state: Tensor) -> Tensor:
        """Runs block `index` (rotary embeddings for EVA, relative positions for RelPos): (R, T, W) -> (R, T, W)."""
        t = self.trunk
        blk = t.blocks[index]
        out: Tensor
        if self.kind == "Eva":
            rope = self._rope()
            if getattr(t, "rope_mixed", False) and rope is not None:
                rope = rope[index]
            out = blk(state, rope=rope)
        elif self.kind == "VisionTransformerRelPos":
            rel = t.shared_rel_pos.get_bias() if t.shared_rel_pos is not None else None
            out = blk(state, shared_rel_pos=rel)
        else:
            out = blk(state)
        return out

    def head(self, state: Tensor) -> Tensor:
        """Final norm, timm's pooling head and open_clip's projection: (R, T, W) -> (R, D)."""
        return self._head(self.trunk.norm(state))


class TimmStageTrunk(Trunk):
    """timm ``ConvNeXt``, ``FastVit`` (MobileCLIP), ``SwinTransformer``, ``ResNet``-like trunks with
    ``stem``/``patch_embed`` and ``stages``/``layers``: a unit is one stage."""

    family = "timm-stages"

    def __init__(self, trunk: nn.Module, image_size: tuple[int, int], post: nn.Module | None = None) -> None:
        super().__init__(trunk, image_size)
        self.trunk: Any = trunk
        self.kind = type(trunk).__name__
        if self.kind not in ("ConvNeXt", "FastVit", "SwinTransformer"):
            raise UnsupportedModelError(f"timm {self.kind} is not a staged trunk dualex splits")
        if self.kind == "FastVit" and getattr(trunk, "fork_feat", False):
            raise UnsupportedModelError("FastViT built with fork_feat=True gives feature maps, not an embedding")
        stages: Any = trunk.layers if self.kind == "SwinTransformer" else trunk.stages
        self._stages = list(stages)
        self._head = _head_after(trunk, post)

    @property
    def n_layers(self) -> int:
        """Number of stages."""
        return len(self._stages)

    def kind_at(self, layer: int) -> str:
        """'nhwc' for Swin (channels last), 'nchw' for ConvNeXt and FastViT."""
        return "nhwc" if self.kind == "SwinTransformer" else "nchw"

    def stem(self, pixels: Tensor) -> Tensor:
        """The stem (Swin: patch embedding): (B, 3, H, W) -> the feature map entering stage 0."""
        t = self.trunk
        out: Tensor = t.patch_embed(pixels) if self.kind == "SwinTransformer" else t.stem(pixels)
        return out

    def unit(self, index: int, state: Tensor) -> Tensor:
        """Runs stage `index` on a native feature map."""
        out: Tensor = self._stages[index](state)
        return out

    def head(self, state: Tensor) -> Tensor:
        """Final norm (ConvNeXt: norm_pre; FastViT: final conv), timm's head, open_clip's projection -> (R, D)."""
        t = self.trunk
        if self.kind == "ConvNeXt":
            state = t.norm_pre(state)
        elif self.kind == "FastVit":
            state = t.final_conv(state)
        else:
            state = t.norm(state)
        return self._head(state)


def timm_trunk(trunk: nn.Module, image_size: tuple[int, int], post: nn.Module | None = None) -> Trunk:
    """The `Trunk` for a timm model (``post``: open_clip's head after timm's ``forward_head``).

    Raises:
        UnsupportedModelError: a timm class dualex does not split, naming it.
    """
    kind = type(trunk).__name__
    if kind in ("VisionTransformer", "Eva", "VisionTransformerRelPos"):
        return TimmViTTrunk(trunk, image_size, post)
    if kind in ("ConvNeXt", "FastVit", "SwinTransformer"):
        return TimmStageTrunk(trunk, image_size, post)
    raise UnsupportedModelError(
        f"timm {kind} towers are not split by dualex yet; supported: VisionTransformer, Eva, "
        "VisionTransformerRelPos, ConvNeXt, FastVit, SwinTransformer"
    )


# ---------------------------------------------------------------------------------------------- open_clip
class ModifiedResNetTrunk(Trunk):
    """open_clip's ``ModifiedResNet`` (OpenAI RN50 … RN50x64): stem, four stages, attention pool.

    A unit is one of ``layer1..layer4``; layer 4 is the feature map entering the attention pool (its
    positions are the pool's keys and values; the query is their mean).
    """

    family = "modified-resnet"

    def __init__(self, visual: nn.Module) -> None:
        v: Any = visual
        s = v.image_size
        super().__init__(visual, (int(s), int(s)) if isinstance(s, int) else (int(s[0]), int(s[1])))
        self.visual: Any = visual
        self._stages = [v.layer1, v.layer2, v.layer3, v.layer4]

    @property
    def n_layers(self) -> int:
        """Four stages (layer1..layer4)."""
        return 4

    def kind_at(self, layer: int) -> str:
        """Every stage holds an (N, C, H, W) feature map ('nchw')."""
        return "nchw"

    def stem(self, pixels: Tensor) -> Tensor:
        """The three-conv stem and average pool: (B, 3, H, W) -> (B, C, H / 4, W / 4)."""
        out: Tensor = self.visual.stem(pixels.to(self.visual.conv1.weight.dtype))
        return out

    def unit(self, index: int, state: Tensor) -> Tensor:
        """Runs stage `index` (layer1..layer4) on an (R, C, h, w) feature map."""
        out: Tensor = self._stages[index](state)
        return out

    def head(self, state: Tensor) -> Tensor:
        """The attention pool on the last (R, C, h, w) feature map -> (R, D) embeddings."""
        return attention_pool_2d(self.visual.attnpool, state)


def attention_pool_2d(pool: Any, x: Tensor) -> Tensor:
    """open_clip's ``AttentionPool2d`` written out (mean query over the positions), ``(R, C, h, w) -> (R, D)``.

    Same maths as ``F.multi_head_attention_forward`` with separate projections; written out so that
    forward-mode AD applies.
    """
    R, C = x.shape[:2]
    t = x.flatten(2).transpose(1, 2)  # (R, hw, C)
    t = torch.cat([t.mean(dim=1, keepdim=True), t], dim=1) + pool.positional_embedding[None].to(t.dtype)
    H = int(pool.num_heads)
    d = C // H
    q = torch.nn.functional.linear(t[:, :1], pool.q_proj.weight, pool.q_proj.bias)  # (R, 1, C)
    k = torch.nn.functional.linear(t, pool.k_proj.weight, pool.k_proj.bias)
    v = torch.nn.functional.linear(t, pool.v_proj.weight, pool.v_proj.bias)
    q = q.reshape(R, 1, H, d).transpose(1, 2)
    k = k.reshape(R, -1, H, d).transpose(1, 2)
    v = v.reshape(R, -1, H, d).transpose(1, 2)
    att = (torch.matmul(q, k.transpose(-1, -2)) * d**-0.5).softmax(dim=-1)
    o = torch.matmul(att, v).transpose(1, 2).reshape(R, C)
    out: Tensor = torch.nn.functional.linear(o, pool.c_proj.weight, pool.c_proj.bias)
    return out
