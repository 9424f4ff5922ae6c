"""Forward-mode derivatives of small transformer maps with a batch of tangents, in plain eager torch.

`Dual` carries a primal tensor ``p`` and tangents ``t`` of shape ``(*batch, *p.shape)``: one primal
evaluation, ``batch`` tangent evaluations, the same sharing as ``vmap(jvp)`` without its per-op cost.
(torch's forward AD gives every non-dual operand — a weight, a bias, a Python scalar — an "efficient
zero" tangent whose arithmetic runs Python meta kernels: 0.3–1.5 ms per op on CPU, which dominates the
bundled model's explanation time.) It implements the operations the `dualex.models.base.PooledBlock`
maps of the built-in adapters use: linear layers, layer norm, GELU/quick-GELU, sigmoid, tanh, powers,
L2 normalisation, elementwise arithmetic with tensors and scalars, matrix products with constant
matrices, reshapes, transposes and indexing. Every derivative is linear in the tangent, so a tangent
batch is just more rows.

Anything else raises `NotCoveredError`, and callers fall back to ``torch.func.jvp`` (`jvp_batch`). A
`Dual` is not a `torch.Tensor`: a torch function that receives one either dispatches here through
``__torch_function__`` or fails, so an uncovered operation can never silently drop a tangent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.nn import functional

_Scalar = float  # the builtin (the class below has a ``float`` method)


class NotCoveredError(Exception):
    """An operation `Dual` does not implement (callers fall back to ``torch.func``)."""


Handler = TypeVar("Handler", bound=Callable[..., Any])
_HANDLERS: dict[Any, Callable[..., Any]] = {}


def _handles(*funcs: Any) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for f in funcs:
            _HANDLERS[f] = fn
        return fn

    return register


class Dual:
    """A primal ``p`` and a batch of tangents ``t`` ``(*batch, *p.shape)``; ``nb`` = ``len(batch)``."""

    __slots__ = ("nb", "p", "t")

    def __init__(self, p: Tensor, t: Tensor, nb: int = 0) -> None:
        if tuple(t.shape[nb:]) != tuple(p.shape):
            t = t.expand(*t.shape[:nb], *p.shape)
        self.p, self.t, self.nb = p, t, nb

    # -------------------------------------------------------------- dispatch
    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        handler = _HANDLERS.get(func)
        if handler is None:
            raise NotCoveredError(getattr(func, "__name__", repr(func)))
        return handler(*args, **(kwargs or {}))

    # -------------------------------------------------------------- metadata
    @property
    def shape(self) -> torch.Size:
        """The primal's shape (without the tangent batch dimensions)."""
        return self.p.shape

    @property
    def dtype(self) -> torch.dtype:
        """The primal's dtype."""
        return self.p.dtype

    @property
    def device(self) -> torch.device:
        """The primal's device."""
        return self.p.device

    @property
    def ndim(self) -> int:
        """The number of primal dimensions (tangent batch dimensions not counted)."""
        return self.p.dim()

    def dim(self) -> int:
        """The number of primal dimensions, as `torch.Tensor.dim`."""
        return self.p.dim()

    def size(self, d: int | None = None) -> Any:
        """The primal's size, or its size along dimension ``d``, as `torch.Tensor.size`."""
        return self.p.size() if d is None else self.p.size(d)

    def __len__(self) -> int:
        return len(self.p)

    def is_floating_point(self) -> bool:
        """Whether the primal has a floating-point dtype."""
        return self.p.is_floating_point()

    # -------------------------------------------------------------- helpers
    def _d(self, d: int) -> int:
        """Primal dimension ``d`` as a dimension of the tangent."""
        return d + self.nb if d >= 0 else d

    def _same(self, p: Tensor, t: Tensor) -> Dual:
        return Dual(p, t, self.nb)

    # -------------------------------------------------------------- shape ops
    def reshape(self, *shape: Any) -> Dual:
        """Reshape the primal to ``shape`` and each tangent alike (``(*batch, *new_shape)``); also `view`."""
        p = self.p.reshape(*shape)
        return self._same(p, self.t.reshape(*self.t.shape[: self.nb], *p.shape))

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Dual:
        """Flatten primal dimensions ``start_dim..end_dim``; the tangent batch dimensions are kept."""
        p = self.p.flatten(start_dim, end_dim)
        return self._same(p, self.t.reshape(*self.t.shape[: self.nb], *p.shape))

    def transpose(self, a: int, b: int) -> Dual:
        """Swap primal dimensions ``a`` and ``b`` (and the matching tangent dimensions)."""
        return self._same(self.p.transpose(a, b), self.t.transpose(self._d(a), self._d(b)))

    def permute(self, *dims: Any) -> Dual:
        """Permute the primal dimensions (as a tuple or separate ints); tangent batch dimensions stay first."""
        ds = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        n = self.p.dim()
        full = list(range(self.nb)) + [self.nb + (d % n) for d in ds]
        return self._same(self.p.permute(*ds), self.t.permute(*full))

    def unsqueeze(self, d: int) -> Dual:
        """Insert a size-1 primal dimension at ``d`` (and in each tangent)."""
        return self._same(self.p.unsqueeze(d), self.t.unsqueeze(self._d(d)))

    def squeeze(self, d: int) -> Dual:
        """Remove the size-1 primal dimension ``d`` (and in each tangent)."""
        return self._same(self.p.squeeze(d), self.t.squeeze(self._d(d)))

    def contiguous(self) -> Dual:
        """A copy with contiguous primal and tangents (or self's tensors if already contiguous)."""
        return self._same(self.p.contiguous(), self.t.contiguous())

    def clone(self) -> Dual:
        """A copy whose primal and tangents are cloned tensors."""
        return self._same(self.p.clone(), self.t.clone())

    def chunk(self, n: int, dim: int = 0) -> tuple[Dual, ...]:
        """Split into ``n`` chunks along primal dimension ``dim``, each a `Dual` with its tangent slice."""
        ps, ts = self.p.chunk(n, dim), self.t.chunk(n, self._d(dim))
        return tuple(self._same(p, t) for p, t in zip(ps, ts, strict=True))

    def __getitem__(self, idx: Any) -> Dual:
        key = idx if isinstance(idx, tuple) else (idx,)
        if any(isinstance(k, Dual) for k in key):
            raise NotCoveredError("indexing by a Dual")
        return self._same(self.p[idx], self.t[(slice(None),) * self.nb + key])

    def to(self, *args: Any, **kwargs: Any) -> Dual:
        """Apply `torch.Tensor.to` (dtype and/or device) with the same arguments to primal and tangents."""
        return self._same(self.p.to(*args, **kwargs), self.t.to(*args, **kwargs))

    def float(self) -> Dual:
        """Cast primal and tangents to float32."""
        return self.to(torch.float32)

    def type_as(self, other: Any) -> Dual:
        """Cast primal and tangents to ``other.dtype`` (the device is not changed)."""
        return self.to(other.dtype)

    # -------------------------------------------------------------- arithmetic
    def __add__(self, other: Any) -> Dual:
        return _add(self, other)

    def __radd__(self, other: Any) -> Dual:
        return _add(other, self)

    def __sub__(self, other: Any) -> Dual:
        return _add(self, -other if isinstance(other, Dual) else _neg_const(other))

    def __rsub__(self, other: Any) -> Dual:
        return _add(other, -self)

    def __neg__(self) -> Dual:
        return self._same(-self.p, -self.t)

    def __mul__(self, other: Any) -> Dual:
        return _mul(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Dual:
        if isinstance(other, Dual):
            inv = _reciprocal(other)
            return _mul(self, inv)
        return self._same(self.p / other, self.t / other)

    def __matmul__(self, other: Any) -> Dual:
        return _matmul(self, other)

    def __rmatmul__(self, other: Any) -> Dual:
        return _matmul(other, self)

    def add(self, other: Any, *, alpha: _Scalar = 1.0) -> Dual:
        """``self + alpha * other``, as `torch.Tensor.add`; ``other`` is a tensor, scalar or `Dual`."""
        return _add(self, other * alpha if alpha != 1.0 else other)

    def mul(self, other: Any) -> Dual:
        """Elementwise product with a tensor, scalar or `Dual` (product rule when both are duals)."""
        return _mul(self, other)

    def sigmoid(self) -> Dual:
        """Elementwise logistic sigmoid; tangents are scaled by ``s * (1 - s)`` with ``s = sigmoid(p)``."""
        return _sigmoid(self)

    def exp(self) -> Dual:
        """Elementwise exponential; tangents are scaled by ``exp(p)``."""
        return _exp(self)

    def __pow__(self, exponent: Any) -> Dual:
        return _pow(self, exponent)

    def sum(self, dim: Any = None, keepdim: bool = False) -> Dual:
        """Sum over ``dim`` (all primal dimensions if None); tangents are summed over the same dimensions."""
        return self._reduce(torch.sum, dim, keepdim)

    def mean(self, dim: Any = None, keepdim: bool = False) -> Dual:
        """Mean over ``dim`` (all primal dimensions if None); tangents are averaged over the same dimensions."""
        return self._reduce(torch.mean, dim, keepdim)

    def _reduce(self, op: Any, dim: Any, keepdim: bool) -> Dual:
        if dim is None:
            dims: tuple[int, ...] = tuple(range(self.p.dim()))
        else:
            dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
        dims = tuple(d % self.p.dim() for d in dims)
        return self._same(
            op(self.p, dims, keepdim=keepdim), op(self.t, tuple(d + self.nb for d in dims), keepdim=keepdim)
        )

    def tanh(self) -> Dual:
        """Elementwise hyperbolic tangent; tangents are scaled by ``1 - tanh(p)**2``."""
        return _tanh(self)


def _neg_const(c: Any) -> Any:
    return -c


def _lift(d: Dual, nb: int, rank: int) -> Tensor:
    """``d.t`` with ``nb`` batch dimensions and ``rank`` primal dimensions (singletons inserted), so that
    right-aligned broadcasting against a primal of that rank is correct."""
    t = d.t
    extra_b, extra_r = nb - d.nb, rank - d.p.dim()
    if extra_b or extra_r:
        t = t.reshape(*((1,) * extra_b), *t.shape[: d.nb], *((1,) * extra_r), *d.p.shape)
    return t


def _plain(x: Any) -> Any:
    return x.p if isinstance(x, Dual) else x


def _add(a: Any, b: Any) -> Dual:
    p = _plain(a) + _plain(b)
    duals = [x for x in (a, b) if isinstance(x, Dual)]
    nb = max(x.nb for x in duals)
    t: Tensor | None = None
    for x in duals:
        lt = _lift(x, nb, p.dim())
        t = lt if t is None else t + lt
    assert t is not None
    return Dual(p, t, nb)


def _mul(a: Any, b: Any) -> Dual:
    pa, pb = _plain(a), _plain(b)
    p = pa * pb
    if isinstance(a, Dual) and isinstance(b, Dual):
        nb = max(a.nb, b.nb)
        return Dual(p, _lift(a, nb, p.dim()) * pb + pa * _lift(b, nb, p.dim()), nb)
    d, c = (a, pb) if isinstance(a, Dual) else (b, pa)
    return Dual(p, _lift(d, d.nb, p.dim()) * c, d.nb)


def _reciprocal(d: Dual) -> Dual:
    r = torch.reciprocal(d.p)
    return d._same(r, -d.t * (r * r))


def _matmul(a: Any, b: Any) -> Dual:
    if isinstance(a, Dual) and isinstance(b, Dual):
        raise NotCoveredError("matmul of two Duals")
    if isinstance(a, Dual):
        if b.dim() > 2 or (a.p.dim() < 2 and b.dim() < 2):
            raise NotCoveredError("matmul with a batched constant")
        return a._same(a.p @ b, a.t @ b)
    if a.dim() > 2 or b.p.dim() < 2:
        raise NotCoveredError("matmul with a batched constant")
    out: Dual = b._same(a @ b.p, a @ b.t)
    return out


def _elementwise(d: Dual, p: Tensor, dp: Tensor) -> Dual:
    """Result ``p`` of an elementwise map of ``d`` with derivative ``dp`` (primal shape)."""
    return d._same(p, d.t * dp)


@_handles(functional.linear)
def _linear(input: Any, weight: Any, bias: Any = None) -> Dual:
    if isinstance(weight, Dual) or isinstance(bias, Dual) or not isinstance(input, Dual):
        raise NotCoveredError("linear with a Dual weight")
    return input._same(functional.linear(input.p, weight, bias), functional.linear(input.t, weight))


@_handles(functional.layer_norm)
def _layer_norm(
    input: Any, normalized_shape: Sequence[int], weight: Any = None, bias: Any = None, eps: float = 1e-5
) -> Dual:
    if isinstance(weight, Dual) or isinstance(bias, Dual) or not isinstance(input, Dual):
        raise NotCoveredError("layer_norm with a Dual weight")
    p = input.p
    dims = tuple(range(-len(normalized_shape), 0))
    out = functional.layer_norm(p, normalized_shape, weight, bias, eps)
    mean = p.mean(dims, keepdim=True)
    var = p.var(dims, keepdim=True, correction=0)
    rstd = torch.rsqrt(var + eps)
    xhat = (p - mean) * rstd
    t = input.t
    dx = rstd * (t - t.mean(dims, keepdim=True) - xhat * (t * xhat).mean(dims, keepdim=True))
    if weight is not None:
        dx = dx * weight
    return input._same(out, dx)


@_handles(functional.gelu)
def _gelu(input: Any, approximate: str = "none") -> Dual:
    x = input.p
    out = functional.gelu(x, approximate=approximate)
    if approximate == "tanh":
        k = math.sqrt(2.0 / math.pi)
        u = torch.tanh(k * (x + 0.044715 * x * x * x))
        dp = 0.5 * (1.0 + u) + 0.5 * x * (1.0 - u * u) * k * (1.0 + 3 * 0.044715 * x * x)
    else:
        dp = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))) + x * torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return _elementwise(input, out, dp)


