"""Explanation methods behind one entry point, `dualex.explain`.

A method is a function ``fn(model: DualEncoder, pair: Pair, **options) -> list[Explanation]`` (one per
row of the pair batch), registered under a name with `register_method` in a module of this package (or
a subpackage such as `dualex.methods.baselines`, or a plugin module, see `dualex.plugins`). Every module of
the package is imported on first use of the registry `METHODS`, so a new method is one new file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, overload

import torch

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.models.base import DualEncoder, Pair
from dualex.models.registry import resolve_model
from dualex.plugins import Registry

MethodFn = Callable[..., list[Explanation]]


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: its function, order (1: per part, 2: interactions), summary and cost."""

    name: str
    fn: MethodFn
    order: int
    summary: str
    cost: str


METHODS: Registry[MethodInfo] = Registry("method", package="dualex.methods")


def register_method(
    name: str, *, order: int, summary: str, cost: str = "", override: bool = False
) -> Callable[[MethodFn], MethodFn]:
    """Register ``fn`` as ``dualex.explain(..., method=name)``.

    Args:
        name: The method's name.
        order: 1 for per-part scores, 2 for interactions.
        summary: One line saying what the method computes.
        cost: What one pair costs (forward/backward passes), shown by ``dualex methods``.
        override: Replace an entry of the same name (else a second registration is an error).

    Raises:
        DuplicateNameError: another method has the name.
    """

    def deco(fn: MethodFn) -> MethodFn:
        METHODS.add(name, MethodInfo(name, fn, order, summary, cost), summary=summary, override=override,
                    module=fn.__module__, order=order, cost=cost)  # fmt: skip
        return fn

    return deco


def list_methods() -> dict[str, MethodInfo]:
    """All registered methods by name (sorted)."""
    return {e.name: e.value for e in sorted(METHODS.entries(), key=lambda e: e.name)}


def get_method(name: str) -> MethodInfo:
    """The registered method ``name``.

    Raises:
        InputError: no method has that name (the message lists the methods).
    """
    entry = METHODS.get(name)
    return entry.value


def check_method_options(method: str, options: dict[str, Any]) -> MethodInfo:
    """The method's `MethodInfo` after checking ``options`` against its signature.

    Raises:
        InputError: unknown method, unknown option (naming the valid ones, with hints for renamed
            options), or an option value of the wrong type.
    """
    from dualex.options import check_options

    info = get_method(method)
    check_options(info.fn, options, what=f"method {method!r}")
    return info


@overload
def explain(
    model: Any,
    image: Any,
    text: str,
    method: str = "ij",
    *,
    device: str | torch.device | None = None,
    modalities: tuple[str, str] | None = None,
    **options: Any,
) -> Explanation:
    """Explain one (image, caption) pair; returns one `Explanation` (see the implementation's docstring)."""


@overload
def explain(
    model: Any,
    image: Any,
    text: Sequence[str],
    method: str = "ij",
    *,
    device: str | torch.device | None = None,
    modalities: tuple[str, str] | None = None,
    **options: Any,
) -> list[Explanation]:
    """Explain a list of pairs (or one image against K captions); returns one `Explanation` per pair."""


def explain(
    model: Any,
    image: Any,
    text: str | Sequence[str],
    method: str = "ij",
    *,
    device: str | torch.device | None = None,
    modalities: tuple[str, str] | None = None,
    **options: Any,
) -> Explanation | list[Explanation]:
    """Explain the similarity of (image, caption) pairs.

    Args:
        model: A `DualEncoder`, a model name for `dualex.load`, or a supported module (`dualex.wrap`).
        image: An image (path, PIL image, array) or a list of them; for text-text bi-encoders, a
            sentence or a list of sentences.
        text: A caption or a list of captions, paired one-to-one with ``image``; with one image and a
            list of K captions, the image is explained against each caption and its side's work (ij's
            integrated Jacobian, FIxLIP's coalition embeddings, a gradient method's forward) is done
            once (`dualex.methods.shared`).
        method: A name from `list_methods` (``"ij"``, ``"fixlip"``, baselines).
        device: Move the model there first.
        modalities: Same-modality pairs with one model: ``("image", "image")`` explains the similarity of
            two images (``image`` against ``text``, both images) with the model's image tower on both
            sides, ``("text", "text")`` two captions with its text tower (`dualex.models.base.TowerPair`).
            The rows of the result are the second argument's parts (an image's: its patches, prefix
            special), the columns the first's. None: the model's own (image, caption) pairs.
        **options: Options of the method (see its docstring), e.g. ``layer=-1, n_steps=10``.

    Returns:
        One `Explanation` for a single pair, or a list for lists of inputs, each with the shapes of its
        pair explained alone (no batch padding positions).
    """
    info = check_method_options(method, options)
    if modalities is not None:
        from dualex.methods.shared import explain_same_modality

        result: Explanation | list[Explanation] = explain_same_modality(
            model, image, text, info.fn, modalities, device=device, **options
        )
        return result
    if not isinstance(text, str) and not (
        isinstance(text, (list, tuple)) and text and all(isinstance(t, str) for t in text)
    ):
        raise InputError(
            f"text must be a caption (a string) or a non-empty list of captions, got {type(text).__name__} "
            f"{text!r:.60}"
        )
    from dualex.methods.shared import prepare_pairs, unpad_all

    enc = resolve_model(model, device=device)
    single = isinstance(text, str)
    if single and isinstance(image, (list, tuple)) and enc.tower("image").modality != enc.tower("text").modality:
        raise InputError("got a list of images but a single caption; pass one caption per image")
    if single:
        pair = enc.prepare(image, text)
        return info.fn(enc, pair, **options)[0]
    texts = list(text)
    images = list(image) if isinstance(image, (list, tuple)) else [image] * len(texts)  # one image, K captions
    pair = prepare_pairs(enc, images, texts)
    return unpad_all(enc, info.fn(enc, pair, **options), pair)


def explain_pair(model: DualEncoder, pair: Pair, method: str = "ij", **options: Any) -> list[Explanation]:
    """Like `explain`, for an already prepared `Pair` batch."""
    return check_method_options(method, options).fn(model, pair, **options)


__all__ = [
    "METHODS",
    "MethodInfo",
    "check_method_options",
    "explain",
    "explain_pair",
    "get_method",
    "list_methods",
    "register_method",
]
