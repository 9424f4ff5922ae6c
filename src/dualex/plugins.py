"""One `Registry` per kind of extension (methods, metrics, datasets, models, commands), and plugins.

Every kind of thing a user can add to dualex is a named entry in a `Registry`: an explanation method,
a metric, a dataset reader, a model loader, a CLI command group. An entry has a name, a one-line
summary and the object itself; registering a second, different object under a name that is taken is an
`DuplicateNameError` unless the registration asks to ``override``.

A registry fills itself on first use by importing every module of its package (`import_submodules`),
so adding a built-in method, metric or reader is adding one file. Modules from outside the package are
*plugins*, imported by `load_plugins` from three places:

* ``--plugins mod1,mod2`` on the command line (or ``load_plugins(["mod1"])`` in Python);
* the environment variable ``DUALEX_PLUGINS`` (comma-separated module names);
* the ``dualex.plugins`` entry-point group of installed packages (``[project.entry-points."dualex.plugins"]
  myname = "mypackage.dualex_plugin"``): each entry point's module is imported.

A plugin module registers what it brings with the package's decorators (`dualex.methods.register_method`,
`dualex.metrics.register_metric`, `dualex.datasets.register_reader`, `dualex.models.register_loader`).
Engines that run work in other processes (Ray) import the same modules there (`plugin_modules`).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from dualex.errors import InputError

T = TypeVar("T")

#: Environment variable naming plugin modules (comma-separated).
PLUGINS_ENV = "DUALEX_PLUGINS"
#: Entry-point group through which installed packages register plugins.
ENTRY_POINT_GROUP = "dualex.plugins"


class DuplicateNameError(InputError):
    """A name is registered twice in one registry (pass ``override=True`` to replace on purpose)."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered thing.

    Attributes:
        name: The name users type (``"ij"``, ``"pointing"``, ``"coco"``, ``"hf"``).
        kind: The registry's kind (``"method"``, ``"metric"``, ``"dataset"``, ``"model"``, ``"command"``).
        value: The registered object (a function, a class, an info record).
        summary: One line saying what it is.
        module: The module that registered it (``dualex.methods.ij``, or a plugin's).
        details: Kind-specific facts shown by the listing commands (e.g. a method's ``order``).
    """

    name: str
    kind: str
    value: T
    summary: str = ""
    module: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


def _origin(value: Any) -> str:
    """``module.qualname`` of a registered object (its identity across re-imports of a module)."""
    fn = getattr(value, "fn", value)  # info records carry the function they describe
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def first_line(doc: str | None) -> str:
    """The first non-empty line of a docstring (an entry's default summary)."""
    for line in (doc or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


class Registry(Generic[T]):
    """Named entries of one kind, filled on first use from a package and the plugins.

    Args:
        kind: What the entries are, in the singular (``"method"``); used in messages and listings.
        package: Package whose modules register the built-in entries (imported on first read).
        skip_missing: Skip a module of ``package`` whose optional third-party dependency is missing.
    """

    def __init__(self, kind: str, *, package: str | None = None, skip_missing: bool = False) -> None:
        self.kind = kind
        self.package = package
        self.skip_missing = skip_missing
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        self._filled = package is None
        self._lock = threading.RLock()
        REGISTRIES[kind] = self

    # ------------------------------------------------------------------ writing
    def add(
        self,
        name: str,
        value: T,
        *,
        summary: str = "",
        override: bool = False,
        module: str | None = None,
        **details: Any,
    ) -> T:
        """Register ``value`` under ``name`` and return it.

        Registering the same object again (a module imported twice) replaces the entry quietly.

        Raises:
            InputError: the name is empty or not a string.
            DuplicateNameError: another object has the name, and ``override`` is false.
        """
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        mod = module or getattr(getattr(value, "fn", value), "__module__", "") or ""
        if self.package and not (mod == self.package or mod.startswith(f"{self.package}.")):
            self._fill_package()  # an entry from outside: the built-in ones first, so that a clash shows here
        with self._lock:
            old = self._entries.get(name)
            if old is not None and not override and _origin(old.value) != _origin(value):
                raise DuplicateNameError(
                    f"{self.kind} {name!r} is registered twice: by {old.module or _origin(old.value)} and by "
                    f"{module or _origin(value)}; choose another name, or pass override=True to replace it"
                )
            if name in self._aliases and not override:
                raise DuplicateNameError(f"{self.kind} name {name!r} is already an alias of {self._aliases[name]!r}")
            self._entries[name] = Entry(name, self.kind, value, summary, mod, dict(details))
        return value

    def register(
        self, name: str, *, summary: str | None = None, override: bool = False, **details: Any
    ) -> Callable[[T], T]:
        """Decorator form of `add` (the summary defaults to the first line of the object's docstring)."""

        def deco(value: T) -> T:
            text = first_line(getattr(value, "__doc__", None)) if summary is None else summary
            return self.add(name, value, summary=text, override=override, **details)

        return deco

    def alias(self, name: str, target: str, *, override: bool = False) -> None:
        """Make ``name`` another name of the entry ``target`` (``get(name)`` returns ``get(target)``)."""
        with self._lock:
            if not override and (name in self._entries or self._aliases.get(name, target) != target):
                raise DuplicateNameError(f"{self.kind} name {name!r} is taken; cannot make it an alias of {target!r}")
            self._aliases[name] = target

    def remove(self, name: str) -> None:
        """Forget an entry (and the aliases pointing at it); a name that is not registered is ignored."""
        with self._lock:
            self._entries.pop(name, None)
            for a in [a for a, t in self._aliases.items() if t == name or a == name]:
                del self._aliases[a]

    # ------------------------------------------------------------------ reading
    def fill(self) -> None:
        """Import the package's modules (once) and the plugins, so that every entry is registered."""
        self._fill_package()
        discover_plugins()

    def _fill_package(self) -> None:
        if not self._filled:
            with self._lock:
                if not self._filled:
                    self._filled = True
                    try:
                        import_submodules(str(self.package), skip_missing=self.skip_missing)
                    except BaseException:
                        self._filled = False
                        raise

    def resolve(self, name: str) -> str:
        """The registered name that ``name`` means (itself, or the target of an alias)."""
        self.fill()
        return self._aliases.get(name, name)

    def peek(self, name: str) -> Entry[T] | None:
        """The entry registered under ``name`` so far, without filling the registry (None if none)."""
        return self._entries.get(self._aliases.get(name, name))

    def get(self, name: str) -> Entry[T]:
        """The entry of ``name`` (or of the entry it is an alias of).

        Raises:
            InputError: nothing is registered under that name (the message lists what is).
        """
        key = self.resolve(name)
        if key not in self._entries:
            raise InputError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or '(none)'}")
        return self._entries[key]

    def __getitem__(self, name: str) -> T:
        return self.get(name).value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.resolve(name) in self._entries

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        self.fill()
        return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        """Registered entries, in registration order."""
        self.fill()
        return list(self._entries.values())

    def aliases(self) -> dict[str, str]:
        """Alias -> registered name."""
        self.fill()
        return dict(self._aliases)

    def aliases_of(self, name: str) -> list[str]:
        """The aliases of the registered name ``name``."""
        return [a for a, t in self.aliases().items() if t == name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


#: Every registry by kind (filled as the packages that own them are imported).
REGISTRIES: dict[str, Registry[Any]] = {}


# ------------------------------------------------------------------------------------- plugins
_loaded: dict[str, None] = {}  # plugin modules imported in this process, in order
_explicit: dict[str, None] = {}  # those named by --plugins / load_plugins / DUALEX_PLUGINS
_discovered = False


def _split(modules: str | Sequence[str] | None) -> list[str]:
    if modules is None:
        return []
    parts = modules.split(",") if isinstance(modules, str) else list(modules)
    return [p.strip() for p in parts if isinstance(p, str) and p.strip()]


def load_plugins(modules: str | Sequence[str] | None = None) -> list[str]:
    """Import plugin modules (they register entries as they are imported); each module once per process.

    Args:
        modules: Module names (a list, or one comma-separated string) to import now, in addition to those
            of ``DUALEX_PLUGINS`` and the ``dualex.plugins`` entry points (imported on the first call).

    Returns:
        The plugin modules named by ``modules`` and ``DUALEX_PLUGINS``, in the order they were imported.

    Raises:
        InputError: a module cannot be imported (its name and the reason).
    """
    discover_plugins()
    for name in _split(modules):
        _import_plugin(name, f"plugin module {name!r}")
        _explicit[name] = None
    return list(_explicit)


def plugin_modules() -> list[str]:
    """The plugin modules named in this process (``--plugins``, ``DUALEX_PLUGINS``): what a worker imports."""
    return list(_explicit)


def unload_plugin(name: str) -> int:
    """Forget a plugin module: its entries leave every registry and a later `load_plugins` imports it afresh.

    Returns:
        How many entries were removed.
    """
    import sys

    n = 0
    for reg in REGISTRIES.values():
        for entry in [e for e in reg._entries.values() if e.module == name or e.module.startswith(f"{name}.")]:
            reg.remove(entry.name)
            n += 1
    _loaded.pop(name, None)
    _explicit.pop(name, None)
    sys.modules.pop(name, None)
    return n


def discover_plugins() -> None:
    """Import the ``DUALEX_PLUGINS`` modules and the ``dualex.plugins`` entry points (once per process)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for name in _split(os.environ.get(PLUGINS_ENV)):
        _import_plugin(name, f"plugin module {name!r} (from ${PLUGINS_ENV})")
        _explicit[name] = None
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value in _loaded:
            continue
        try:
            ep.load()
        except Exception as exc:
            raise InputError(
                f"the installed dualex plugin {ep.name!r} ({ep.value}, from the {ENTRY_POINT_GROUP!r} entry points) "
                f"failed to import: {exc}; fix or uninstall the package that provides it"
            ) from None
        _loaded[ep.value] = None


def _import_plugin(name: str, what: str) -> None:
    if name in _loaded:
        return
    try:
        importlib.import_module(name)
    except ImportError as exc:
        raise InputError(f"cannot import {what}: {exc}; is it installed, or on PYTHONPATH?") from None
    _loaded[name] = None


def import_submodules(package: str, *, skip_missing: bool = False) -> list[str]:
    """Import every module below ``package`` (recursively, in name order).

    Args:
        package: Dotted name of a package, e.g. ``"dualex.models"``.
        skip_missing: Skip a module whose import fails because an optional third-party dependency is
            not installed (an ``ImportError`` naming a module outside ``package``'s top-level package);
            other errors, and a missing module of the package itself, propagate.

    Returns:
        The dotted names of the modules that were imported.
    """
    pkg = importlib.import_module(package)
    own = package.split(".")[0]
    done: list[str] = []
    for info in sorted(pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."), key=lambda i: i.name):
        try:
            importlib.import_module(info.name)
        except ImportError as exc:
            missing = exc.name or ""
            if skip_missing and missing.split(".")[0] != own:
                continue
            raise
        done.append(info.name)
    return done