@_handles(torch.sigmoid, Tensor.sigmoid, functional.sigmoid)
def _sigmoid(input: Any) -> Dual:
    s = torch.sigmoid(input.p)
    return _elementwise(input, s, s * (1.0 - s))


@_handles(torch.tanh, Tensor.tanh, functional.tanh)
def _tanh(input: Any) -> Dual:
    y = torch.tanh(input.p)
    return _elementwise(input, y, 1.0 - y * y)


@_handles(torch.exp, Tensor.exp)
def _exp(input: Any) -> Dual:
    y = torch.exp(input.p)
    return _elementwise(input, y, y)


@_handles(torch.pow, Tensor.pow, Tensor.__pow__)
def _pow(input: Any, exponent: Any) -> Dual:
    if not isinstance(input, Dual) or not isinstance(exponent, (int, float)):
        raise NotCoveredError("pow with a tensor exponent")
    x = input.p
    return _elementwise(input, torch.pow(x, exponent), exponent * torch.pow(x, exponent - 1))


@_handles(functional.normalize)
def _normalize(input: Any, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Any = None) -> Dual:
    if p != 2.0 or out is not None:
        raise NotCoveredError("normalize other than L2")
    x = input.p
    n = x.norm(2, dim, keepdim=True)
    clamped = n.clamp_min(eps)
    y = x / clamped
    t = input.t
    proj = (t * y).sum(input._d(dim), keepdim=True)
    dt = torch.where(n > eps, (t - y * proj) / clamped, t / clamped)
    res: Dual = input._same(y, dt)
    return res


