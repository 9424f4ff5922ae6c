"""Registries fill themselves by importing every module of their package.

A package that keeps a registry (model adapters, methods, dataset readers, CLI subcommands) has its
modules register themselves when imported; `import_submodules` imports them all, so adding a model
family, method, reader or subcommand is adding a file, with no list of module names to edit.
"""

from __future__ import annotations

import importlib
import pkgutil


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
