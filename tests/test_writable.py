"""`dualex.writable.check_writable`: output paths refused before any slow work, nothing created."""

from __future__ import annotations

import pytest

from dualex.errors import InputError
from dualex.writable import check_writable


def test_new_nested_path_is_fine_and_nothing_is_created(tmp_path):
    target = tmp_path / "a" / "b" / "fig.png"
    assert check_writable(target, what="--out") == target
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("make", "directory", "pattern"), [
    (lambda d: (d / "f.txt", d / "f.txt" / "x.png"), False, r"--out .*x\.png cannot be created: .*f\.txt is a file"),
    (lambda d: (d / "sub", d / "sub"), False, r"is a folder; give a file name"),
    (lambda d: (d / "f.txt", d / "f.txt"), True, r"is a file, not a folder"),
])  # fmt: skip
def test_refused(tmp_path, make, directory, pattern):
    existing, target = make(tmp_path)
    if existing.suffix:
        existing.write_text("x")
    else:
        existing.mkdir()
    with pytest.raises(InputError, match=pattern):
        check_writable(target, what="--out", directory=directory)


def test_pseudo_file_system_is_refused():
    pytest.importorskip("os").stat("/proc")  # Linux only
    with pytest.raises(InputError, match=r"does not accept new files"):
        check_writable("/proc/dualex-figure.png", what="--out")
