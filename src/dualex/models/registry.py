"""Model names -> adapters: `load`, `wrap` and `resolve_model`.

Names: ``hf:<hub id or local dir>``, ``openclip:<arch>@<pretrained|file|random>``,
``sentence:<hub id or local dir>``, ``shapes`` (the bundled model) and ``py:<module>:<function>`` (a factory
returning a `DualEncoder`). A new family is one module in `dualex.models` that registers a loader for its
prefix with `register_loader` and a wrapper for its module types with `register_wrapper`; the registry
imports every module of the package on first use, so there is no list to edit.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch

from dualex.errors import InputError, UnsupportedModelError
from dualex.models.base import DualEncoder
from dualex.plugins import DuplicateNameError, Registry, first_line

Loader = Callable[..., DualEncoder]
Wrapper = Callable[..., DualEncoder | None]

#: Model name prefixes (``hf``, ``openclip``, ``sentence``) -> loaders; filled by importing every adapter
#: module of `dualex.models` on first use (a module whose optional dependency is missing is skipped).
LOADERS: Registry[Loader] = Registry("model", package="dualex.models", skip_missing=True)
#: Wrappers of already-built module objects (`wrap`), tried in registration order.
WRAPPERS: Registry[Wrapper] = Registry("model wrapper")
#: Model names that stand for another name (``shapes`` -> ``hf:<bundled dir>``).
ALIASES: Registry[str] = Registry("model alias")


def register_loader(prefix: str, *, summary: str | None = None, override: bool = False) -> Callable[[Loader], Loader]:
    """Register ``fn(spec, device=..., dtype=...) -> DualEncoder`` for names ``"<prefix>:<spec>"``.

    Args:
        prefix: The part of a model name before the first ``:``.
        summary: One line for ``dualex models`` (default: the first line of the function's docstring).
        override: Replace a loader of the same prefix (else a second registration is an error).

    Raises:
        DuplicateNameError: another loader has the prefix.
    """

    def deco(fn: Loader) -> Loader:
        text = first_line(fn.__doc__) if summary is None else summary
        return LOADERS.add(prefix, fn, summary=text, override=override, module=fn.__module__)

    return deco


def register_wrapper(fn: Wrapper) -> Wrapper:
    """Register ``fn(module, **kw) -> DualEncoder | None`` (None = not my module type)."""
    return WRAPPERS.add(f"{fn.__module__}.{fn.__qualname__}", fn, summary=first_line(fn.__doc__))


def register_alias(name: str, target: str, *, override: bool = False) -> None:
    """Make ``load(name)`` mean ``load(target)`` (e.g. ``shapes`` -> ``hf:<bundled dir>``).

    Raises:
        DuplicateNameError: the name already stands for another model.
    """
    old = ALIASES.peek(name)
    if old is not None and old.value != target and not override:
        raise DuplicateNameError(f"model name {name!r} already stands for {old.value!r}, not {target!r}")
    ALIASES.add(name, target, summary=f"= {target}", override=True)


def _import_adapters() -> None:
    """Import every adapter module of `dualex.models` (on first use, so that `import dualex` stays light)."""
    LOADERS.fill()


def load_factory(spec: str, *, device: str | torch.device | None = None) -> DualEncoder:
    """A model from ``"module:function"``: the function is called with no arguments and returns a `DualEncoder`.

    This is what ``load("py:module:function")`` does; the model keeps the name its factory gave it and is
    moved to ``device`` only when one is given.

    Raises:
        InputError: the spec is malformed, cannot be imported, or does not give a `DualEncoder`.
    """
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise InputError(f"a Python model factory is 'py:module:function', got {'py:' + spec!r}")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot import model factory {'py:' + spec!r} ({exc})") from None
    model = fn()
    if not isinstance(model, DualEncoder):
        raise InputError(f"model factory {'py:' + spec!r} returned {type(model).__name__}, not a dualex DualEncoder")
    if device is not None:
        model.to(check_device(device))
    return model


def load(
    name: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None, tokenizer: Any = None
) -> DualEncoder:
    """Load a dual encoder by name.

    Args:
        name: ``"shapes"``, ``"hf:<hub id or dir>"``, ``"openclip:<arch>@<tag, file or random>"``,
            ``"sentence:<hub id or dir>"`` or ``"py:<module>:<function>"`` (see `load_factory`).
        device: Where to put the model (default: CUDA if available, else CPU; ``py:`` factories: as built).
        dtype: Parameter dtype (default: as stored).
        tokenizer: A tokenizer to use instead of the model's own (for ``openclip:`` architectures whose
            tokenizer lives on the hub: SigLIP, CLIPA, HF text towers); only loaders that take one.

    Raises:
        InputError: the name has no known prefix.
        ModelNotAvailableError: the weights are not on this machine and cannot be fetched.
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"a model name must be a non-empty string, got {name!r}")
    _import_adapters()
    name = name.strip()
    if name.startswith("py:"):
        model = load_factory(name[3:], device=device)
        if dtype is not None:
            model.module.to(dtype=dtype)
        return model
    if name in ALIASES:
        model = load(ALIASES[name], device=device, dtype=dtype, tokenizer=tokenizer)
        model.name = name
        return model
    prefix, sep, spec = name.partition(":")
    if not sep or prefix not in LOADERS:
        known = ", ".join(sorted([*(f"{p}:..." for p in LOADERS), *ALIASES, "py:module:function"]))
        missing = [p for p in ("hf", "openclip", "sentence") if p not in LOADERS]
        hint = f" (adapters not importable here: {', '.join(missing)}; install the extra)" if missing else ""
        raise InputError(f"unknown model name {name!r}; use one of: {known}{hint}")
    if not spec:
        raise InputError(f"model name {name!r} is missing the part after '{prefix}:'")
    dev = check_device(device) if device is not None else default_device()
    extra: dict[str, Any] = {} if tokenizer is None else {"tokenizer": tokenizer}
    if extra and "tokenizer" not in inspect.signature(LOADERS[prefix]).parameters:
        raise InputError(f"'{prefix}:' models take no tokenizer= (they bring their own)")
    model = LOADERS[prefix](spec, device=dev, dtype=dtype, **extra)
    model.name = name
    return model


