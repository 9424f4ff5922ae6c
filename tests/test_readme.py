"""The README and docs: names they cite exist, and their command blocks can be run as written."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FORMAT_NAMES = {"dualex.run", "dualex.explanation"}  # file-format names, not Python objects


def _resolve(dotted: str) -> object:
    """The object a dotted ``dualex.…`` name denotes (module attributes or submodules)."""
    parts = dotted.split(".")
    obj: object = importlib.import_module(parts[0])
    for i, name in enumerate(parts[1:], start=1):
        if hasattr(obj, name):
            obj = getattr(obj, name)
        else:
            obj = importlib.import_module(".".join(parts[: i + 1]))
    return obj


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_cited_python_names_exist(doc):
    names = sorted(set(re.findall(r"`(dualex(?:\.[A-Za-z_][A-Za-z0-9_]*)+)", doc.read_text(encoding="utf-8"))))
    missing = []
    for name in names:
        if name in FORMAT_NAMES:
            continue
        try:
            _resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert not missing, f"{doc.name} cites names that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_evaluate_examples_write_to_distinct_run_directories(doc):
    """Two different runs into one ``--out`` would have the second refused (a different run is there)."""
    text = doc.read_text(encoding="utf-8")
    runs: dict[str, str] = {}
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command.split(" #")[0]) if command.strip() else []
            if words[:2] != ["dualex", "evaluate"] or "--out" not in words:
                continue
            out = words[words.index("--out") + 1]
            spec = " ".join(w for w in words if w != out)
            assert runs.setdefault(out, spec) == spec, f"{doc.name}: two different runs write to {out}"


def test_the_architecture_section_names_every_package_and_module_and_only_real_ones():
    root = ROOT
    pkg = root / "src" / "dualex"
    text = (root / "README.md").read_text()
    arch = text[text.index("## Architecture") :]
    nxt = re.search(r"\n## ", arch[5:])
    arch = arch[: nxt.start() + 5] if nxt else arch
    packages = sorted(d.name for d in pkg.iterdir() if (d / "__init__.py").exists())
    modules = sorted(f.stem for f in pkg.glob("*.py") if f.stem != "__init__")
    assert [p for p in packages if f"`{p}/`" not in arch] == []
    assert [m for m in modules if f"`{m}`" not in arch] == []
    for path in re.findall(r"`((?:[a-z_]+/)+[a-z_]+\.py)`", arch):  # files the section names
        assert (pkg / path).exists() or (root / path).exists() or (root / "src" / path).exists(), path