@_handles(functional.dropout)
def _dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
    if training and p > 0:
        raise NotCoveredError("dropout in training mode")
    return input


@_handles(torch.add, Tensor.add, Tensor.__add__, Tensor.__radd__)
def _add_fn(input: Any, other: Any, *, alpha: float = 1.0) -> Dual:
    return _add(input, other * alpha if alpha != 1.0 else other)


@_handles(torch.mul, Tensor.mul, Tensor.__mul__, Tensor.__rmul__)
def _mul_fn(input: Any, other: Any) -> Dual:
    return _mul(input, other)


@_handles(torch.sub, Tensor.sub, Tensor.__sub__)
def _sub_fn(input: Any, other: Any, *, alpha: float = 1.0) -> Dual:
    return _add(input, -(other * alpha) if alpha != 1.0 else -other)


@_handles(torch.div, Tensor.div, Tensor.__truediv__)
def _div_fn(input: Any, other: Any, *, rounding_mode: str | None = None) -> Dual:
    if rounding_mode is not None:
        raise NotCoveredError("rounded division")
    if isinstance(other, Dual):
        return _mul(input, _reciprocal(other))
    assert isinstance(input, Dual)
    return input.__truediv__(other)


@_handles(Tensor.__rsub__)
def _rsub_fn(input: Any, other: Any) -> Dual:
    return _add(other, -input)


