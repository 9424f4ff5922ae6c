"""Resolving a client-supplied file name to a file under the served directory, and nothing else.

A request names a file by its path relative to the served root. It is refused (`Forbidden`, HTTP 403) if
it is absolute, contains ``..``, a NUL byte or a backslash, or resolves (symbolic links followed) to a
place outside the root; it is reported missing (`NotFound`, HTTP 404) if it is hidden (a part starting
with ``.``), not a regular file, or not a ``.safetensors`` file. The query string has already been
percent-decoded once by the caller, so ``%2e%2e`` arrives here as ``..``; a doubly encoded ``%252e``
arrives as the literal ``%2e`` and names no file.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

EXPLANATION_SUFFIX = ".safetensors"
_DRIVE = re.compile(r"^[A-Za-z]:")


class Forbidden(Exception):  # noqa: N818 - named after the HTTP status it maps to
    """The name points outside the served directory (HTTP 403)."""


class NotFound(Exception):  # noqa: N818
    """The name is inside the served directory but is not a servable explanation file (HTTP 404)."""


def resolve_under(root: Path, name: str) -> Path:
    """The explanation file ``name`` (relative, ``/``-separated) under ``root``, fully resolved.

    Args:
        root: The served directory (already resolved).

        name: What the client asked for.

    Raises:
        Forbidden: ``name`` is absolute, climbs with ``..``, or escapes ``root`` through a symbolic link.

        NotFound: Nothing servable is there.
    """
    parts = check_name(name)
    candidate = root.joinpath(*parts)
    try:
        resolved = candidate.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError, RuntimeError, OSError):
        # a dangling or looping link, or nothing there: only report "missing" if it stays inside
        if not _inside(candidate.resolve(strict=False), root):
            raise Forbidden("outside the served directory") from None
        raise NotFound(name) from None
    if not _inside(resolved, root):
        raise Forbidden("outside the served directory")
    if any(p.startswith(".") for p in parts) or resolved.suffix != EXPLANATION_SUFFIX or not resolved.is_file():
        raise NotFound(name)
    return resolved


def check_name(name: str) -> tuple[str, ...]:
    """The parts of a client-supplied relative name, after the checks that need no file system.

    Raises:
        Forbidden: ``name`` is empty, absolute, climbs with ``..``, or holds a NUL byte or a backslash.
    """
    if not name or "\x00" in name or "\\" in name:
        raise Forbidden("bad file name")
    if name.startswith("/") or _DRIVE.match(name):
        raise Forbidden("absolute paths are not served")
    parts = PurePosixPath(name).parts
    if any(p == ".." for p in parts):
        raise Forbidden("'..' is not allowed in file names")
    return parts


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def relative_name(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` with ``/`` separators (the name clients use)."""
    return path.relative_to(root).as_posix()
