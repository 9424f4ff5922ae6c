"""Per-item work of an evaluation run: explain one item with each pending method and score it.

The unit of work is one (item, method). `process_item` explains one item with each pending method,
scores the explanations with `dualex.metrics`, and returns result rows in the shard schema of
`dualex.evaluation.store` (one pair row, one row per ground-truth object). It never raises for bad
data: a failure becomes an ``error`` on the rows it concerns, and the run goes on. Engines
(`engine_local`, `engine_ray`) call it and hand the rows to the store; `dualex.evaluation.run` drives them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dualex.datasets.base import Item
from dualex.errors import InputError
from dualex.evaluation.store import BASE_COLUMNS, OBJECT, PAIR
from dualex.explanation import Explanation
from dualex.models.base import DualEncoder, Pair
from dualex.options import fraction, positive_int

# Saves an explanation of (method, item id) and returns its path relative to the run directory.
ExplanationSink = Callable[[str, str, Explanation], str]


@dataclass
class MetricOptions:
    """What to measure and how (part of a run's identity: a resumed run must use the same).

    Attributes:
        metrics: Registered metric names (`dualex.metrics.METRICS`; default: dualex's own, ``pointing``
            (pointing games both ways, PGR on grids, span–box interaction), ``insertion_deletion`` (curves
            + AID), ``faithfulness`` (p-faithfulness), ``completeness``); a comma-separated string,
            aliases and ``"all"`` are accepted.
        faith_p: Keep probability of the p-faithfulness coalitions.
        faith_coalitions: Held-out coalitions per pair (FIxLIP: 1000; the product design uses
            ``m_I · m_T ≤ faith_coalitions``).
        faith_design: ``"product"`` (default: ``faith_grid`` image × ``faith_grid`` text coalitions drawn
            i.i.d. from μ_p, all combinations scored by one matrix product; agrees with the paper's design,
            see docs/evaluation.md) or ``"independent"`` (the paper's ``faith_coalitions`` distinct joint
            coalitions).
        faith_grid: Coalitions per side of the product design (100: 10,000 cells from 200 tower passes).
        perturbation_order: ``"auto"`` (greedy subsets for second-order explanations), ``1`` or ``2``.
        text_masking, image_masking: How players are removed in the masking game.
        save_explanations: Write one ``.safetensors`` file per (item, method).
        metric_options: Per metric, keyword options of its function (``--metric-option NAME.KEY=VALUE``).
            Metrics also receive the settings above whose names their functions take (``faith_p``...).
    """

    metrics: tuple[str, ...] | str | None = None
    faith_p: float = 0.5
    faith_coalitions: int = 1000
    faith_design: str = "product"
    faith_grid: int = 100
    perturbation_order: int | str = "auto"
    text_masking: str = "default"
    image_masking: str = "default"
    save_explanations: bool = True
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from dualex.metrics.base import check_metric_options

        self.metrics = tuple(parse_metrics(self.metrics))
        for name, opts in self.metric_options.items():
            if name not in self.names:
                raise InputError(f"metric options are given for {name!r}, which is not among the metrics "
                                 f"{', '.join(self.names)}")  # fmt: skip
            check_metric_options(name, opts)
        fraction("faith_p", self.faith_p, what="the keep probability of the held-out coalitions")
        positive_int("faith_coalitions", self.faith_coalitions, minimum=2)
        if self.faith_design not in ("product", "independent"):
            raise InputError(f"faith_design must be 'product' or 'independent', got {self.faith_design!r}")
        positive_int("faith_grid", self.faith_grid, minimum=2)
        if self.perturbation_order not in ("auto", 1, 2):
            raise InputError(f"perturbation_order must be 'auto', 1 or 2, got {self.perturbation_order!r}")

    def to_dict(self) -> dict[str, Any]:
        """The options as recorded in the run manifest (fields added later are left out at their old defaults)."""
        d = asdict(self)
        d["metrics"] = list(self.names)
        if not self.metric_options:  # runs from before metric options do not name them
            del d["metric_options"]
        if self.faith_design == "independent":  # runs from before the option used it and do not name it
            del d["faith_design"], d["faith_grid"]
        return d

    @property
    def names(self) -> tuple[str, ...]:
        """The metric names (``metrics`` after checking: a tuple of registered names)."""
        assert isinstance(self.metrics, tuple)
        return self.metrics

    def settings(self, metric: str) -> dict[str, Any]:
        """What metric ``metric`` may receive as keyword options: these settings and its own options."""
        common = {k: v for k, v in asdict(self).items() if k not in ("metrics", "metric_options")}
        return {**common, **self.metric_options.get(metric, {})}


def parse_metrics(metrics: str | Sequence[str] | None) -> list[str]:
    """Registered metric names (comma-separated string or list; aliases allowed) in registry order.

    None means dualex's own metrics, ``"all"`` every registered one (`dualex.metrics.resolve_metrics`).
    """
    from dualex.metrics.base import resolve_metrics

    return resolve_metrics(metrics)


@dataclass
class WorkConfig:
    """Everything a worker needs to process items (picklable: engines ship it to workers).

    Attributes:
        methods: Method names.
        method_options: Per method, keyword options of the method.
        metrics: `MetricOptions`.
        internal_batch_size: Masked pairs per forward pass in the metrics.
        dataset_kind: Kind of the dataset (a column of every row).
        plugins: Plugin modules a worker imports before it works (`dualex.plugins.load_plugins`).
    """

    methods: list[str]
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: MetricOptions = field(default_factory=MetricOptions)
    internal_batch_size: int = 64
    dataset_kind: str = ""
    plugins: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- per item
def _error(stage: str, exc: BaseException) -> tuple[str, str]:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    if len(msg) > 500:
        msg = msg[:500] + "..."
    return f"{stage}: {msg}", exc.__class__.__name__


def _base_row(item: Item, method: str, kind: str) -> dict[str, Any]:
    return {
        "item_id": item.id,
        "method": method,
        "dataset": kind,
        "split": item.split,
        "image_id": item.image_id,
        "caption": item.caption,
    }


def _pair_error_rows(item: Item, methods: Sequence[str], kind: str, msg: str, etype: str) -> list[dict[str, Any]]:
    return [
        {**_base_row(item, m, kind), "object": -1, "level": PAIR, "error": msg, "error_type": etype} for m in methods
    ]


def process_item(
    model: DualEncoder,
    item: Item,
    methods: Sequence[str],
    cfg: WorkConfig,
    sink: ExplanationSink | None,
) -> list[dict[str, Any]]:
    """Explain one item with each of ``methods`` and score the explanations.

    Args:
        model: The dual encoder.
        item: The dataset item.
        methods: Methods still to run for this item.
        cfg: Method and metric options.
        sink: Saves an explanation and returns its run-relative path (None: do not save).

    Returns:
        Rows in the shard schema: per method one pair row and one row per object of the item. Failures
        are recorded in the rows' ``error``/``error_type`` columns, never raised (except interrupts).
    """
    return process_items(model, [(item, methods)], cfg, sink)[0]


@dataclass
class _Prepared:
    """An item that loaded and prepared: its image, its own one-pair `Pair` and its metric game."""

    item: Item
    methods: list[str]
    image: Any
    pair: Pair
    load_seconds: float
    game: Any = None


def process_items(
    model: DualEncoder,
    units: Sequence[tuple[Item, Sequence[str]]],
    cfg: WorkConfig,
    sink: ExplanationSink | None,
) -> list[list[dict[str, Any]]]:
    """Explain several items together (one method call per method on a batch) and score each.

    Every item is loaded and prepared on its own, so one that fails yields its error rows and the others
    go on. Per method, the items that need it are explained by one `explain_pair` call on a batch `Pair`
    of all of them; if that call raises, each item is explained on its own, so one bad item still yields
    exactly one error row. The batch's explanation time is divided evenly over its pairs (``seconds``).
    Methods with a ``seed`` option (sampled methods, ``random``) draw per batch row, so they are always
    explained item by item: an item's explanation never depends on the items batched with it. Metrics
    run per item on the item's own `Pair` and one cached game per item.

    Args:
        model: The dual encoder.
        units: ``(item, methods still to run for it)``, explained as one batch (the caller bounds its size).
        cfg: Method and metric options.
        sink: Saves an explanation and returns its run-relative path (None: do not save).

    Returns:
        Per unit, in order, its rows (as `process_item`).
    """
    from dualex.plugins import load_plugins

    load_plugins(cfg.plugins)  # a worker process registers the run's plugin metrics and methods (once)
    out: list[list[dict[str, Any]]] = [[] for _ in units]
    ready: dict[int, _Prepared] = {}
    for u, (item, methods) in enumerate(units):
        prepared = _prepare(model, item, list(methods), cfg)
        if isinstance(prepared, list):
            out[u] = prepared
        else:
            ready[u] = prepared
    if not ready:
        return out
    batch_pair, batch_rows = _batch_pair(model, ready)
    explained: dict[tuple[int, str], tuple[Explanation | BaseException, float]] = {}
    order = list(dict.fromkeys(m for p in ready.values() for m in p.methods))
    for method in order:
        us = [u for u, p in ready.items() if method in p.methods]
        explained.update(_explain_batch(model, method, cfg, ready, us, batch_pair, batch_rows))
    for u, p in ready.items():
        rows: list[dict[str, Any]] = []
        for method in p.methods:
            ex, seconds = explained[(u, method)]
            new = _process_method(model, p.item, p.pair, method, cfg, sink, p.game, ex, seconds)
            if new and "seconds" in new[0]:
                new[0]["seconds_load"] = p.load_seconds / len(p.methods)  # the item's load + prepare, shared
            rows.extend(new)
        out[u] = rows
    return out


def _prepare(model: DualEncoder, item: Item, methods: list[str], cfg: WorkConfig) -> _Prepared | list[dict[str, Any]]:
    """Load and prepare one item (and its metric game), or its error rows."""
    kind = cfg.dataset_kind
    if item.error is not None:
        return _pair_error_rows(item, methods, kind, f"load: {item.error}", "DatasetError")
    t0 = time.perf_counter()
    try:
        image = item.load_image()
    except Exception as exc:
        return _pair_error_rows(item, methods, kind, *_error("load", exc))
    try:
        if not isinstance(item.caption, str) or not item.caption.strip():
            raise InputError("the item has an empty caption")
        pair = model.prepare(image, item.caption)
    except Exception as exc:
        return _pair_error_rows(item, methods, kind, *_error("prepare", exc))
    load_seconds = time.perf_counter() - t0
    game: Any = None
    mo = cfg.metrics
    from dualex.metrics.base import get_metric

    if any("game" in get_metric(m).needs for m in mo.names):
        from dualex.games.game import DualEncoderGame

        try:  # one cached game per item: methods and metrics share its tower passes
            game = DualEncoderGame(model, pair, internal_batch_size=cfg.internal_batch_size,
                                   text_masking=mo.text_masking, image_masking=mo.image_masking)  # fmt: skip
        except Exception as exc:
            game = exc  # each metric that needs it reports the error
    return _Prepared(item, methods, image, pair, load_seconds, game)


def _batch_pair(model: DualEncoder, ready: dict[int, _Prepared]) -> tuple[Pair | None, dict[int, int]]:
    """All prepared items as one batch `Pair` (None if one item, or if preparing them together fails).

    The batch is prepared once for all methods (the captions padded to the longest); its preparation
    time is shared evenly by the items' ``seconds_load``. Returns the pair and each unit's batch row.
    """
    if len(ready) < 2:
        return None, {}
    units = list(ready)
    t0 = time.perf_counter()
    try:
        pair = model.prepare([ready[u].image for u in units], [ready[u].item.caption for u in units])
    except Exception:
        return None, {}
    share = (time.perf_counter() - t0) / len(units)
    for u in units:
        ready[u].load_seconds += share
    return pair, {u: b for b, u in enumerate(units)}


def _explain_one(
    model: DualEncoder, method: str, cfg: WorkConfig, pair: Pair
) -> tuple[list[Explanation] | BaseException, float]:
    from dualex.methods import explain_pair

    t0 = time.perf_counter()
    try:
        exs = explain_pair(model, pair, method, **cfg.method_options.get(method, {}))
    except Exception as exc:
        _release_memory(exc)
        return exc, time.perf_counter() - t0
    return exs, time.perf_counter() - t0


def _explain_batch(
    model: DualEncoder,
    method: str,
    cfg: WorkConfig,
    ready: dict[int, _Prepared],
    units: list[int],
    batch_pair: Pair | None,
    batch_rows: dict[int, int],
) -> dict[tuple[int, str], tuple[Explanation | BaseException, float]]:
    """Explanations (or the error) and seconds per unit for ``method``: one batched call, else one per unit."""
    from dualex.methods import get_method
    from dualex.methods.shared import unpad

    out: dict[tuple[int, str], tuple[Explanation | BaseException, float]] = {}
    if batch_pair is not None and len(units) > 1 and not _per_item(get_method(method).fn):
        sub = batch_pair.select([batch_rows[u] for u in units])
        exs, seconds = _explain_one(model, method, cfg, sub)
        if isinstance(exs, list) and len(exs) == len(units):
            for u, ex in zip(units, exs, strict=True):
                out[(u, method)] = (unpad(ex, int(ready[u].pair.text.ids.shape[1])),
                                    seconds / len(units))
            return out
    for u in units:  # one item at a time (also the fallback when the batched call failed)
        exs, seconds = _explain_one(model, method, cfg, ready[u].pair)
        out[(u, method)] = (exs if isinstance(exs, BaseException) else exs[0], seconds)
    return out


def _per_item(fn: Callable[..., Any]) -> bool:
    """Methods with a ``seed`` draw per batch row: explain them item by item (batch-independent results)."""
    import inspect

    return "seed" in inspect.signature(fn).parameters


def _process_method(
    model: DualEncoder,
    item: Item,
    pair: Pair,
    method: str,
    cfg: WorkConfig,
    sink: ExplanationSink | None,
    game: Any,
    ex: Explanation | BaseException,
    seconds: float,
) -> list[dict[str, Any]]:
    kind = cfg.dataset_kind
    base = _base_row(item, method, kind)
    if isinstance(ex, BaseException):
        return _pair_error_rows(item, [method], kind, *_error("explain", ex))
    pair_row: dict[str, Any] = {
        **base,
        "object": -1,
        "level": PAIR,
        "score": ex.score,
        "cosine": ex.cosine,
        "seconds": seconds,
        "n_tokens": int(ex.players.numel()),
        "n_patches": ex.n_patches,
        "units": ex.units,  # of the explanation's terms, completeness and span_box (faithfulness: the game's)
    }
    errors: list[tuple[str, str]] = []
    if sink is not None and cfg.metrics.save_explanations:
        t = time.perf_counter()
        try:
            pair_row["explanation"] = sink(method, item.id, ex)
        except Exception as exc:
            errors.append(_error("save", exc))
        pair_row["seconds_save"] = time.perf_counter() - t
    object_rows = [_object_base(base, k, obj) for k, obj in enumerate(item.objects)]
    for name in cfg.metrics.names:
        _measure(name, model, item, ex, game, cfg.metrics, pair_row, object_rows, errors)
    if errors:
        pair_row["error"] = "; ".join(e[0] for e in errors)
        pair_row["error_type"] = errors[0][1]
    return [pair_row, *object_rows]


def _measure(
    name: str,
    model: DualEncoder,
    item: Item,
    ex: Explanation,
    game: Any,
    mo: MetricOptions,
    pair_row: dict[str, Any],
    object_rows: list[dict[str, Any]],
    errors: list[tuple[str, str]],
) -> None:
    """Run metric ``name`` on one explanation; its values go into the rows, its failure into ``errors``."""
    from dualex.metrics.base import get_metric, measure

    info = get_metric(name)
    stage = f"metric {name}"
    t = time.perf_counter()
    try:
        if "game" in info.needs and isinstance(game, BaseException):
            raise game
        values = measure(info, ex, item, model, game if "game" in info.needs else None, mo.settings(name))
        taken = [k for k in values.pair if k in BASE_COLUMNS or k in pair_row]
        taken += [k for v in values.objects or () if not isinstance(v, BaseException) for k in v if k in BASE_COLUMNS]
        if taken:
            raise InputError(f"it returned the column(s) {', '.join(sorted(set(taken)))}, which the row already has")
        pair_row.update(values.pair)
        for row, v in zip(object_rows, values.objects or (), strict=False):
            if isinstance(v, BaseException):
                row["error"], row["error_type"] = _error(stage, v)
            else:
                row.update(v)
        if values.error is not None:
            errors.append(_error(stage, values.error))
    except Exception as exc:
        _release_memory(exc)
        errors.append(_error(stage, exc))
    pair_row[f"seconds_{name}"] = time.perf_counter() - t


def _object_base(base: dict[str, Any], k: int, obj: Any) -> dict[str, Any]:
    return {
        **base,
        "object": k,
        "level": OBJECT,
        "class_name": obj.class_name,
        "phrase": obj.phrase,
        "span_start": obj.start,
        "span_end": obj.end,
        "boxes": [[float(v) for v in b] for b in obj.boxes],
    }


def _release_memory(exc: BaseException) -> None:
    """After a CUDA out-of-memory error, free the cache so that the next item can run."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
        torch.cuda.empty_cache()
