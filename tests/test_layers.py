"""The import graph of src/dualex: no cycles, and every import points down the layers.

Layers, bottom to top (a module may import its own layer's modules and any lower layer's, never a higher one):

0. core — errors, progress, autodiff, plugins, images (incl. `ImageTransform`), options (checking keyword
   options against signatures), writable (output-path checks), bytelevel (byte-level BPE pieces), threads;
1. data and models — datasets (readers, shapes generator), models (adapters, tokenize, preprocess);
2. explanation — explanation, spans, plotting (no model inside);
3. games — the cooperative games, samplers, surrogates;
4. methods — the explanation methods;
5. metrics — scoring explanations;
6. decisions — contrasts, zero-shot decisions, rankings (explanations of score differences);
7. applications — evaluation, analysis, training (fine-tuning, the bundled model), testing, tiny (tiny models);
8. interfaces — cli, viewer, demo, ``__main__`` and the ``dualex`` facade.

Every import counts, including those inside functions; only ``if TYPE_CHECKING:`` blocks are left out.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "dualex"

LAYERS: dict[str, int] = {
    **dict.fromkeys(
        ("errors", "progress", "autodiff", "plugins", "images", "options", "writable", "bytelevel", "threads"), 0
    ),
    **dict.fromkeys(("datasets", "models"), 1),
    **dict.fromkeys(("explanation", "spans", "plotting"), 2),
    "games": 3,
    "methods": 4,
    "metrics": 5,
    "decisions": 6,
    **dict.fromkeys(("evaluation", "analysis", "training", "testing", "tiny"), 7),
    **dict.fromkeys(("cli", "viewer", "demo", "__main__", ""), 8),
}
# Lower layers may read these names of the root package (plain constants, no import of the facade's modules).
ROOT_CONSTANTS = {"__version__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The dualex modules ``path`` imports (``from dualex.x import y`` counts as dualex.x.y if that is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "dualex")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "dualex":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    found.add(sub)
                elif not (target == "dualex" and alias.name in ROOT_CONSTANTS):
                    found.add(target)
    return found - {name}


@functools.cache
def import_graph() -> dict[str, set[str]]:
    paths = sorted(PKG.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    assert top in LAYERS, f"{module}: place dualex.{top} in a layer of tests/test_layers.py"
    return LAYERS[top]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_checker_finds_cycles_and_reads_imports(tmp_path: Path) -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    graph = import_graph()
    assert "dualex.models.base" in graph["dualex.methods"]
    assert "dualex.models.registry" in graph["dualex.methods"]  # a function-level import counts
    assert "dualex.explanation" not in graph["dualex.cli.explain"]  # a TYPE_CHECKING import does not


def test_no_module_imports_itself_back() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for mod, deps in import_graph().items():
        top = mod.split(".")[1] if "." in mod else ""
        graph.setdefault(top, set()).update(d.split(".")[1] if "." in d else "" for d in deps)
    graph = {k: v - {k} for k, v in graph.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "package cycle: " + " -> ".join(cycle or [])


def test_imports_point_down_the_layers() -> None:
    graph = import_graph()
    upward = {m: sorted(d for d in deps if layer_of(d) > layer_of(m)) for m, deps in graph.items()}
    upward = {m: d for m, d in upward.items() if d}
    assert not upward, f"imports of higher layers: {upward}"


def test_explanations_and_spans_need_no_model() -> None:
    graph = import_graph()
    for module in ("dualex.explanation", "dualex.spans"):
        assert not [d for d in graph[module] if d.startswith("dualex.models")], module
