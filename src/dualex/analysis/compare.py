"""Compare evaluation runs unit by unit: paired differences, bootstrap intervals, Wilcoxon tests.

Both papers draw their conclusions from comparisons — FIxLIP compares CLIP with SigLIP-2 on the same
pairs, exCLIP compares grounding before and after in-domain fine-tuning and in- vs out-of-domain. Here
any runs written by ``dualex evaluate`` (``docs/run-format.md``) are compared on the **units they share**:
(item, method, object), where object −1 is the pair-level row. With ``methods`` (one per run) the method
is not part of the key, so two methods of one model (or of two models) can be compared on the same items.

For every metric, every run against the first (the reference), overall and per object class:

* each run's mean over the matched units, and the mean paired difference (run − reference);
* a **paired bootstrap** interval of the mean difference (percentile, ``n_boot`` resamples). Object
  rows of one item share the item's image and caption, so they are resampled **by item** (a cluster
  bootstrap), pair rows one by one. The generator is seeded from ``seed`` and the group's name, so a
  group's interval does not change when other groups or runs are added;
* the **Wilcoxon signed-rank test** of the paired differences (scipy; two-sided; zero differences
  dropped, ``"wilcox"``), which makes no normality assumption about bounded, skewed scores.

Units that cannot be paired are counted with their reason: missing from a run, or failed in a run (its
``error`` is set); units whose metric is null in some run are counted per metric (``n_null``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dualex.analysis.common import read_rows
from dualex.errors import InputError
from dualex.evaluation.store import value_columns
from dualex.options import fraction

if TYPE_CHECKING:
    import pandas as pd

KEY = ("item_id", "method", "object")
TABLE_COLUMNS = (
    "reference", "run", "method", "level", "metric", "class_name", "n", "n_items", "n_null", "mean_reference",
    "mean_run", "difference", "ci_low", "ci_high", "wilcoxon_stat", "wilcoxon_p",
)  # fmt: skip
ALL = "(all)"


@dataclass
class Comparison:
    """The result of `compare`.

    Attributes:
        labels: One label per run (the first is the reference).
        table: One row per (method, level, metric, class, run ≠ reference): ``n`` (paired units),
            ``n_items``, ``n_null``, ``mean_reference``, ``mean_run``, ``difference`` (mean of run −
            reference), ``ci_low``, ``ci_high``, ``wilcoxon_p``, ``wilcoxon_stat``.
        units: The matched units, one row per unit and run (``run`` column), with the metric values.
        counts: ``matched`` units, ``units`` in any run, and left-out counts by reason
            (``"missing in LABEL"``, ``"error in LABEL"``).
        options: Settings (metrics, confidence, n_boot, seed, methods).
    """

    labels: list[str]
    table: pd.DataFrame
    units: pd.DataFrame
    counts: dict[str, int]
    options: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self, *, classes: bool = True) -> str:
        """The comparison as Markdown: counts, then one table per run against the reference."""
        lines = [f"# Comparison: {', '.join(self.labels)} (reference: {self.labels[0]})", ""]
        lines.append(f"Matched units: {self.counts.get('matched', 0)} of {self.counts.get('units', 0)}.")
        for k, v in self.counts.items():
            if k not in ("matched", "units") and v:
                lines.append(f"* left out, {k}: {v}")
        conf = round(100 * float(self.options.get("confidence", 0.95)))
        t = self.table if classes else self.table[self.table["class_name"] == ALL]
        for run in dict.fromkeys(t["run"]):
            g = t[t["run"] == run]
            lines += ["", f"## {run} − {self.labels[0]}", ""]
            head = f"| method | metric | class | n | {self.labels[0]} | {run} | difference | {conf} % interval |"
            lines.append(head + " Wilcoxon p |")
            lines.append("|---|---|---|---|---|---|---|---|---|")
            for r in g.itertuples(index=False):
                lines.append(
                    f"| {r.method} | {r.metric} | {r.class_name} | {r.n} | {_f(r.mean_reference)} | {_f(r.mean_run)} | "
                    f"{_f(r.difference, signed=True)} | [{_f(r.ci_low, signed=True)}, {_f(r.ci_high, signed=True)}] | "
                    f"{_p(r.wilcoxon_p)} |"
                )
        return "\n".join(lines) + "\n"

    def _repr_html_(self) -> str:
        """Notebook display: the paired-differences figure (`plot_comparison`) above the overall rows
        (class ``(all)``) of the table, and the matched-unit counts."""
        import html

        from dualex.plotting import figure_html

        parts = [f"<p><b>Comparison</b>: {html.escape(', '.join(self.labels))} (reference: "
                 f"{html.escape(self.labels[0])}); matched units {self.counts.get('matched', 0)} of "
                 f"{self.counts.get('units', 0)}</p>"]
        if not self.table.empty:
            try:
                parts.append(figure_html(plot_comparison(self), dpi=72))
            except Exception as exc:  # the numbers still show
                parts.append(f"<p>(no figure: {html.escape(f'{type(exc).__name__}: {exc}')})</p>")
            cols = ["run", "method", "metric", "n", "mean_reference", "mean_run", "difference", "ci_low", "ci_high",
                    "wilcoxon_p"]  # fmt: skip
            overall = self.table[self.table["class_name"] == ALL][cols]
            parts.append(overall.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="–"))
        return "\n".join(parts)

    def save(self, out_dir: str | Path, *, figure: bool = True, metric: str | None = None) -> dict[str, Path]:
        """Write ``compare.csv``, ``compare.md``, ``units.csv``, ``counts.json`` and ``compare.png``."""
        import json

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "table": out / "compare.csv",
            "markdown": out / "compare.md",
            "units": out / "units.csv",
            "counts": out / "counts.json",
        }
        self.table.to_csv(paths["table"], index=False)
        paths["markdown"].write_text(self.to_markdown())
        self.units.to_csv(paths["units"], index=False)
        paths["counts"].write_text(json.dumps({"labels": self.labels, "counts": self.counts, **self.options}, indent=2))
        if figure and not self.table.empty:
            paths["figure"] = out / "compare.png"
            plot_comparison(self, metric=metric, out=paths["figure"])
        return paths


def _f(x: float, *, signed: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def _p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "–"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


# ---------------------------------------------------------------------------------------------- statistics
def group_seed(seed: int, *names: Any) -> np.random.Generator:
    """A generator seeded from ``seed`` and a group's names (stable across runs of the program)."""
    h = zlib.crc32("\x1f".join(str(n) for n in names).encode())
    return np.random.default_rng([int(seed), h])


