"""Checking, before any slow work, that an output path can be written.

`check_writable` probes the nearest existing folder of a path by creating (and removing) a temporary
file there, which is the only test that also holds for root, read-only mounts and pseudo file
systems such as ``/proc``. Nothing else is created: missing parent folders are made later by the
writer itself.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dualex.errors import InputError


def check_writable(path: str | Path, *, what: str, directory: bool = False) -> Path:
    """Refuse an output path that cannot be written, with one plain line.

    Args:
        path: The file (or, with ``directory=True``, the folder) that will be written.
        what: How the message names the path (``"--out"``, ``"the run directory"``).
        directory: ``path`` is a folder to create or fill, not a file.

    Returns:
        ``path`` as a `Path`.

    Raises:
        InputError: a parent is a file, the path is a folder where a file is expected (or the
            reverse), or the nearest existing folder does not accept new files.
    """
    p = Path(path).expanduser()
    if p.exists():
        if directory and not p.is_dir():
            raise InputError(f"{what} {p} is a file, not a folder")
        if not directory and p.is_dir():
            raise InputError(f"{what} {p} is a folder; give a file name")
    probe = p if directory and p.is_dir() else p.parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(f"{what} {p} cannot be created: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dualex-write-test-", dir=probe)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise InputError(f"{what} {p} cannot be written: {probe} does not accept new files ({reason})") from None
    os.close(fd)
    os.unlink(tmp)
    return p
