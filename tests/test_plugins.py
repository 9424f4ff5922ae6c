from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dualex.errors import InputError
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


# ----------------------------------------------------------------------------- the Registry
def test_registry_refuses_a_second_name_and_overrides_on_request():
    from dualex.plugins import DuplicateNameError, Registry

    reg: Registry[object] = Registry("widget-test")

    def one() -> None:
        """The first widget."""

    def two() -> None:
        """The second widget."""

    reg.register("w")(one)
    assert reg.get("w").summary == "The first widget." and reg["w"] is one and reg.get("w").kind == "widget-test"
    with pytest.raises(DuplicateNameError, match="widget-test 'w' is registered twice"):
        reg.register("w")(two)
    assert reg["w"] is one
    reg.register("w", override=True)(two)
    assert reg["w"] is two
    reg.add("w", two)  # the same object again (a module imported twice): no error
    reg.alias("ww", "w")
    assert reg["ww"] is two and "ww" in reg and reg.names() == ["w"]
    with pytest.raises(DuplicateNameError):
        reg.alias("w", "other")
    with pytest.raises(InputError, match="unknown widget-test 'x'; available: w"):
        reg.get("x")
    reg.remove("w")
    assert "w" not in reg and "ww" not in reg


def test_every_kind_refuses_duplicates():
    from dualex.datasets import Dataset, register_reader
    from dualex.methods import register_method
    from dualex.metrics import register_metric
    from dualex.models import register_loader
    from dualex.plugins import DuplicateNameError

    with pytest.raises(DuplicateNameError, match="method 'ij'"):
        register_method("ij", order=2, summary="a second ij")(lambda model, pair: [])
    with pytest.raises(DuplicateNameError, match="metric 'pointing'"):
        register_metric("pointing")(lambda explanation, item, model, game: {})
    with pytest.raises(DuplicateNameError, match="dataset 'coco'"):

        @register_reader("coco")
        class Other(Dataset):
            def _read(self):  # pragma: no cover - never read
                yield from ()

    with pytest.raises(DuplicateNameError, match="model 'hf'"):
        register_loader("hf")(lambda spec, **kw: None)


# ----------------------------------------------------------------------------- plugins
PLUGIN_METRICS = '''
from dualex.metrics import register_metric


@register_metric("twice_score", summary="twice the model's score (a test plugin)")
def twice_score(explanation, item, model, game):
    return {"twice_score": 2.0 * explanation.score}


@register_metric("box_count", level="object")
def box_count(explanation, item, model, game, *, weight: float = 1.0):
    """Boxes per object, times weight."""
    return [{"n_boxes": weight * len(obj.boxes)} for obj in item.objects]
'''
PLUGIN_METHOD = '''
from dataclasses import replace

from dualex.methods import explain_pair, register_method


@register_method("plugin_random", order=1, summary="random scores, renamed (a test plugin)")
def plugin_random(model, pair, *, seed: int = 0):
    return [replace(ex, method="plugin_random") for ex in explain_pair(model, pair, "random", seed=seed)]
'''
PLUGIN_READER = '''
import numpy as np

from dualex.datasets import Dataset, GroundTruth, Item, register_reader


@register_reader("squares")
class Squares(Dataset):
    """Generated images with one white square each (a test plugin)."""

    def _read(self):
        for k in range(2):
            img = np.zeros((32, 32, 3), np.uint8)
            img[8:24, 8:24] = 255
            yield Item(f"sq{k}", img, "a white square", [GroundTruth("square", [(8.0, 8.0, 24.0, 24.0)],
                                                                     "white square", 2, 14)])
'''


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from dualex.plugins import unload_plugin

    names: list[str] = []

    def write(name: str, body: str) -> str:
        (tmp_path / f"{name}.py").write_text(body)
        names.append(name)
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    yield write
    for name in names:
        unload_plugin(name)