def wrap(module: Any, **kwargs: Any) -> DualEncoder:
    """Wrap an already-built model object (HF ``CLIPModel``, open_clip ``CLIP``, ...).

    Keyword arguments go to the adapter (e.g. ``tokenizer=``, ``processor=``, ``name=``).

    Raises:
        UnsupportedModelError: no adapter recognises the object.
    """
    if isinstance(module, DualEncoder):
        return module
    _import_adapters()
    for fn in (e.value for e in WRAPPERS.entries()):
        model = fn(module, **kwargs)
        if model is not None:
            return model
    raise UnsupportedModelError(
        f"no dualex adapter for objects of type {type(module).__module__}.{type(module).__name__}; "
        "supported: transformers CLIPModel/SiglipModel/Siglip2Model/MetaClip2Model/ChineseCLIPModel/AltCLIPModel/"
        "AlignModel/BlipForImageTextRetrieval/OwlViTModel, open_clip CLIP/CustomTextCLIP/CoCa (ViT, timm, ResNet "
        "towers), transformers BERT-style text encoders (bi-encoders)"
    )


def check_device(device: str | torch.device) -> torch.device:
    """A usable `torch.device` for ``device``, or one plain `InputError` (unknown name, no such GPU).

    Raises:
        InputError: the name is not a device (``"bogus"``), or it names an accelerator this machine
            does not have (``"cuda"`` without a GPU, ``"cuda:3"`` with two).
    """
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device).strip())
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {device!r}; use cpu, cuda or cuda:N (N = GPU index), or mps") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise InputError(f"device {str(device)!r}: no CUDA GPU is usable on this machine; use --device cpu")
        if dev.index is not None and dev.index >= n:
            raise InputError(f"device {str(device)!r}: this machine has {n} CUDA GPU(s), cuda:0..cuda:{n - 1}")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"device {str(device)!r}: Apple's MPS backend is not available here; use --device cpu")
    elif dev.type != "cpu" and not getattr(getattr(torch, dev.type, None), "is_available", lambda: False)():
        raise InputError(f"device {str(device)!r} is not available here; use cpu, cuda or cuda:N, or mps")
    return dev


def resolve_model(model: Any, *, device: str | torch.device | None = None) -> DualEncoder:
    """A `DualEncoder` from a name (`load`), an adapter, or a raw module (`wrap`).

    Raises:
        InputError: ``device`` is unknown or not available here (see `check_device`).
    """
    if device is not None:
        device = check_device(device)
    if isinstance(model, DualEncoder):
        return model if device is None else model.to(device)
    if isinstance(model, str):
        return load(model, device=device)
    m = wrap(model)
    return m if device is None else m.to(device)


def default_device() -> torch.device:
    """CUDA when a GPU is usable, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def random_weights_seed(spec: str) -> int | None:
    """The weights seed a model name asks for: ``…@random`` is seed 0, ``…@random:SEED`` that seed; None for
    names of stored weights.

    Raises:
        InputError: ``@random:`` followed by something other than a non-negative integer.
    """
    _, at, tag = str(spec).rpartition("@")
    if not at:
        return None
    tag = tag.strip()
    if tag == "random":
        return 0
    if not tag.startswith("random:"):
        return None
    raw = tag[len("random:"):].strip()
    if not raw.isdigit():
        raise InputError(f"'{spec}': the seed after '@random:' must be a non-negative integer, got {raw!r}")
    return int(raw)
