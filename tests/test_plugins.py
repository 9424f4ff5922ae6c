from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dualex.plugins import import_submodules


def _package(root: Path, name: str, modules: dict[str, str]) -> None:
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("REGISTRY = []\n")
    for mod, body in modules.items():
        path = pkg / f"{mod}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)


def test_imports_every_module_and_subpackage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _package(tmp_path, "plug_a", {"one": "from plug_a import REGISTRY\nREGISTRY.append('one')\n"})
    (tmp_path / "plug_a" / "sub").mkdir()
    (tmp_path / "plug_a" / "sub" / "__init__.py").write_text("")
    (tmp_path / "plug_a" / "sub" / "two.py").write_text("from plug_a import REGISTRY\nREGISTRY.append('two')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        done = import_submodules("plug_a")
        assert done == ["plug_a.one", "plug_a.sub", "plug_a.sub.two"]
        assert sorted(sys.modules["plug_a"].REGISTRY) == ["one", "two"]
    finally:
        for name in [m for m in sys.modules if m.startswith("plug_a")]:
            del sys.modules[name]


def test_missing_optional_dependency_skipped_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _package(tmp_path, "plug_b", {"ok": "X = 1\n", "needs_extra": "import no_such_dist_for_dualex_tests\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert import_submodules("plug_b", skip_missing=True) == ["plug_b.ok"]
        with pytest.raises(ModuleNotFoundError):
            import_submodules("plug_b")
    finally:
        for name in [m for m in sys.modules if m.startswith("plug_b")]:
            del sys.modules[name]


def test_a_broken_module_of_the_package_itself_is_not_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _package(tmp_path, "plug_c", {"bad": "import plug_c.does_not_exist\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ModuleNotFoundError):
            import_submodules("plug_c", skip_missing=True)
    finally:
        for name in [m for m in sys.modules if m.startswith("plug_c")]:
            del sys.modules[name]
