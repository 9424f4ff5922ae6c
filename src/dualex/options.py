"""Keyword options checked against the function that takes them, before any work starts.

Methods (``dualex.explain(..., **options)``, ``dualex evaluate -O``) and dataset readers
(``-D``) take keyword options. `check_options` compares the options a user gave with the
signature of the function that will receive them, so that a typo, an option of another method or a
value of the wrong type is one plain `InputError` naming the valid options, raised before a model is
loaded or a run directory is written. It works from the signature alone, so every registered method
is covered without a list to maintain.

The sampling methods share one vocabulary: ``budget`` (scored coalitions), ``p`` (keep
probability), ``seed``, ``progress`` and ``internal_batch_size``; `RENAMED` maps names that some
methods used before to those, and an old name is refused with a hint to the new one.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import numbers
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dualex.errors import InputError

#: Old option names -> the shared vocabulary (refused with a hint where the new name exists).
RENAMED: dict[str, str] = {
    "n_samples": "budget",
    "keep_prob": "p",
    "n_text_samples": "m_text",
    "n_image_samples": "m_image",
    "n_step": "n_steps",
    "steps": "n_steps",
    "batch_size": "internal_batch_size",
}


@functools.lru_cache(maxsize=256)
def _signature(fn: Callable[..., Any], skip: int) -> tuple[dict[str, inspect.Parameter], bool]:
    """Keyword parameters of ``fn`` after its first ``skip`` positional ones, and whether it takes ``**kw``."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[skip:]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    named = {
        p.name: p
        for p in params
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    return named, var_kw


@functools.lru_cache(maxsize=256)
def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # annotations that name TYPE_CHECKING-only types: no type checks then
        return {}


def option_names(fn: Callable[..., Any], *, skip: int = 2) -> list[str] | None:
    """The keyword options ``fn`` accepts (after ``skip`` leading arguments), or None if it takes ``**kwargs``."""
    named, var_kw = _signature(fn, skip)
    return None if var_kw else sorted(named)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    names = {int: "an integer", float: "a number", bool: "true/false", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits ``hint`` (simple types, Literal, unions; anything else is accepted)."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True  # tensors, mappings, devices, Any: left to the function


def _checkable(hint: Any) -> bool:
    """Whether `_matches` can judge every branch of ``hint`` (else a mismatch is not proof of an error)."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        return all(_checkable(a) for a in typing.get_args(hint))
    return hint in (bool, int, float, str, type(None))


def positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` if it is an integer ≥ ``minimum`` (booleans refused), else one plain `InputError`.

    The one range check of integer options (``budget``, ``n_steps``, ``internal_batch_size``, ...).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise InputError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def fraction(name: str, value: object, *, what: str = "") -> float:
    """``value`` as a float if it lies strictly between 0 and 1 (booleans refused), else one `InputError`.

    The one range check of probabilities and levels (``p``, ``faith_p``, ``confidence``); ``what`` says
    what the number is, in the message (``"the keep probability"``).
    """
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and 0.0 < float(value) < 1.0
    if not ok:
        label = f"{name} ({what})" if what else name
        raise InputError(f"{label} must lie strictly between 0 and 1, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _positive(v: Any) -> bool:
    return bool(v >= 1)


#: Ranges of the shared vocabulary, checked with the types (before a model is loaded): name ->
#: (test, what the value must be).
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "p": (lambda v: bool(0 < v < 1), "a keep probability strictly between 0 and 1"),
    "budget": (_positive, "a positive integer"),
    "n_steps": (_positive, "a positive integer"),
    "internal_batch_size": (_positive, "a positive integer"),
    "n_boot": (lambda v: bool(v == 0 or v >= 2), "0 (no standard errors) or at least 2"),
}


def unknown_option_message(key: str, valid: Iterable[str], what: str) -> str:
    """``"<what> has no option 'x'; did you mean ...? valid options: ..."`` (with renamed-option hints)."""
    valid = sorted(valid)
    new = RENAMED.get(key)
    if new is not None and new in valid:
        return f"{what} has no option {key!r}: it is called {new!r} now (one vocabulary for all methods)"
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listed = ", ".join(valid) if valid else "none"
    return f"{what} has no option {key!r}{hint} (valid options: {listed})"


def check_options(
    fn: Callable[..., Any],
    options: Mapping[str, Any],
    *,
    what: str,
    skip: int = 2,
) -> None:
    """Refuse options ``fn`` does not take, or values of the wrong simple type, with one plain line.

    Args:
        fn: The function the options go to (a method ``fn(model, pair, **options)``, a reader class).
        options: The options, by name.
        what: How the message names ``fn`` (``"method 'ij'"``).
        skip: Leading positional parameters that are not options (``model, pair`` for methods).

    Raises:
        InputError: an unknown option (with close matches and the valid ones), a value whose type
            does not match the annotation (integers, numbers, booleans, strings, literal choices), or
            a value of the shared vocabulary out of its range (`RANGES`: ``p``, ``budget``, ...).
    """
    named, var_kw = _signature(fn, skip)
    hints = _hints(fn)
    for key, value in options.items():
        if key not in named:
            if var_kw:
                continue
            raise InputError(unknown_option_message(key, named, what))
        hint = hints.get(key)
        if hint is not None and _checkable(hint) and not _matches(value, hint):
            raise InputError(
                f"option {key} of {what} must be {_describe(hint)}, got {value!r} ({type(value).__name__})"
            )
        rule = RANGES.get(key)
        if rule is not None and _matches(value, float):  # a real number, not a bool
            ok, must = rule
            if not ok(value):
                raise InputError(f"option {key} of {what} must be {must}, got {value!r}")


def methods_with_option(option: str, methods: Mapping[str, Callable[..., Any]], *, skip: int = 2) -> list[str]:
    """Names in ``methods`` whose function takes ``option``."""
    out = []
    for name, fn in methods.items():
        named, var_kw = _signature(fn, skip)
        if var_kw or option in named:
            out.append(name)
    return sorted(out)
