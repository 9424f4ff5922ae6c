"""Summary tables of a run: per method overall, per method × class, pair values by number of named objects.

Means over rows without error, NaN where a metric does not apply. Every numeric measurement column
of the rows is summarised (`dualex.evaluation.store.value_columns`: each metric's columns, plus score,
cosine and seconds), under its own name: a column with values on pair rows (AID, faithfulness,
completeness, time, pooled PGR) is averaged over items, one with values only on object rows (pointing
games) over objects. Metrics may define ratio columns of two means (``pge_over_area`` = mean energy /
mean ``box_area``: how many times the uniform map's energy). Summaries of runs before 0.3 named some
columns differently; `read_summary_table` reads either. Written to ``summary/`` as CSV plus
``summary.md`` (the text `dualex summary` prints).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dualex.evaluation.store import OBJECT, PAIR, RunStore, atomic_write_text, value_columns


def _by_objects_columns() -> list[str]:
    """Pair-level columns that registered metrics ask to break down by number of named objects."""
    from dualex.metrics.base import METRICS

    return [c for e in METRICS.entries() for c in e.value.by_objects]


def _ratio_columns() -> dict[str, tuple[str, str]]:
    """Summary columns that registered metrics define as a ratio of two column means."""
    from dualex.metrics.base import METRICS

    return {name: pair for e in METRICS.entries() for name, pair in e.value.ratios.items()}


#: Summary columns of runs written before dualex 0.3 -> their names now (the rows' names).
RENAMED = {"pg_acc_t2i": "pg_hit_t2i", "pg_acc_i2t": "pg_hit_i2t", "insertion": "insertion_auc",
           "deletion": "deletion_auc", "compl_rel_err": "completeness_rel_error"}  # fmt: skip


def _add_ratios(table: Any) -> Any:
    """Each ratio column a metric defines (``pge_over_area`` = mean ``pg_energy_t2i`` / mean ``box_area``),
    placed right after its denominator; NaN where the denominator is not positive."""
    for name, (num, den) in _ratio_columns().items():
        if num in table and den in table and name not in table:
            d = table[den].astype(float)
            table.insert(list(table.columns).index(den) + 1, name, table[num].astype(float) / d.where(d > 0))
    return table


def read_summary_table(path: str | Path) -> Any:
    """A summary CSV (``summary/overall.csv`` or ``per_class.csv``) of any dualex version, as a DataFrame
    with today's column names (``pg_acc_*``, ``insertion``, ``deletion``, ``compl_rel_err`` of runs before
    0.3 read as ``pg_hit_*``, ``insertion_auc``, ``deletion_auc``, ``completeness_rel_error``)."""
    import pandas as pd

    return pd.read_csv(path).rename(columns=RENAMED)


def tables(df: Any) -> dict[str, Any]:
    """Summary DataFrames from result rows (`dualex.evaluation.read_run`).

    Returns:
        ``overall`` (one row per method: every measurement column, object-level ones first),
        ``per_class`` (method × class, the columns with object-level values), ``by_objects`` (per pair
        column a metric names in ``by_objects``, e.g. ``pgr``: method × number of named objects, where
        measured) and ``errors`` (failed rows).
    """
    import pandas as pd

    out: dict[str, Any] = {}
    if df.empty:
        return {"overall": pd.DataFrame(), "per_class": pd.DataFrame(), "by_objects": {}, "errors": pd.DataFrame()}
    df = df.copy()
    for c in ("error", "class_name"):
        if c not in df:
            df[c] = None
    pair = df[df["level"] == PAIR]
    obj = df[df["level"] == OBJECT]
    values = value_columns(df)
    pair_cols = [c for c in values if pair[c].notna().any()]
    obj_cols = [c for c in values if c not in pair_cols]
    methods = list(dict.fromkeys(pair["method"]))
    rows = []
    for m in methods:
        p, o = pair[pair["method"] == m], obj[obj["method"] == m]
        r: dict[str, Any] = {"method": m, "items": len(p), "errors": int(p["error"].notna().sum()), "objects": len(o)}
        p_ok, o_ok = p[p["error"].isna()], o[o["error"].isna()]
        for col in obj_cols:
            r[col] = float(o_ok[col].astype(float).mean()) if len(o_ok) else math.nan
        for col in pair_cols:
            r[col] = float(p_ok[col].astype(float).mean()) if len(p_ok) else math.nan
        rows.append(r)
    overall = _add_ratios(pd.DataFrame(rows))
    out["overall"] = overall.dropna(axis=1, how="all")
    o_ok = obj[obj["error"].isna()]
    class_cols = [c for c in obj_cols + pair_cols if o_ok[c].notna().any()] if len(o_ok) else []
    if class_cols:
        agg = {c: (c, "mean") for c in class_cols}
        per_class = o_ok.groupby(["class_name", "method"], sort=True).agg(objects=("item_id", "size"), **agg)
        out["per_class"] = _add_ratios(per_class.reset_index()).dropna(axis=1, how="all")
    else:
        out["per_class"] = pd.DataFrame()
    out["by_objects"] = {}
    for col in _by_objects_columns():
        if col in pair and pair[col].notna().any():
            counts = obj.groupby(["item_id", "method"]).size().rename("named")
            pg = pair[pair[col].notna()].join(counts, on=["item_id", "method"])
            out["by_objects"][col] = pg.pivot_table(index="method", columns="named", values=col, aggfunc="mean",
                                                    sort=False)  # fmt: skip
    err = df[df["error"].notna()]
    cols = [c for c in ("item_id", "method", "object", "error_type", "error") if c in err]
    out["errors"] = err[cols].reset_index(drop=True)
    return out


def format_table(df: Any, *, index: bool = False, digits: int = 3) -> str:
    """A Markdown table of a DataFrame (floats rounded to ``digits``)."""
    if df is None or df.empty:
        return "(no rows)"
    d = df.reset_index() if index else df
    cols = [str(c) for c in d.columns]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    body = [[cell(v) for v in row] for row in d.itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(cols)]

    def line(vals: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cols), sep, *(line(r) for r in body)])


def render(t: dict[str, Any], manifest: dict[str, Any] | None = None) -> str:
    """The printed summary: overall table, per-class pointing game, PGR by objects, error count."""
    parts = []
    if manifest:
        ds = manifest.get("dataset", {})
        parts.append(f"run: model {manifest.get('model')}  dataset {ds.get('kind')}:{ds.get('path') or ''}  "
                     f"methods {', '.join(manifest.get('methods', []))}")  # fmt: skip
    parts += ["", "## Overall (per method)", "", format_table(t["overall"])]
    from dualex.metrics.base import column_descriptions

    about = column_descriptions()
    pc = t["per_class"]
    headline = next((c for c in pc.columns if c not in ("class_name", "method", "objects")), None)
    if not pc.empty and headline is not None:  # the first object-level column, one column per method
        wide = pc.pivot_table(index="class_name", columns="method", values=headline, aggfunc="mean", sort=True)
        wide.columns = [str(c) for c in wide.columns]
        parts += ["", f"## Per class: {about.get(headline, headline)}", "", format_table(wide, index=True)]
    for col, k in t["by_objects"].items():
        k = k.copy()
        k.columns = [f"{c} named" for c in k.columns]
        title = about.get(col, col)
        parts += ["", f"## {title[:1].upper()}{title[1:]} by number of named objects", "", format_table(k, index=True)]
    n_err = len(t["errors"])
    parts += ["", f"{n_err} row(s) with errors" + (" (see summary/errors.csv)" if n_err else "")]
    return "\n".join(parts).strip() + "\n"


def write_summary(store: RunStore | str | Path) -> str:
    """Compute the tables of a run, write ``summary/*.csv`` and ``summary/summary.md``; return the text."""
    st = store if isinstance(store, RunStore) else RunStore(store)
    manifest = st.read_manifest()
    t = tables(st.read_rows())
    text = render(t, manifest)
    d = st.summary_dir
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "overall.csv", t["overall"].to_csv(index=False))
    atomic_write_text(d / "per_class.csv", t["per_class"].to_csv(index=False))
    atomic_write_text(d / "errors.csv", t["errors"].to_csv(index=False))
    for col, k in t["by_objects"].items():
        atomic_write_text(d / f"{col}_by_objects.csv", k.to_csv())
    atomic_write_text(d / "summary.md", text)
    return text
