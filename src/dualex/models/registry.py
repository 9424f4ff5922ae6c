"""Model names -> adapters: `load` and `wrap`.

Names (DESIGN.md): ``hf:<hub id or local dir>``, ``openclip:<arch>@<pretrained|file|random>``,
``sentence:<hub id or local dir>`` and ``shapes`` (the bundled model). New families register a loader
for a prefix with `register_loader` and a wrapper for module types with `register_wrapper`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch

from dualex.errors import InputError, UnsupportedModelError
from dualex.models.base import DualEncoder

Loader = Callable[..., DualEncoder]
Wrapper = Callable[..., DualEncoder | None]

_LOADERS: dict[str, Loader] = {}
_WRAPPERS: list[Wrapper] = []
# Adapter modules imported on first use, so that `import dualex` stays light.
_ADAPTER_MODULES = ("dualex.models.hf", "dualex.models.hf_siglip", "dualex.models.openclip", "dualex.models.sentence")
_ALIASES: dict[str, str] = {}


def register_loader(prefix: str) -> Callable[[Loader], Loader]:
    """Register ``fn(spec, device=..., dtype=...) -> DualEncoder`` for names ``"<prefix>:<spec>"``."""

    def deco(fn: Loader) -> Loader:
        _LOADERS[prefix] = fn
        return fn

    return deco


def register_wrapper(fn: Wrapper) -> Wrapper:
    """Register ``fn(module, **kw) -> DualEncoder | None`` (None = not my module type)."""
    _WRAPPERS.append(fn)
    return fn


def register_alias(name: str, target: str) -> None:
    """Make ``load(name)`` mean ``load(target)`` (e.g. ``shapes`` -> ``hf:<bundled dir>``)."""
    _ALIASES[name] = target


def _import_adapters() -> None:
    for mod in _ADAPTER_MODULES:
        try:
            importlib.import_module(mod)
        except ImportError:
            continue  # optional dependency missing; the loader will not be registered
    importlib.import_module("dualex.zoo")


def load(name: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> DualEncoder:
    """Load a dual encoder by name.

    Args:
        name: ``"shapes"``, ``"hf:<hub id or dir>"``, ``"openclip:<arch>@<tag, file or random>"`` or
            ``"sentence:<hub id or dir>"``.
        device: Where to put the model (default: CUDA if available, else CPU).
        dtype: Parameter dtype (default: as stored).

    Raises:
        InputError: the name has no known prefix.
        ModelNotAvailableError: the weights are not on this machine and cannot be fetched.
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"a model name must be a non-empty string, got {name!r}")
    _import_adapters()
    name = name.strip()
    if name in _ALIASES:
        model = load(_ALIASES[name], device=device, dtype=dtype)
        model.name = name
        return model
    prefix, sep, spec = name.partition(":")
    if not sep or prefix not in _LOADERS:
        known = ", ".join(sorted([*(f"{p}:..." for p in _LOADERS), *_ALIASES]))
        missing = [p for p in ("hf", "openclip", "sentence") if p not in _LOADERS]
        hint = f" (adapters not importable here: {', '.join(missing)}; install the extra)" if missing else ""
        raise InputError(f"unknown model name {name!r}; use one of: {known}{hint}")
    if not spec:
        raise InputError(f"model name {name!r} is missing the part after '{prefix}:'")
    dev = check_device(device) if device is not None else default_device()
    model = _LOADERS[prefix](spec, device=dev, dtype=dtype)
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
    for fn in _WRAPPERS:
        model = fn(module, **kwargs)
        if model is not None:
            return model
    raise UnsupportedModelError(
        f"no dualex adapter for objects of type {type(module).__module__}.{type(module).__name__}; "
        "supported: transformers CLIPModel/SiglipModel/Siglip2Model, open_clip CLIP/CustomTextCLIP, "
        "transformers text encoders (bi-encoders)"
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


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
