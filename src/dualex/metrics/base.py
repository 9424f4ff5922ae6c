"""Metrics as registry entries: ``@register_metric`` and what `dualex evaluate` does with one.

A metric is a function ``fn(explanation, item, model, game, **options)`` registered under a name:

* ``explanation``: the `Explanation` of the item's (image, caption) pair;
* ``item``: the dataset `Item` (its ``id``, ``caption``, ground-truth ``objects`` with spans and boxes,
  grid ``regions``);
* ``model``: the `DualEncoder` that was explained;
* ``game``: the item's cached `DualEncoderGame` (masked forward passes, shared by every metric of the
  item) when the metric ``needs=("game",)``, else None; ``game.pair`` is the item's prepared `Pair`;
* ``options``: keyword-only parameters with defaults, filled from the run's metric settings of the same
  name (``faith_p``, ``perturbation_order``, ...) and from ``--metric-option NAME.KEY=VALUE``.

It returns named values. A ``level="pair"`` metric returns a mapping ``{column: value}`` for the pair's
row; a ``level="object"`` metric returns one mapping per ground-truth object of the item (in
``item.objects`` order; an exception in place of a mapping records that object's error). Either may
return a `MetricValues` to give both levels at once. Values are numbers (float64 columns; NaN and None
are null), strings, or 1-D sequences of numbers (list<float32> columns, e.g. curves); the shards get one
column per returned name (``docs/run-format.md``), and the summary and ``dualex compare`` average every
numeric column they find. A metric's wall time is recorded in ``seconds_<name>``.

Example (a metric of one's own, in a module named with ``dualex evaluate --plugins mymetrics``)::

    from dualex.metrics import register_metric

    @register_metric("cross_mass", summary="total absolute token x patch interaction")
    def cross_mass(explanation, item, model, game):
        return {"cross_abs_sum": float(explanation.cross.abs().sum())}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dualex.errors import InputError
from dualex.plugins import Registry, first_line

if TYPE_CHECKING:
    from dualex.datasets.base import Item
    from dualex.explanation import Explanation
    from dualex.games.game import DualEncoderGame
    from dualex.models.base import DualEncoder

MetricFn = Callable[..., Any]
LEVELS = ("pair", "object")
#: What a metric may ask evaluate to provide: ``game`` (the item's cached masking game).
NEEDS = ("game",)
_COLUMN = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class MetricInfo:
    """A registered metric.

    Attributes:
        name: What ``--metrics`` names.
        fn: ``fn(explanation, item, model, game, **options)`` (see the module docstring).
        level: ``"pair"`` (values for the pair's row) or ``"object"`` (values per ground-truth object).
        needs: What evaluate must provide (`NEEDS`).
        summary: One line for ``dualex metrics``.
        default: Run when ``--metrics`` is not given (the built-in metrics).
        by_objects: Pair-level columns the summary also breaks down by the item's number of objects.
        columns: A short description of each column it writes (listings and summary headings).
        ratios: Summary columns defined as mean(numerator column) / mean(denominator column).
    """

    name: str
    fn: MetricFn
    level: str
    needs: tuple[str, ...]
    summary: str
    default: bool = False
    by_objects: tuple[str, ...] = ()
    columns: Mapping[str, str] = field(default_factory=dict)
    ratios: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class MetricValues:
    """What one metric measured on one item, at both levels.

    Attributes:
        pair: Values for the pair's row.
        objects: Per ground-truth object (``item.objects`` order) its values, or the exception that
            stopped it for that object; None when the metric has no object values.
        error: A failure of the pair-level part (recorded on the pair's row, the other values kept).
    """

    pair: dict[str, Any] = field(default_factory=dict)
    objects: list[Mapping[str, Any] | BaseException] | None = None
    error: BaseException | None = None


METRICS: Registry[MetricInfo] = Registry("metric", package="dualex.metrics")


def register_metric(
    name: str,
    *,
    level: str = "pair",
    needs: Sequence[str] = (),
    summary: str | None = None,
    default: bool = False,
    by_objects: Sequence[str] = (),
    columns: Mapping[str, str] | None = None,
    ratios: Mapping[str, tuple[str, str]] | None = None,
    override: bool = False,
) -> Callable[[MetricFn], MetricFn]:
    """Register a metric for ``dualex evaluate --metrics NAME`` (see the module docstring).

    Args:
        name: The metric's name (lower case, ``[a-z0-9_]``).
        level: ``"pair"`` or ``"object"``: what the function returns values for.
        needs: What evaluate must provide: ``("game",)`` for the item's cached masking game.
        summary: One line for ``dualex metrics`` (default: the first line of the docstring).
        default: Run it when no ``--metrics`` are given (dualex's own metrics).
        by_objects: Pair-level columns the summary also tabulates by number of named objects (PGR).
        columns: A short description of each column the metric writes (shown by ``dualex metrics``).
        ratios: Summary columns ``{name: (numerator, denominator)}``: the ratio of the two columns' means.
        override: Replace a metric of the same name (else a second registration is an error).

    Raises:
        InputError: a bad name, level or need.
        DuplicateNameError: another metric has the name.
    """
    if not isinstance(name, str) or not _COLUMN.match(name):
        raise InputError(f"a metric name is lower case letters, digits and '_', got {name!r}")
    if level not in LEVELS:
        raise InputError(f"metric {name!r}: level must be 'pair' or 'object', got {level!r}")
    unknown = [n for n in needs if n not in NEEDS]
    if unknown:
        raise InputError(f"metric {name!r}: unknown needs {unknown}; a metric may need {', '.join(NEEDS)}")

    def deco(fn: MetricFn) -> MetricFn:
        text = first_line(fn.__doc__) if summary is None else summary
        info = MetricInfo(name, fn, level, tuple(needs), text, default, tuple(by_objects), dict(columns or {}),
                          dict(ratios or {}))
        METRICS.add(name, info, summary=text, override=override, module=fn.__module__, level=level,
                    needs=",".join(needs))  # fmt: skip
        return fn

    return deco


def column_descriptions() -> dict[str, str]:
    """Every column a registered metric describes -> its description."""
    return {c: d for e in METRICS.entries() for c, d in e.value.columns.items()}


def pair_game(
    model: DualEncoder,
    pair: Any,
    game: DualEncoderGame | None,
    *,
    row: int = 0,
    internal_batch_size: int = 64,
    text_masking: str = "default",
    image_masking: str = "default",
) -> DualEncoderGame:
    """``game`` if given (a metric reuses the item's cached game), else a new game of row ``row`` of ``pair``."""
    if game is not None:
        return game
    from dualex.games.game import DualEncoderGame

    return DualEncoderGame(model, pair, row=row, internal_batch_size=internal_batch_size,
                           text_masking=text_masking, image_masking=image_masking)  # fmt: skip


def get_metric(name: str) -> MetricInfo:
    """The registered metric ``name`` (or alias).

    Raises:
        InputError: no metric has that name (the message lists them).
    """
    return METRICS.get(name).value


def resolve_metrics(metrics: str | Sequence[str] | None) -> list[str]:
    """Metric names from a comma-separated string or a list (aliases allowed), in registration order.

    ``None`` means the default metrics (dualex's own), ``"all"`` every registered one.

    Raises:
        InputError: an unknown name (the message lists the metrics).
    """
    entries = METRICS.entries()
    if metrics is None:
        return [e.name for e in entries if e.value.default]
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    if [n.lower() for n in names] == ["all"]:
        return [e.name for e in entries]
    wanted = set()
    for n in names:
        key = n.lower().replace("-", "_")
        if key not in METRICS:
            raise InputError(f"unknown metric {n!r}; choose from {', '.join(e.name for e in entries)} (or 'all')")
        wanted.add(METRICS.resolve(key))
    return [e.name for e in entries if e.name in wanted]


def metric_settings(info: MetricInfo, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``settings`` that the metric's function takes as keyword options."""
    from dualex.options import option_names

    names = option_names(info.fn, skip=4)
    return dict(settings) if names is None else {k: v for k, v in settings.items() if k in names}


def check_metric_options(name: str, options: Mapping[str, Any]) -> None:
    """Check ``--metric-option`` values for metric ``name`` against its function's keyword options.

    Raises:
        InputError: unknown metric or option, or a value of the wrong type.
    """
    from dualex.options import check_options

    check_options(get_metric(name).fn, dict(options), what=f"metric {name!r}", skip=4)


def measure(
    info: MetricInfo,
    explanation: Explanation,
    item: Item,
    model: DualEncoder,
    game: DualEncoderGame | None,
    settings: Mapping[str, Any] | None = None,
) -> MetricValues:
    """Run one metric on one item and check the shape of what it returns.

    Args:
        info: The metric.
        explanation, item, model, game: Its arguments (see the module docstring).
        settings: Run settings and metric options; those the function takes are passed.

    Returns:
        `MetricValues` (a pair-level mapping, or the per-object list, wrapped).

    Raises:
        Whatever the metric raises; InputError when its return value has the wrong shape.
    """
    out = info.fn(explanation, item, model, game, **metric_settings(info, settings or {}))
    n_objects = len(getattr(item, "objects", ()) or ())
    if isinstance(out, MetricValues):
        values = out
    elif info.level == "pair":
        if not isinstance(out, Mapping):
            raise InputError(f"metric {info.name!r} returned {type(out).__name__}; a pair metric returns a dict")
        values = MetricValues(pair=dict(out))
    else:
        if isinstance(out, (str, bytes, Mapping)) or not isinstance(out, Sequence):
            raise InputError(
                f"metric {info.name!r} returned {type(out).__name__}; an object metric returns one dict per object"
            )
        values = MetricValues(objects=list(out))
    if values.objects is not None and len(values.objects) != n_objects:
        raise InputError(
            f"metric {info.name!r} returned values for {len(values.objects)} objects; the item has {n_objects}"
        )
    for row in [values.pair, *(o for o in values.objects or () if isinstance(o, Mapping))]:
        for key in row:
            if not isinstance(key, str) or not _COLUMN.match(key):
                raise InputError(f"metric {info.name!r} returned a value named {key!r}; use [a-z0-9_] names")
    return values
