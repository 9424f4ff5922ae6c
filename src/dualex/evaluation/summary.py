"""Summary tables of a run: per method overall, per method × class, PGR by number of named objects.

Means over rows without error, NaN where a metric does not apply. Pair-level metrics (AID, faithfulness,
completeness, time, pooled PGR) are averaged over items; object-level metrics (pointing games) over
objects. Beside the span → box energy stand ``box_area`` (mean share of the grid inside the boxes: the
energy of a uniform map) and ``pge_over_area`` (mean energy / mean box area: how many times the uniform
map's energy). Hit rates are ``pg_hit_*`` like the rows (``pg_acc_*`` before 0.3; `read_summary_table`
reads either). Written to ``summary/`` as CSV plus ``summary.md`` (the text `dualex summary` prints).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dualex.evaluation.store import OBJECT, PAIR, RunStore, atomic_write_text

# (column in the table, source column, level)
OVERALL = (
    ("pg_energy_t2i", "pg_energy_t2i", OBJECT),
    ("box_area", "box_area", OBJECT),
    ("pg_hit_t2i", "pg_hit_t2i", OBJECT),
    ("pg_energy_i2t", "pg_energy_i2t", OBJECT),
    ("pg_hit_i2t", "pg_hit_i2t", OBJECT),
    ("pgr", "pgr", PAIR),
    ("aid", "aid", PAIR),
    ("insertion", "insertion_auc", PAIR),
    ("deletion", "deletion_auc", PAIR),
    ("faith_spearman", "faith_spearman", PAIR),
    ("faith_r2", "faith_r2", PAIR),
    ("compl_rel_err", "completeness_rel_error", PAIR),
    ("seconds", "seconds", PAIR),
)
PER_CLASS = (
    ("pg_energy_t2i", "pg_energy_t2i"),
    ("box_area", "box_area"),
    ("pg_hit_t2i", "pg_hit_t2i"),
    ("pg_energy_i2t", "pg_energy_i2t"),
    ("pg_hit_i2t", "pg_hit_i2t"),
    ("span_box", "span_box"),
)
RENAMED = {"pg_acc_t2i": "pg_hit_t2i", "pg_acc_i2t": "pg_hit_i2t"}
"""Summary columns of runs written before dualex 0.3 -> their names now (the rows' names)."""


def _add_lift(table: Any) -> Any:
    """``pge_over_area`` = mean ``pg_energy_t2i`` / mean ``box_area`` (how many times a uniform map's energy),
    placed right after ``box_area``; NaN where either is missing."""
    if "pg_energy_t2i" not in table or "box_area" not in table:
        return table
    area = table["box_area"].astype(float)
    lift = table["pg_energy_t2i"].astype(float) / area.where(area > 0)
    table.insert(list(table.columns).index("box_area") + 1, "pge_over_area", lift)
    return table


def read_summary_table(path: str | Path) -> Any:
    """A summary CSV (``summary/overall.csv`` or ``per_class.csv``) of any dualex version, as a DataFrame
    with today's column names (``pg_acc_*`` of runs before 0.3 read as ``pg_hit_*``)."""
    import pandas as pd

    return pd.read_csv(path).rename(columns=RENAMED)


def tables(df: Any) -> dict[str, Any]:
    """Summary DataFrames from result rows (`dualex.evaluation.read_run`).

    Returns:
        ``overall`` (one row per method), ``per_class`` (method × class, object metrics), ``pgr_by_k``
        (method × number of named objects, when PGR was measured) and ``errors`` (failed rows).
    """
    import pandas as pd

    out: dict[str, Any] = {}
    if df.empty:
        return {"overall": pd.DataFrame(), "per_class": pd.DataFrame(), "pgr_by_k": pd.DataFrame(),
                "errors": pd.DataFrame()}  # fmt: skip
    df = df.copy()
    for c in ("error", "class_name"):
        if c not in df:
            df[c] = None
    pair = df[df["level"] == PAIR]
    obj = df[df["level"] == OBJECT]
    methods = list(dict.fromkeys(pair["method"]))
    rows = []
    for m in methods:
        p, o = pair[pair["method"] == m], obj[obj["method"] == m]
        r: dict[str, Any] = {"method": m, "items": len(p), "errors": int(p["error"].notna().sum()), "objects": len(o)}
        for name, src, level in OVERALL:
            part = o if level == OBJECT else p
            part = part[part["error"].isna()]
            r[name] = float(part[src].astype(float).mean()) if src in part and len(part) else math.nan
        rows.append(r)
    overall = _add_lift(pd.DataFrame(rows))
    out["overall"] = overall.dropna(axis=1, how="all")
    o_ok = obj[obj["error"].isna()]
    if len(o_ok):
        agg = {name: (src, "mean") for name, src in PER_CLASS if src in o_ok}
        per_class = o_ok.groupby(["class_name", "method"], sort=True).agg(objects=("item_id", "size"), **agg)
        out["per_class"] = _add_lift(per_class.reset_index()).dropna(axis=1, how="all")
    else:
        out["per_class"] = pd.DataFrame()
    if "pgr" in pair and pair["pgr"].notna().any():
        counts = obj.groupby(["item_id", "method"]).size().rename("named")
        pg = pair[pair["pgr"].notna()].join(counts, on=["item_id", "method"])
        out["pgr_by_k"] = pg.pivot_table(index="method", columns="named", values="pgr", aggfunc="mean", sort=False)
    else:
        out["pgr_by_k"] = pd.DataFrame()
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
    pc = t["per_class"]
    if not pc.empty and "pg_energy_t2i" in pc:
        wide = pc.pivot_table(index="class_name", columns="method", values="pg_energy_t2i", aggfunc="mean", sort=True)
        wide.columns = [str(c) for c in wide.columns]
        parts += ["", "## Per class: pointing game energy, caption span → image box", "",
                  format_table(wide, index=True)]  # fmt: skip
    if not t["pgr_by_k"].empty:
        k = t["pgr_by_k"].copy()
        k.columns = [f"{c} named" for c in k.columns]
        parts += ["", "## Pointing game recognition by number of named objects", "", format_table(k, index=True)]
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
    if not t["pgr_by_k"].empty:
        atomic_write_text(d / "pgr_by_objects.csv", t["pgr_by_k"].to_csv())
    atomic_write_text(d / "summary.md", text)
    return text
