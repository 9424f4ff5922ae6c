"""Hidden states of reference inputs, computed once per tower and reused.

A path method's reference (the zeros image, exCLIP's BOS–filler–EOS caption) is the same input for
every explanation made with a model: one image reference per model, one text reference per caption
length. Its hidden states at the split layer cost a forward pass of the tower up to that layer (about
a third of ij's cost at the last block), so `reference_states` keeps them and the reference's embedding,
per tower, keyed by the content of each reference row and the layer.

Entries are dropped when the weights change: each lookup compares a fingerprint of the owner's module
(every parameter's and buffer's storage address and version counter, which in-place updates such as an
optimiser step or ``load_state_dict`` advance, and moving the module replaces). Writes through
``tensor.data`` bypass version counters; call `clear` after those.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from dualex.models.base import SideInputs
    from dualex.models.tower import Tower

MAX_ROWS = 64
"""Reference rows kept per tower (least recently used dropped first)."""

_Fingerprint = tuple[tuple[int, int], ...]


@dataclasses.dataclass
class _TowerCache:
    fingerprint: _Fingerprint
    rows: OrderedDict[tuple[object, ...], tuple[Tensor, Tensor]]


_caches: weakref.WeakKeyDictionary[Tower, _TowerCache] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def fingerprint(module: torch.nn.Module) -> _Fingerprint:
    """``(storage address, version)`` of every parameter and buffer of ``module`` and its submodules.

    Walks the modules' own dictionaries (a plain stack, no name building): a tenth of the time of
    ``module.parameters()``, which matters for a small model whose explanation takes milliseconds.
    """
    out: list[tuple[int, int]] = []
    stack = [module]
    while stack:
        m = stack.pop()
        for store in (m._parameters, m._buffers):
            for t in store.values():
                if t is not None:
                    out.append((t.data_ptr(), t._version))
        stack.extend(c for c in m._modules.values() if c is not None)
    return tuple(out)


def row_key(inputs: Any, row: int) -> bytes | None:
    """A digest of everything in row ``row`` of ``inputs`` that a tower's forward pass reads.

    Tensor fields (batch dimension first) contribute the row's bytes, dtype and shape; dicts of tensors
    (``extra``) the same per key; other non-list fields (``grid``, ``n_prefix``) their ``repr``. Lists
    (tokens, texts, display images, transforms) are per-row metadata for displays and are left out.
    None for inputs that are not a dataclass (never cached).
    """
    if not dataclasses.is_dataclass(inputs) or isinstance(inputs, type):
        return None
    h = hashlib.blake2b(type(inputs).__qualname__.encode(), digest_size=20)

    def add(name: str, t: Tensor) -> None:
        part = t[row].detach().contiguous().cpu()
        h.update(f"{name}:{part.dtype}:{tuple(part.shape)}".encode())
        h.update(part.reshape(-1).view(torch.uint8).numpy().tobytes())

    for f in dataclasses.fields(inputs):
        value = getattr(inputs, f.name)
        if isinstance(value, Tensor):
            add(f.name, value)
        elif isinstance(value, dict):
            for k in sorted(value):
                if isinstance(value[k], Tensor):
                    add(f"{f.name}.{k}", value[k])
        elif not isinstance(value, list):
            h.update(f"{f.name}={value!r}".encode())
    return h.digest()


def reference_states(tower: Tower, inputs: SideInputs, layer: int) -> tuple[Tensor, Tensor]:
    """Hidden states at ``layer`` and embeddings of reference inputs, from the cache where a row was seen.

    Args:
        tower: The tower (``model.tower(side)``); its owner's module is fingerprinted.
        inputs: Reference inputs, ``B`` rows (``tower.reference(...)``).
        layer: Split layer (an index, ``0..n_layers``).

    Returns:
        ``(hidden, embedding)``: ``tower.hidden(inputs, layer)`` ``(B, T, W)`` and ``tower.tail(inputs,
        hidden, layer)`` ``(B, D)``, computed without gradients (new tensors; the cache keeps its own).
        Rows served from the cache equal a fresh pass to float rounding (a batched pass may round a row
        differently by its place in the batch).
    """
    keys = [row_key(inputs, b) for b in range(inputs.batch_size)]
    if any(k is None for k in keys):
        with torch.no_grad():
            h = tower.hidden(inputs, layer)
            return h, tower.tail(inputs, h, layer)
    fp = fingerprint(tower.owner.module)
    dtype, device = tower.dtype, tower.device
    full = [(layer, str(dtype), str(device), k) for k in keys]
    with _lock:
        cache = _caches.get(tower)
        if cache is None or cache.fingerprint != fp:
            cache = _TowerCache(fp, OrderedDict())
            _caches[tower] = cache
        found = {i: cache.rows[k] for i, k in enumerate(full) if k in cache.rows}
        for i in found:
            cache.rows.move_to_end(full[i])
    missing = [i for i in range(len(full)) if i not in found]
    if missing:
        sub = inputs.select(missing) if len(missing) < len(full) else inputs
        with torch.no_grad():
            h = tower.hidden(sub, layer)
            e = tower.tail(sub, h, layer)
        with _lock:
            for j, i in enumerate(missing):
                found[i] = (h[j], e[j])
                cache.rows.setdefault(full[i], (h[j].detach().clone(), e[j].detach().clone()))  # duplicates: first
            while len(cache.rows) > MAX_ROWS:
                cache.rows.popitem(last=False)
        if len(missing) == len(full):
            return h, e  # exactly the tower's passes
    order = range(len(full))
    return torch.stack([found[i][0] for i in order]), torch.stack([found[i][1] for i in order])


def reference_hidden(tower: Tower, inputs: SideInputs, layer: int) -> Tensor:
    """The hidden states of `reference_states` alone, ``(B, T, W)``."""
    return reference_states(tower, inputs, layer)[0]


def clear() -> None:
    """Forget every cached reference state (after writing weights through ``tensor.data``)."""
    with _lock:
        _caches.clear()