def _doc_modules() -> dict[str, str]:
    """The plugin modules of docs/extending.md's worked example: code blocks opening with ``# NAME.py``."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()
    blocks = re.findall(r"```python\n# (\w+)\.py\n(.*?)```", text, flags=re.S)
    return dict(blocks)


def test_the_docs_worked_example_metric_method_and_reader_run_in_evaluate(tmp_path: Path, plugin_dir, capsys):
    import pandas as pd

    from dualex.cli import main
    from dualex.evaluation import load_explanation, read_run

    docs = _doc_modules()
    assert set(docs) == {"my_metrics", "my_method", "my_reader"}
    mods = [plugin_dir(name, body) for name, body in docs.items()]
    out = tmp_path / "run"
    argv = ["evaluate", "--plugins", ",".join(mods), "--model", "py:dualex.testing:tiny_hf_clip", "--dataset",
            "squares:", "-D", "n=2", "--methods", "leave_one_out,random", "--metrics",
            "score_share,empty_drop,box_count,completeness", "-M", "box_count.weight=2", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    rows = read_run(out)
    pair, obj = rows[rows.level == "pair"], rows[rows.level == "object"]
    assert len(pair) == 4 and pair["error"].isna().all() and (obj["n_boxes"] == 2.0).all() and len(obj) == 4
    by = pair.set_index(["method", "item_id"])
    assert by.loc["leave_one_out", "top_share"].isna().all() and by.loc["random", "top_share"].between(0, 1).all()
    assert (by.loc["random", "empty_drop"] == by.loc["leave_one_out", "empty_drop"]).all()  # the game, not the method
    assert pair["seconds_empty_drop"].notna().all()
    # leave-one-out: a patch's value is v(N) - v(N without it), from the same game the metric used
    ex = load_explanation(out, pair[pair.method == "leave_one_out"].iloc[0])
    assert ex.method == "leave_one_out" and ex.cross is None and ex.image_main is not None
    overall = pd.read_csv(out / "summary" / "overall.csv").set_index("method")
    assert overall.loc["random", "n_boxes"] == 2.0 and {"top_share", "empty_drop"} <= set(overall.columns)
    assert "empty_drop" in capsys.readouterr().out
    assert main(["summary", str(out)]) == 0 and "n_boxes" in capsys.readouterr().out  # no plugin needed
    assert main(["metrics", "--options"]) == 0
    listing = capsys.readouterr().out
    assert "score_share" in listing and "top_share" in listing and "weight=1.0" in listing
    assert main(["datasets"]) == 0 and "squares" in capsys.readouterr().out
    assert main(["methods"]) == 0 and "leave_one_out" in capsys.readouterr().out


def test_bad_plugin_names_are_one_plain_error(capsys):
    from dualex.cli import main
    from dualex.plugins import load_plugins

    with pytest.raises(InputError, match="cannot import plugin module 'no_such_plugin_for_dualex'"):
        load_plugins("no_such_plugin_for_dualex")
    assert main(["methods", "--plugins", "no_such_plugin_for_dualex"]) == 2
    assert "cannot import plugin module" in capsys.readouterr().err


def test_environment_and_entry_point_plugins_are_discovered(tmp_path: Path, plugin_dir, monkeypatch):
    from dualex import plugins
    from dualex.metrics import METRICS

    plugin_dir("env_metric_t", PLUGIN_METRICS.replace('"twice_score"', '"twice_env"', 1))
    plugin_dir("ep_method_t", PLUGIN_METHOD.replace('"plugin_random"', '"ep_random"', 1))
    dist = tmp_path / "dualex_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dualex-test-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[dualex.plugins]\nrandom = ep_method_t\n")
    monkeypatch.setenv(plugins.PLUGINS_ENV, "env_metric_t")
    monkeypatch.setattr(plugins, "_discovered", False)
    monkeypatch.setattr(plugins, "_explicit", dict(plugins._explicit))
    from dualex.methods import METHODS

    assert "twice_env" in METRICS and "ep_random" in METHODS
    assert "env_metric_t" in plugins.plugin_modules()  # what a Ray worker imports
    assert "ep_method_t" not in plugins.plugin_modules()  # installed: workers discover it themselves
