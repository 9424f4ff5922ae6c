"""Per-item work of an evaluation run: explain one item with each pending method and score it.

The unit of work is one (item, method). `process_item` explains one item with each pending method,
scores the explanations with `dualex.metrics`, and returns result rows in the shard schema of
`dualex.evaluation.store` (one pair row, one row per ground-truth object). It never raises for bad
data: a failure becomes an ``error`` on the rows it concerns, and the run goes on. Engines
(`engine_local`, `engine_ray`) call it and hand the rows to the store; `dualex.evaluation.run` drives them.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dualex.datasets.base import Item
from dualex.errors import InputError
from dualex.evaluation.store import OBJECT, PAIR
from dualex.explanation import Explanation
from dualex.models.base import DualEncoder, Pair

METRIC_GROUPS = ("pointing", "insertion_deletion", "faithfulness", "completeness")
_METRIC_ALIASES = {"pg": "pointing", "pointing_game": "pointing", "pgr": "pointing", "aid": "insertion_deletion",
                   "insertion": "insertion_deletion", "deletion": "insertion_deletion", "faith": "faithfulness",
                   "p_faithfulness": "faithfulness"}  # fmt: skip

# Saves an explanation of (method, item id) and returns its path relative to the run directory.
ExplanationSink = Callable[[str, str, Explanation], str]


@dataclass
class MetricOptions:
    """What to measure and how (part of a run's identity: a resumed run must use the same).

    Attributes:
        metrics: Metric groups: ``pointing`` (pointing games both ways, PGR on grids, span–box
            interaction), ``insertion_deletion`` (curves + AID), ``faithfulness`` (p-faithfulness),
            ``completeness``.
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
    """

    metrics: tuple[str, ...] = METRIC_GROUPS
    faith_p: float = 0.5
    faith_coalitions: int = 1000
    faith_design: str = "product"
    faith_grid: int = 100
    perturbation_order: int | str = "auto"
    text_masking: str = "default"
    image_masking: str = "default"
    save_explanations: bool = True

    def __post_init__(self) -> None:
        self.metrics = tuple(parse_metrics(self.metrics))
        if not 0.0 < self.faith_p < 1.0:
            raise InputError(f"faith_p must lie strictly between 0 and 1, got {self.faith_p}")
        if self.faith_coalitions < 2:
            raise InputError(f"faith_coalitions must be at least 2, got {self.faith_coalitions}")
        if self.faith_design not in ("product", "independent"):
            raise InputError(f"faith_design must be 'product' or 'independent', got {self.faith_design!r}")
        if isinstance(self.faith_grid, bool) or not isinstance(self.faith_grid, int) or self.faith_grid < 2:
            raise InputError(f"faith_grid must be an integer ≥ 2, got {self.faith_grid!r}")
        if self.perturbation_order not in ("auto", 1, 2):
            raise InputError(f"perturbation_order must be 'auto', 1 or 2, got {self.perturbation_order!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["metrics"] = list(self.metrics)
        if self.faith_design == "independent":  # runs from before the option used it and do not name it
            del d["faith_design"], d["faith_grid"]
        return d


def parse_metrics(metrics: str | Sequence[str] | None) -> list[str]:
    """Metric group names (comma-separated string or list; aliases allowed) in canonical order."""
    if metrics is None:
        return list(METRIC_GROUPS)
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    if names == ["all"]:
        return list(METRIC_GROUPS)
    out = []
    for n in names:
        key = _METRIC_ALIASES.get(n.lower().replace("-", "_"), n.lower().replace("-", "_"))
        if key not in METRIC_GROUPS:
            raise InputError(f"unknown metric {n!r}; choose from {', '.join(METRIC_GROUPS)} (or 'all')")
        out.append(key)
    return [m for m in METRIC_GROUPS if m in out]


@dataclass
class WorkConfig:
    """Everything a worker needs to process items (picklable: engines ship it to workers).

    Attributes:
        methods: Method names.
        method_options: Per method, keyword options of the method.
        metrics: `MetricOptions`.
        internal_batch_size: Masked pairs per forward pass in the metrics.
        dataset_kind: Kind of the dataset (a column of every row).
    """

    methods: list[str]
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: MetricOptions = field(default_factory=MetricOptions)
    internal_batch_size: int = 64
    dataset_kind: str = ""


def item_seed(item_id: str) -> int:
    """A stable per-item seed (for the faithfulness coalitions)."""
    return zlib.crc32(item_id.encode("utf-8"))


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


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


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
    game = None
    mo = cfg.metrics
    if {"insertion_deletion", "faithfulness"} & set(mo.metrics):
        from dualex.games.game import DualEncoderGame

        try:  # one cached game per item: methods and metrics share its tower passes
            game = DualEncoderGame(model, pair, internal_batch_size=cfg.internal_batch_size,
                                   text_masking=mo.text_masking, image_masking=mo.image_masking)  # fmt: skip
        except Exception:
            game = None  # each metric then reports its own error
    rows: list[dict[str, Any]] = []
    for method in methods:
        new = _process_method(model, item, pair, method, cfg, sink, game)
        if new and "seconds" in new[0]:
            new[0]["seconds_load"] = load_seconds / len(methods)  # the item's load + prepare, shared
        rows.extend(new)
    return rows


def _process_method(
    model: DualEncoder,
    item: Item,
    pair: Pair,
    method: str,
    cfg: WorkConfig,
    sink: ExplanationSink | None,
    game: Any = None,
) -> list[dict[str, Any]]:
    from dualex.methods import explain_pair

    kind = cfg.dataset_kind
    base = _base_row(item, method, kind)
    t0 = time.perf_counter()
    try:
        ex = explain_pair(model, pair, method, **cfg.method_options.get(method, {}))[0]
    except Exception as exc:
        _release_memory(exc)
        return _pair_error_rows(item, [method], kind, *_error("explain", exc))
    seconds = time.perf_counter() - t0
    pair_row: dict[str, Any] = {
        **base,
        "object": -1,
        "level": PAIR,
        "score": ex.score,
        "cosine": ex.cosine,
        "seconds": seconds,
        "n_tokens": int(ex.players.numel()),
        "n_patches": ex.n_patches,
    }
    errors: list[tuple[str, str]] = []
    if sink is not None and cfg.metrics.save_explanations:
        t = time.perf_counter()
        try:
            pair_row["explanation"] = sink(method, item.id, ex)
        except Exception as exc:
            errors.append(_error("save", exc))
        pair_row["seconds_save"] = time.perf_counter() - t
    mo = cfg.metrics
    if "completeness" in mo.metrics:
        from dualex.metrics import completeness_error

        t = time.perf_counter()
        pair_row.update(completeness_error(ex).as_dict())
        pair_row["seconds_completeness"] = time.perf_counter() - t
    if "insertion_deletion" in mo.metrics:
        from dualex.metrics import insertion_deletion

        t = time.perf_counter()
        try:
            c = insertion_deletion(model, pair, ex, order=mo.perturbation_order,
                                   internal_batch_size=cfg.internal_batch_size, text_masking=mo.text_masking,
                                   image_masking=mo.image_masking, game=game)  # fmt: skip
            pair_row.update(c.as_dict())
            pair_row["insertion_curve"] = [float(v) for v in c.insertion.tolist()]
            pair_row["deletion_curve"] = [float(v) for v in c.deletion.tolist()]
        except Exception as exc:
            _release_memory(exc)
            errors.append(_error("metric insertion_deletion", exc))
        pair_row["seconds_insertion_deletion"] = time.perf_counter() - t
    if "faithfulness" in mo.metrics:
        from dualex.metrics import p_faithfulness

        t = time.perf_counter()
        try:
            n = mo.faith_grid**2 if mo.faith_design == "product" else mo.faith_coalitions
            f = p_faithfulness(model, pair, ex, p=mo.faith_p, n_coalitions=n,
                               seed=item_seed(item.id), design=mo.faith_design,
                               internal_batch_size=cfg.internal_batch_size, text_masking=mo.text_masking,
                               image_masking=mo.image_masking, game=game)  # fmt: skip
            pair_row.update(f.as_dict())
        except Exception as exc:
            _release_memory(exc)
            errors.append(_error("metric faithfulness", exc))
        pair_row["seconds_faithfulness"] = time.perf_counter() - t
    object_rows: list[dict[str, Any]] = []
    if "pointing" in mo.metrics:
        t = time.perf_counter()
        object_rows, pgr, pgr_error = _object_rows(ex, item, base)
        pair_row["pgr"] = pgr
        if pgr_error is not None:
            errors.append(pgr_error)
        pair_row["seconds_pointing"] = time.perf_counter() - t
    else:
        object_rows = [_object_base(base, k, obj) for k, obj in enumerate(item.objects)]
    if errors:
        pair_row["error"] = "; ".join(e[0] for e in errors)
        pair_row["error_type"] = errors[0][1]
    return [pair_row, *object_rows]


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


def _object_rows(
    ex: Explanation, item: Item, base: dict[str, Any]
) -> tuple[list[dict[str, Any]], float | None, tuple[str, str] | None]:
    from dualex.metrics import pointing_game, pointing_game_recognition

    rows = []
    for k, obj in enumerate(item.objects):
        row = _object_base(base, k, obj)
        try:
            if obj.span is None:
                raise InputError("the object is not named in the caption")
            if not obj.boxes:
                raise InputError("the object has no box")
            r = pointing_game(ex, obj.span, list(obj.boxes))
            row.update({key: _finite(v) for key, v in r.as_dict().items()})
        except Exception as exc:
            row["error"], row["error_type"] = _error("metric pointing", exc)
        rows.append(row)
    named = [(k, o.span, o.cell) for k, o in enumerate(item.objects) if o.cell is not None and o.span is not None]
    if not item.regions or not named:
        return rows, None, None
    try:
        res = pointing_game_recognition(ex, [s for _, s, _ in named], [c for _, _, c in named], item.regions)
    except Exception as exc:
        return rows, None, _error("metric pgr", exc)
    for (k, _, _), v in zip(named, res.per_object, strict=True):
        rows[k]["pgr"] = _finite(v)
    return rows, _finite(res.pgr), None


def _release_memory(exc: BaseException) -> None:
    """After a CUDA out-of-memory error, free the cache so that the next item can run."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
        torch.cuda.empty_cache()
