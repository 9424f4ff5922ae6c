"""Where shard files live: local paths or fsspec URLs, folders, globs and brace patterns.

``DIR`` (every shard file in it, sorted), ``DIR/{00000..00127}.tar`` (brace ranges keep zero padding;
``{a,b}`` lists), ``DIR/*.tar`` (glob) or one file; ``s3://``, ``gs://``, ``file://``, ... URLs go
through fsspec with its usual configuration (credentials from the environment or ``~/.aws`` etc.).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from dualex.datasets.base import Dataset, Item
from dualex.errors import InputError

_BRACE = re.compile(r"\{([^{}]*)\}")


def is_url(location: str) -> bool:
    """Whether ``location`` is an fsspec URL (``proto://...``) rather than a local path."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location) is not None


def brace_expand(pattern: str) -> list[str]:
    """Expand ``{a,b}`` lists and ``{000..127}`` ranges (zero padding kept), left to right.

    Raises:
        InputError: a range whose ends are not integers, or one that runs backwards.
    """
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body = m.group(1)
    head, tail = pattern[: m.start()], pattern[m.end() :]
    if ".." in body and "," not in body:
        lo, _, hi = body.partition("..")
        if not (lo.strip().isdigit() and hi.strip().isdigit()):
            raise InputError(f"brace range {{{body}}} in {pattern!r} must be {{START..END}} with integers")
        a, b = int(lo), int(hi)
        if b < a:
            raise InputError(f"brace range {{{body}}} in {pattern!r} runs backwards")
        width = len(lo) if lo.startswith("0") else 0
        choices = [f"{k:0{width}d}" for k in range(a, b + 1)]
    else:
        choices = body.split(",")
    return [x for c in choices for x in brace_expand(f"{head}{c}{tail}")]


def _fs(location: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise InputError(f"reading {location} needs fsspec: pip install fsspec (and s3fs, gcsfs, ...)") from None
    try:
        fs, path = fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as exc:
        raise InputError(f"cannot open {location}: {exc}") from None
    return fs, path


def list_files(location: str, suffixes: Sequence[str], what: str) -> list[str]:
    """The files a location names, sorted within each pattern (as given: a path or URL per file).

    Args:
        location: A folder, a file, a glob, or a brace pattern (of files or globs).
        suffixes: File name endings taken from a folder (``(".tar",)``).
        what: What the files are, for messages (``"WebDataset shard"``).

    Raises:
        InputError: nothing matches, or a named file does not exist.
    """
    out: list[str] = []
    for loc in brace_expand(location):
        if is_url(loc):
            fs, path = _fs(loc)
            proto = loc.split("://", 1)[0]
            if any(ch in path for ch in "*?["):
                found = sorted(fs.glob(path))
            elif fs.isdir(path):
                found = sorted(p for p in fs.ls(path, detail=False) if str(p).endswith(tuple(suffixes)))
            elif fs.exists(path):
                found = [path]
            else:
                raise InputError(f"{what} not found: {loc}")
            out += [f"{proto}://{str(p).split('://', 1)[-1]}" for p in found]
            continue
        p = Path(loc).expanduser()
        if any(ch in loc for ch in "*?["):
            import glob

            out += [f for f in sorted(glob.glob(str(p))) if Path(f).is_file()]
        elif p.is_dir():
            out += [str(f) for f in sorted(p.iterdir()) if f.is_file() and f.name.endswith(tuple(suffixes))]
        elif p.is_file():
            out.append(str(p))
        else:
            raise InputError(f"{what} not found: {loc}")
    if not out:
        raise InputError(f"no {what} files ({', '.join(suffixes)}) in {location}")
    return out


def open_binary(location: str) -> IO[bytes]:
    """Open a local path or an fsspec URL for reading bytes (the caller closes it).

    Raises:
        InputError: the file cannot be opened.
    """
    try:
        if is_url(location):
            fs, path = _fs(location)
            f: IO[bytes] = fs.open(path, "rb")
            return f
        return open(location, "rb")
    except OSError as exc:
        raise InputError(f"cannot open {location} ({exc.strerror or exc})") from None


def parent_of(location: str) -> str:
    """The folder of a file location (a path or URL), without a trailing slash."""
    return location.rsplit("/", 1)[0] if "/" in location else "."


class StreamingDataset(Dataset):
    """A reader of shard files that streams (base of ``webdataset`` and ``parquet``).

    ``path`` may be a folder, a file, a glob, a brace pattern or an fsspec URL; it is kept as given
    (`location`) and recorded so in run manifests.
    """

    streaming = True
    SUFFIXES: tuple[str, ...] = ()
    WHAT = "shard"

    def __init__(self, path: str | Path | None, *, limit: int | None = None, **options: Any) -> None:
        super().__init__(path, limit=limit, **options)
        if path in (None, ""):
            raise InputError(f"the {self.kind} reader needs a location: --dataset {self.kind}:DIR (or a URL)")
        self.location = str(path)
        self.path = None if is_url(self.location) else Path(self.location)
        self._files: list[str] | None = None

    def files(self) -> list[str]:
        """The shard files, in order (listed once)."""
        if self._files is None:
            self._files = list_files(self.location, self.SUFFIXES, self.WHAT)
        return self._files

    def describe(self) -> dict[str, Any]:
        """What identifies this dataset in a run manifest (kind, location, options)."""
        return {"kind": self.kind, "path": self.location, "options": {"limit": self.limit, **self.options}}

    def _read(self) -> Iterator[Item]:
        return self.iter_items()
