"""Helpers shared by the analyses: reading object rows of a run, spans and boxes of a stored row.

A run directory (``docs/run-format.md``) holds one row per item × method × object. The analyses work on
the object-level rows (``level == "object"``); these helpers select them, turn the Parquet cell values
back into plain Python (boxes arrive as nested numpy arrays) and resolve a row's character span to the
token positions of its stored `Explanation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from dualex.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from dualex.explanation import Explanation


def read_rows(run: Any, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of a run: ``run`` is a run directory or an already read DataFrame (returned as is).

    Every column a registered metric describes is present (null where no shard holds it), so an
    analysis can ask for ``pg_energy_t2i`` of a run that did not measure it and find no values.
    """
    import pandas as pd

    if isinstance(run, pd.DataFrame):
        return run
    from dualex.evaluation.store import read_run
    from dualex.metrics.base import column_descriptions

    if not Path(run).exists():
        raise InputError(f"run directory not found: {run}")
    df = read_run(run, columns)
    missing = [c for c in column_descriptions() if c not in df.columns and (columns is None or c in columns)]
    return df.assign(**dict.fromkeys(missing, float("nan"))) if missing else df


def object_rows(df: pd.DataFrame, *, method: str | None = None, metric: str | None = None) -> pd.DataFrame:
    """Object-level rows without an error, optionally of one method and with ``metric`` not null.

    A metric column that no shard of the run has (shards hold the columns their metrics wrote) gives
    no rows.
    """
    if df.empty:
        return df
    keep = (df["level"] == "object") & df["error"].isna()
    if method is not None:
        if method not in set(df["method"]):
            raise InputError(f"method {method!r} is not in this run; it has {', '.join(sorted(set(df['method'])))}")
        keep &= df["method"] == method
    if metric is not None:
        if metric not in df.columns:  # no shard of the run holds a value of it
            return df[keep & False]
        keep &= df[metric].notna()
    return df[keep]


def as_boxes(value: Any) -> list[tuple[float, float, float, float]]:
    """A row's ``boxes`` cell (list or numpy array of ``[x0, y0, x1, y1]``) as a list of float tuples."""
    if value is None:
        return []
    out = []
    for b in list(value):
        coords = [float(v) for v in list(b)]
        if len(coords) != 4:
            raise InputError(f"a box is [x0, y0, x1, y1]; got {coords}")
        out.append((coords[0], coords[1], coords[2], coords[3]))
    return out


def char_span_positions(ex: Explanation, start: int, end: int) -> Tensor:
    """Token positions ``(k,)`` of ``ex`` whose characters overlap ``[start, end)`` of its caption.

    Raises:
        InputError: no token overlaps the span (e.g. it was truncated away by the tokenizer).
    """
    pos = [
        i
        for i, o in enumerate(ex.token_offsets)
        if o is not None and not bool(ex.special[i]) and o[0] < end and o[1] > start
    ]
    if not pos:
        raise InputError(f"characters {start}..{end} of {ex.text!r} match no caption token (truncated?)")
    return torch.tensor(pos, dtype=torch.long)


def row_span_positions(ex: Explanation, row: Any) -> Tensor:
    """Token positions of an object row's phrase: its character span if stored, else its words."""
    start, end = row.get("span_start"), row.get("span_end")
    if start is not None and end is not None and start == start and end == end:  # not NaN
        return char_span_positions(ex, int(start), int(end))
    phrase = row.get("phrase")
    if not phrase:
        raise InputError(f"object row ({row.get('item_id')}, object {row.get('object')}) has no span or phrase")
    return ex.span(str(phrase))


def row_patch_mask(ex: Explanation, row: Any) -> Tensor:
    """Flat ``(P,)`` bool mask of the patches covered by an object row's boxes (their union)."""
    boxes = as_boxes(row.get("boxes"))
    if not boxes:
        raise InputError(f"object row ({row.get('item_id')}, object {row.get('object')}) has no boxes")
    return ex.patches(boxes).flatten()


def span_box_sum(ex: Explanation, positions: Tensor, patches: Tensor) -> float:
    """``Σ cross[positions, patches]``: the interaction of a token set with a patch set (the run's units)."""
    if ex.cross is None:
        raise InputError(f"method {ex.method!r} gives no token × patch interactions")
    return float(ex.cross[positions][:, patches].double().sum())


def first_line(exc: BaseException) -> str:
    """One-line description of an exception, for skip reasons."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