@_handles(torch.matmul, Tensor.__matmul__, Tensor.matmul)
def _matmul_fn(input: Any, other: Any) -> Dual:
    return _matmul(input, other)


@_handles(Tensor.__rmatmul__)
def _rmatmul_fn(input: Any, other: Any) -> Dual:
    return _matmul(other, input)


def jvp_batch(fn: Callable[..., Any], primals: Sequence[Tensor], tangents: Sequence[Tensor], nb: int) -> Any:
    """``fn``'s outputs and their tangents for ``nb`` leading batch dimensions of ``tangents``.

    Args:
        fn: A map of tensors to a tensor or a tuple of tensors.
        primals: Its arguments.
        tangents: One per primal, shaped ``(*batch, *primal.shape)``.
        nb: Number of batch dimensions (0: one tangent per primal).

    Returns:
        ``(outputs, output_tangents)`` with the structure of ``fn``'s result, tangents ``(*batch, *out.shape)``.

    Raises:
        NotCoveredError: ``fn`` uses an operation `Dual` does not implement.
    """
    batch = tuple(tangents[0].shape[:nb])
    out = fn(*(Dual(p, t, nb) for p, t in zip(primals, tangents, strict=True)))

    def split(o: Any) -> tuple[Tensor, Tensor]:
        if isinstance(o, Dual):
            return o.p, _lift(o, nb, o.p.dim()).expand(*batch, *o.p.shape)
        if isinstance(o, Tensor):  # does not depend on the inputs (a learned probe's query)
            return o, o.new_zeros(()).expand(*batch, *o.shape)
        raise NotCoveredError(f"the map returned {type(o).__name__}, not tensors")

    if isinstance(out, tuple):
        parts = [split(o) for o in out]
        return tuple(p for p, _ in parts), tuple(t for _, t in parts)
    return split(out)
