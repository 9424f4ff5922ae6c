"""Class-wise grounding: pointing-game scores per object class, with counts and confidence intervals.

exCLIP reports that the grounding ability of CLIP "varies heavily between object classes" and that
per-class scores expose knowledge gaps of a model and their repair by fine-tuning. `classwise_grounding`
aggregates the object-level rows of a run directory per method × class; `plot_classwise` draws the
sorted bar plot.

Confidence intervals (level ``confidence``, default 95 %):

* **hit rates** (``pg_hit_t2i``, ``pg_hit_i2t``: 0/1 per object): the Wilson score interval of a
  binomial proportion. It stays inside [0, 1] and is sensible for small counts and rates near 0 or 1,
  where the normal (Wald) interval is not.
* **continuous scores** (energies ``pg_energy_*``, ``pgr``, ``span_box``): the percentile bootstrap of
  the mean (``n_boot`` resamples, seeded, so tables are reproducible). Energies are bounded and skewed,
  which a t interval ignores. Classes with a single object get no interval (NaN).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dualex.analysis.common import object_rows, read_rows
from dualex.errors import InputError
from dualex.options import fraction

if TYPE_CHECKING:
    import pandas as pd

HIT_METRICS = ("pg_hit_t2i", "pg_hit_i2t")
SCORE_METRICS = ("pg_energy_t2i", "pg_energy_i2t", "pgr", "span_box")
CLASSWISE_METRICS = HIT_METRICS + SCORE_METRICS


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Args:
        successes: Number of hits (may be fractional when hits were averaged).
        n: Number of trials.
        confidence: Coverage of the interval.

    Returns:
        ``(low, high)`` in [0, 1]; ``(nan, nan)`` for ``n == 0``.
    """
    if n <= 0:
        return math.nan, math.nan
    z = _z(confidence)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(
    values: np.ndarray, confidence: float = 0.95, *, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` ``(n,)``; NaN for fewer than 2 values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // x.size)  # bound memory for large classes
    for lo in range(0, n_boot, chunk):
        hi = min(n_boot, lo + chunk)
        means[lo:hi] = x[rng.integers(0, x.size, size=(hi - lo, x.size))].mean(1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _z(confidence: float) -> float:
    fraction("confidence", confidence)
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2.0))


def interval_kind(metric: str) -> str:
    """``"wilson"`` for hit rates, ``"bootstrap"`` for continuous scores."""
    return "wilson" if metric in HIT_METRICS or metric.startswith("pg_hit") else "bootstrap"


def classwise_grounding(
    run: Any,
    *,
    metric: str = "pg_energy_t2i",
    method: str | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    min_count: int = 1,
) -> pd.DataFrame:
    """Per-class mean of a grounding metric, with counts and confidence intervals.

    Args:
        run: A run directory or a DataFrame from `dualex.evaluation.read_run`.
        metric: An object-level metric column (``pg_energy_t2i``, ``pg_hit_t2i``, ``pg_energy_i2t``,
            ``pg_hit_i2t``, ``pgr``, ``span_box``).
        method: Only this method (default: every method of the run).
        confidence: Coverage of the intervals.
        n_boot: Bootstrap resamples for continuous metrics.
        seed: Seed of the bootstrap.
        min_count: Leave out classes with fewer objects.

    Returns:
        A DataFrame with columns ``method, class_name, n, mean, std, ci_low, ci_high, interval`` and
        ``share`` (the class's share of the method's objects), sorted per method by ``mean`` descending.

    Raises:
        InputError: unknown metric or method, or no object rows carry the metric.
    """
    import pandas as pd

    if metric not in CLASSWISE_METRICS:
        raise InputError(f"unknown class-wise metric {metric!r}; use one of {', '.join(CLASSWISE_METRICS)}")
    _z(confidence)
    df = read_rows(run)
    rows = object_rows(df, method=method, metric=metric)
    rows = rows[rows["class_name"].notna()]
    if rows.empty:
        raise InputError(
            f"no object rows with {metric!r} in this run"
            + (f" for method {method!r}" if method else "")
            + " (was the metric computed? first-order methods have no span maps)"
        )
    kind = interval_kind(metric)
    records = []
    for (meth, cls), g in rows.groupby(["method", "class_name"], sort=True):
        x = g[metric].to_numpy(dtype=np.float64)
        n = int(x.size)
        if n < min_count:
            continue
        if kind == "wilson":
            low, high = wilson_interval(float(x.sum()), n, confidence)
        else:
            low, high = bootstrap_interval(x, confidence, n_boot=n_boot, seed=seed)
        records.append(
            {
                "method": meth,
                "class_name": cls,
                "n": n,
                "mean": float(x.mean()),
                "std": float(x.std(ddof=1)) if n > 1 else math.nan,
                "ci_low": low,
                "ci_high": high,
                "interval": kind,
            }
        )
    table = pd.DataFrame.from_records(
        records, columns=["method", "class_name", "n", "mean", "std", "ci_low", "ci_high", "interval"]
    )
    if table.empty:
        return table.assign(share=pd.Series(dtype=float))
    table["share"] = table["n"] / table.groupby("method")["n"].transform("sum")
    table = table.sort_values(["method", "mean", "n", "class_name"], ascending=[True, False, False, True])
    return table.reset_index(drop=True)


def format_table(table: pd.DataFrame, *, metric: str = "", confidence: float = 0.95) -> str:
    """The class-wise table as aligned plain text (one block per method)."""
    if table.empty:
        return "(no classes)"
    level = f"{round(confidence * 100)} % CI"
    width = max(10, int(table["class_name"].str.len().max()))
    out = []
    for meth, g in table.groupby("method", sort=False):
        out.append(f"method {meth}" + (f"  metric {metric}" if metric else "") + f"  ({g['interval'].iloc[0]} {level})")
        out.append(f"  {'class':<{width}} {'n':>6} {'mean':>8}  {'interval':<19}")
        for r in g.itertuples(index=False):
            ci = "" if math.isnan(r.ci_low) else f"[{r.ci_low:.3f}, {r.ci_high:.3f}]"
            out.append(f"  {r.class_name:<{width}} {r.n:>6d} {r.mean:>8.3f}  {ci:<19}")
    return "\n".join(out)


def plot_classwise(
    table: pd.DataFrame,
    *,
    metric: str = "pg_energy_t2i",
    out: str | Path | None = None,
    title: str | None = None,
) -> Any:
    """Horizontal bar plot of a class-wise table: one panel per method, classes sorted by mean.

    Bars show the class mean, whiskers the confidence interval, and the count is printed beside each
    bar. Classes are ordered by their mean over all methods (best on top), so panels line up.

    Args:
        table: Output of `classwise_grounding`.
        metric: Metric name for the axis label.
        out: If given, the figure is written there (``.png``, ``.svg`` or ``.pdf``).
        title: Figure title.

    Returns:
        The matplotlib ``Figure`` (built on an Agg canvas, without pyplot).
    """
    from matplotlib.figure import Figure

    if table.empty:
        raise InputError("nothing to plot: the class-wise table is empty")
    order = table.groupby("class_name")["mean"].mean().sort_values(ascending=True).index.tolist()
    methods = list(dict.fromkeys(table["method"]))
    height = max(2.5, 0.24 * len(order) + 1.2)
    fig = Figure(figsize=(4.2 * len(methods) + 1.5, height))
    axes = fig.subplots(1, len(methods), sharey=True, squeeze=False)
    ypos = {c: i for i, c in enumerate(order)}
    lo_all = float(np.nanmin(table[["mean", "ci_low"]].to_numpy()))
    hi_all = float(np.nanmax(table[["mean", "ci_high"]].to_numpy()))
    for ax, meth in zip(axes[0], methods, strict=True):
        g = table[table["method"] == meth]
        y = np.array([ypos[c] for c in g["class_name"]])
        mean = g["mean"].to_numpy()
        err = np.vstack([mean - g["ci_low"].to_numpy(), g["ci_high"].to_numpy() - mean])
        err = np.nan_to_num(err, nan=0.0)
        ax.barh(y, mean, color="#4477aa", alpha=0.85, height=0.7)
        ax.errorbar(mean, y, xerr=err, fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
        for yi, m, hi, n in zip(y, mean, g["ci_high"].to_numpy(), g["n"].to_numpy(), strict=True):
            x = hi if np.isfinite(hi) else m
            ax.text(x, yi, f" n={n}", va="center", fontsize=7, color="#444444")
        ax.set_title(str(meth))
        ax.set_xlabel(metric)
        ax.axvline(0.0, color="black", linewidth=0.6)
        span = hi_all - min(lo_all, 0.0)
        ax.set_xlim(min(lo_all, 0.0) - 0.02 * span, hi_all + 0.25 * span)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(order)))
    axes[0][0].set_yticklabels(order, fontsize=8)
    axes[0][0].set_ylim(-0.7, len(order) - 0.3)
    fig.suptitle(title or f"class-wise grounding ({metric})")
    fig.tight_layout()
    if out is not None:
        from dualex.plotting import save_figure

        save_figure(fig, out)
    return fig


__all__ = [
    "CLASSWISE_METRICS",
    "bootstrap_interval",
    "classwise_grounding",
    "format_table",
    "plot_classwise",
    "wilson_interval",
]
