"""Metrics as registry entries: registration checks, name resolution, and the shape of returned values."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dualex.errors import InputError
from dualex.metrics import METRICS, MetricValues, get_metric, measure, register_metric, resolve_metrics


def test_builtin_metrics_in_the_order_runs_record_them_with_aliases():
    assert resolve_metrics(None) == ["pointing", "insertion_deletion", "faithfulness", "completeness"]
    assert resolve_metrics("aid,pg") == ["pointing", "insertion_deletion"]
    assert resolve_metrics(["P-Faithfulness"]) == ["faithfulness"]
    with pytest.raises(InputError, match="unknown metric 'accuracy'; choose from pointing, insertion_deletion"):
        resolve_metrics("accuracy")
    assert get_metric("pointing").level == "object" and get_metric("faithfulness").needs == ("game",)


def test_registration_refuses_bad_names_levels_and_needs():
    with pytest.raises(InputError, match="lower case"):
        register_metric("Bad Name")
    with pytest.raises(InputError, match="level must be 'pair' or 'object'"):
        register_metric("ok_name", level="item")
    with pytest.raises(InputError, match="unknown needs"):
        register_metric("ok_name", needs=("gpu",))


@pytest.fixture
def temp_metric():
    names: list[str] = []

    def make(name: str, fn, **kw):
        register_metric(name, **kw)(fn)
        names.append(name)
        return get_metric(name)

    yield make
    for n in names:
        METRICS.remove(n)


ITEM = SimpleNamespace(id="i", objects=[SimpleNamespace(boxes=[(0, 0, 1, 1)]), SimpleNamespace(boxes=[])])


def test_measure_wraps_and_checks_what_a_metric_returns(temp_metric):
    pair = temp_metric("t_pair", lambda explanation, item, model, game: {"a_value": 1.0})
    assert measure(pair, None, ITEM, None, None).pair == {"a_value": 1.0}
    obj = temp_metric("t_obj", lambda explanation, item, model, game: [{"n": 1}, ValueError("none")], level="object")
    v = measure(obj, None, ITEM, None, None)
    assert v.objects is not None and v.objects[0] == {"n": 1} and isinstance(v.objects[1], ValueError)
    short = temp_metric("t_short", lambda explanation, item, model, game: [{"n": 1}], level="object")
    with pytest.raises(InputError, match="values for 1 objects; the item has 2"):
        measure(short, None, ITEM, None, None)
    wrong = temp_metric("t_wrong", lambda explanation, item, model, game: [1.0])
    with pytest.raises(InputError, match="a pair metric returns a dict"):
        measure(wrong, None, ITEM, None, None)
    badkey = temp_metric("t_badkey", lambda explanation, item, model, game: {"Bad Key": 1.0})
    with pytest.raises(InputError, match="returned a value named 'Bad Key'"):
        measure(badkey, None, ITEM, None, None)
    both = temp_metric("t_both", lambda explanation, item, model, game: MetricValues({"p": 1.0}, [{}, {}]))
    assert measure(both, None, ITEM, None, None).objects == [{}, {}]


def test_settings_reach_only_the_keyword_options_a_metric_takes(temp_metric):
    def fn(explanation, item, model, game, *, faith_p: float = 0.1, scale: float = 1.0):
        return {"got": faith_p * scale}

    info = temp_metric("t_opts", fn)
    assert measure(info, None, ITEM, None, None, {"faith_p": 0.5, "scale": 4.0, "other": 1}).pair == {"got": 2.0}
    from dualex.evaluation.work import MetricOptions

    mo = MetricOptions(metrics="t_opts,completeness", metric_options={"t_opts": {"scale": 2.0}})
    assert mo.settings("t_opts")["scale"] == 2.0 and mo.to_dict()["metric_options"] == {"t_opts": {"scale": 2.0}}
    assert "metric_options" not in MetricOptions().to_dict()  # runs without them keep their manifests
    with pytest.raises(InputError, match="has no option 'scal'"):
        MetricOptions(metrics="t_opts", metric_options={"t_opts": {"scal": 2.0}})
    with pytest.raises(InputError, match="not among the metrics"):
        MetricOptions(metrics="completeness", metric_options={"t_opts": {"scale": 2.0}})