def paired_bootstrap(
    diff: np.ndarray,
    clusters: np.ndarray | None = None,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Percentile interval of the mean paired difference.

    Args:
        diff: ``(n,)`` paired differences.
        clusters: ``(n,)`` cluster labels (e.g. item ids): whole clusters are resampled; None resamples
            units.
        confidence: Interval coverage.
        n_boot: Resamples.
        rng: Seeded generator.

    Returns:
        ``(low, high)``; NaN for fewer than 2 units (or clusters).
    """
    d = np.asarray(diff, dtype=np.float64)
    fraction("confidence", confidence)
    if clusters is None:
        groups = np.arange(d.size)
    else:
        _, groups = np.unique(np.asarray(clusters), return_inverse=True)
    k = int(groups.max()) + 1 if d.size else 0
    if k < 2:
        return math.nan, math.nan
    sums = np.bincount(groups, weights=d, minlength=k)
    sizes = np.bincount(groups, minlength=k).astype(np.float64)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // k)
    for lo in range(0, n_boot, chunk):
        hi = min(n_boot, lo + chunk)
        idx = rng.integers(0, k, size=(hi - lo, k))
        means[lo:hi] = sums[idx].sum(1) / sizes[idx].sum(1)
    a = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [a, 1.0 - a])
    return float(low), float(high)


def wilcoxon_test(diff: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired differences: ``(statistic, p)``.

    All-zero differences give p = 1; fewer than 2 nonzero differences give NaN.
    """
    from scipy.stats import wilcoxon

    d = np.asarray(diff, dtype=np.float64)
    nz = d[d != 0]
    if d.size and nz.size == 0:
        return 0.0, 1.0
    if nz.size < 2:
        return math.nan, math.nan
    res = wilcoxon(nz, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


# ---------------------------------------------------------------------------------------------- compare
def _label(run: Any, i: int) -> str:
    if isinstance(run, (str, Path)):
        p = Path(run)
        try:
            from dualex.evaluation.store import RunStore

            model = RunStore(p).read_manifest().get("model")
        except Exception:  # a label is cosmetic; an unreadable manifest fails in read_rows with its reason
            model = None
        return f"{p.name} ({model})" if model else p.name
    return f"run{i}"


def compare(
    runs: Sequence[Any],
    *,
    labels: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    by_class: bool = True,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare two or more runs on their shared (item, method, object) units.

    Args:
        runs: Run directories (or DataFrames as `dualex.evaluation.read_run` returns them); the first is
            the reference every other run is compared with.
        labels: One name per run (default: directory name and model).
        metrics: Metric columns (default: every numeric measurement column with values in all runs,
            `dualex.evaluation.store.value_columns`).
        methods: One method per run: compare those methods' rows on (item, object), e.g. ``["ij",
            "fixlip"]``; None matches units on the method too.
        by_class: Also compare per ``class_name`` of object rows.
        confidence: Interval coverage.
        n_boot: Bootstrap resamples.
        seed: Seed of the bootstrap.

    Returns:
        A `Comparison`.
    """
    import pandas as pd

    runs = list(runs)
    if len(runs) < 2:
        raise InputError("compare needs at least two runs")
    labs = list(labels) if labels is not None else [_label(r, i) for i, r in enumerate(runs)]
    if len(labs) != len(runs):
        raise InputError(f"got {len(labs)} labels for {len(runs)} runs")
    if len(set(labs)) != len(labs):
        labs = [f"{lab} [{i}]" for i, lab in enumerate(labs)]
    if methods is not None and len(methods) != len(runs):
        raise InputError(f"give one method per run ({len(runs)}), got {len(methods)}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise InputError(f"n_boot must be an integer ≥ 100, got {n_boot!r}")
    frames = []
    for i, run in enumerate(runs):
        df = read_rows(run).copy()
        for col in ("item_id", "method", "object", "level", "error"):
            if col not in df.columns:
                raise InputError(f"run {labs[i]!r} has no column {col!r}; is it a dualex run?")
        if methods is not None:
            if methods[i] not in set(df["method"]):
                have = ", ".join(sorted(set(df["method"])))
                raise InputError(f"run {labs[i]!r} has no method {methods[i]!r}; it has {have}")
            df = df[df["method"] == methods[i]].copy()
            df["method"] = " vs ".join(dict.fromkeys(methods))
        df["object"] = df["object"].astype(int)
        frames.append(df.drop_duplicates(list(KEY), keep="last").set_index(list(KEY)))
    known = metrics or list(dict.fromkeys(c for f in frames for c in value_columns(f)))
    for m in metrics or []:
        missing = [labs[i] for i, f in enumerate(frames) if m not in f.columns or not f[m].notna().any()]
        if missing:
            raise InputError(f"metric {m!r} has no values in run(s) {', '.join(missing)}")
    use = [m for m in known if all(m in f.columns and f[m].notna().any() for f in frames)]
    if not use:
        raise InputError("the runs share no metric with values; pass --metric for one that all runs have")
    # ---- match units
    all_keys = frames[0].index
    for f in frames[1:]:
        all_keys = all_keys.union(f.index)
    counts: dict[str, int] = {"units": len(all_keys)}
    ok = pd.Series(True, index=all_keys)
    for lab, f in zip(labs, frames, strict=True):
        present = all_keys.isin(f.index)
        miss = ok & ~present
        counts[f"missing in {lab}"] = int(miss.sum())
        ok &= present
        err = pd.Series(False, index=all_keys)
        err[present] = f.loc[all_keys[present], "error"].notna().to_numpy()
        bad = ok & err
        counts[f"error in {lab}"] = int(bad.sum())
        ok &= ~err
    matched = all_keys[ok.to_numpy()]
    counts["matched"] = len(matched)
    # ---- long table of matched values
    cols = ["level", "class_name", *use]
    long = []
    for lab, f in zip(labs, frames, strict=True):
        part = f.reindex(columns=[c for c in cols if c in f.columns]).loc[matched].reset_index()
        part.insert(0, "run", lab)
        long.append(part)
    units = pd.concat(long, ignore_index=True)
    ref = frames[0].loc[matched]
    rows = []
    for meth in sorted(set(matched.get_level_values("method"))):
        in_m = matched.get_level_values("method") == meth
        for metric in use:
            for j in range(1, len(frames)):
                a = ref[metric][in_m].astype(float)
                b = frames[j].loc[matched[in_m], metric].astype(float)
                both = a.notna().to_numpy() & b.notna().to_numpy()
                if not both.any():
                    continue
                keys = matched[in_m][both]
                lvl = ref["level"][in_m][both].to_numpy()
                groups: list[tuple[str, str, np.ndarray]] = []
                for lv in sorted(set(lvl)):
                    sel = lvl == lv
                    if sel.any():
                        groups.append((lv, ALL, sel))
                    if by_class and lv == "object" and "class_name" in ref.columns:
                        cls = ref["class_name"][in_m][both].to_numpy()
                        for c in sorted({str(x) for x in cls[sel] if x is not None and x == x}):
                            groups.append((lv, c, sel & (cls.astype(str) == c)))
                n_null = int((~both).sum())
                for lv, cname, sel in groups:
                    x = a.to_numpy()[both][sel]
                    y = b.to_numpy()[both][sel]
                    d = y - x
                    items = keys.get_level_values("item_id").to_numpy()[sel]
                    rng = group_seed(seed, meth, metric, lv, cname, labs[j])
                    lo, hi = paired_bootstrap(
                        d, items if lv == "object" else None, confidence=confidence, n_boot=n_boot, rng=rng
                    )
                    stat, p = wilcoxon_test(d)
                    rows.append(
                        {
                            "reference": labs[0],
                            "run": labs[j],
                            "method": meth,
                            "level": lv,
                            "metric": metric,
                            "class_name": cname,
                            "n": int(d.size),
                            "n_items": len(set(items)),
                            "n_null": n_null if cname == ALL else 0,
                            "mean_reference": float(x.mean()),
                            "mean_run": float(y.mean()),
                            "difference": float(d.mean()),
                            "ci_low": lo,
                            "ci_high": hi,
                            "wilcoxon_stat": stat,
                            "wilcoxon_p": p,
                        }
                    )
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    options = {
        "metrics": use,
        "confidence": confidence,
        "n_boot": n_boot,
        "seed": seed,
        "methods": list(methods) if methods is not None else None,
    }
    return Comparison(labs, table, units, counts, options)


# ---------------------------------------------------------------------------------------------- figure
def plot_comparison(
    comp: Comparison,
    *,
    metric: str | None = None,
    out: str | Path | None = None,
    title: str | None = None,
) -> Any:
    """Paired differences per class with their intervals: one panel per method × compared run.

    Args:
        comp: A `Comparison`.
        metric: Which metric (default: the first object-level metric with classes, else the first).
        out: If given, the figure is written there.
        title: Figure title.

    Returns:
        The matplotlib ``Figure`` (Agg canvas, no pyplot).
    """
    from matplotlib.figure import Figure

    t = comp.table
    if t.empty:
        raise InputError("nothing to plot: the comparison table is empty")
    if metric is None:
        with_classes = t[t["class_name"] != ALL]["metric"]
        metric = str(with_classes.iloc[0]) if len(with_classes) else str(t["metric"].iloc[0])
    g = t[t["metric"] == metric]
    if g.empty:
        raise InputError(f"metric {metric!r} is not in the comparison; it has {', '.join(dict.fromkeys(t['metric']))}")
    panels = list(dict.fromkeys(zip(g["method"], g["run"], strict=True)))
    classes = [c for c in dict.fromkeys(g["class_name"]) if c != ALL]
    order = [ALL, *sorted(classes, key=lambda c: float(g[g["class_name"] == c]["difference"].mean()))]
    height = max(2.4, 0.28 * len(order) + 1.3)
    fig = Figure(figsize=(4.6 * len(panels) + 1.2, height))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)
    ypos = {c: len(order) - 1 - i for i, c in enumerate(order)}
    for ax, (meth, run) in zip(axes[0], panels, strict=True):
        p = g[(g["method"] == meth) & (g["run"] == run)]
        for r in p.itertuples(index=False):
            y = ypos[r.class_name]
            sig = np.isfinite(r.ci_low) and (r.ci_low > 0 or r.ci_high < 0)
            colour = "#bb3333" if sig and r.difference > 0 else "#3355bb" if sig else "#666666"
            if np.isfinite(r.ci_low):
                ax.plot([r.ci_low, r.ci_high], [y, y], color=colour, linewidth=1.6)
            ax.plot([r.difference], [y], "o", color=colour, markersize=5 if r.class_name == ALL else 4)
            ax.text(1.01, y, f"n={r.n}", transform=ax.get_yaxis_transform(), va="center", fontsize=7, color="#444")
        ax.axvline(0.0, color="black", linewidth=0.7)
        ax.set_title(f"{run} − {comp.labels[0]}\n{meth}", fontsize=9)
        ax.set_xlabel(f"Δ {metric}")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks([ypos[c] for c in order])
    axes[0][0].set_yticklabels(order, fontsize=8)
    conf = round(100 * float(comp.options.get("confidence", 0.95)))
    fig.suptitle(title or f"paired differences per class, {conf} % paired-bootstrap intervals", fontsize=10)
    fig.tight_layout()
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=130)
    return fig


__all__ = ["Comparison", "compare", "group_seed", "paired_bootstrap", "plot_comparison", "wilcoxon_test"]
