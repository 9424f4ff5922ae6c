"""Failure modes: what the objects whose grounding fails have in common.

exCLIP names "systematic failure categories including object coverage, unusual scenes and correlated
contexts", reportedly found by clustering error patterns; the features and the algorithm are not
published (exCLIP, arXiv:2408.14153). dualex's version:

1. For every object row of a run (one method), compute features from the stored explanation and the
   run's annotations (`FEATURES`): box size, how much of the box the span map covers, where its
   positive mass lies, how spread it is, the number of objects, class rarity and rarity of the class
   co-occurrences.
2. A row *fails* when its grounding metric is below a threshold (default: the span → box pointing game
   missed, ``pg_hit_t2i < 0.5``).
3. Standardise the features with the mean and standard deviation over **all** objects (so a cluster's
   z-scores say how its failures differ from a typical object), cluster the failures with k-means
   (scikit-learn; k by the best silhouette unless given), and label every cluster by its dominant
   features, e.g. "small objects / low box coverage", "many objects", "rare class co-occurrence",
   "attribution on other objects" (correlated context), "diffuse attribution".
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from dualex.analysis.common import first_line, read_rows, row_patch_mask, row_span_positions
from dualex.errors import DualexError, InputError
from dualex.progress import bar

if TYPE_CHECKING:
    import pandas as pd

FEATURES = (
    "box_fraction",  # share of the image's patches inside the object's boxes
    "box_coverage",  # share of the box's patches where the span map is positive
    "energy_in_box",  # share of the span map's positive mass inside the box (pointing-game energy)
    "other_objects_mass",  # share of the positive mass on the other objects' boxes (outside this box)
    "spread",  # normalised entropy of the positive mass: 0 = one patch, 1 = uniform
    "peak_distance",  # distance from the map's peak to the nearest box patch / grid diagonal
    "n_objects",  # ground-truth objects in the caption
    "class_rarity",  # -log share of this class among all objects of the run
    "cooc_rarity",  # mean over the item's other classes c' of -log P(c' present | this class present)
)

# (feature, direction) -> (phrase for labels, failure category); direction +1 = above average.
DESCRIPTIONS: dict[tuple[str, int], tuple[str, str]] = {
    ("box_fraction", -1): ("small objects", "object coverage"),
    ("box_fraction", 1): ("large objects", "object coverage"),
    ("box_coverage", -1): ("low box coverage", "object coverage"),
    ("energy_in_box", -1): ("attribution outside the box", "localisation"),
    ("other_objects_mass", 1): ("attribution on other objects", "correlated context"),
    ("spread", 1): ("diffuse attribution", "diffuse attribution"),
    ("spread", -1): ("focused attribution", "localisation"),
    ("peak_distance", 1): ("peak far from the object", "localisation"),
    ("n_objects", 1): ("many objects", "cluttered scene"),
    ("n_objects", -1): ("few objects", "cluttered scene"),
    ("class_rarity", 1): ("rare classes", "unusual scene"),
    ("cooc_rarity", 1): ("rare class co-occurrence", "unusual scene"),
}
DOMINANT_Z = 0.5  # a cluster mean this many standard deviations from the average object is "dominant"
# Features that restate the failure itself; labels use them only when no other feature stands out.
SYMPTOMS = ("energy_in_box", "peak_distance")


# ---------------------------------------------------------------------------------------------------- features
def map_features(span_map: Tensor, own: Tensor, other: Tensor) -> dict[str, float]:
    """Features of one object's span map.

    Args:
        span_map: ``(rows, cols)`` image map of the object's caption span (``Σ cross[span]``).
        own: ``(rows, cols)`` bool, the object's box patches.
        other: ``(rows, cols)`` bool, patches of the item's other objects.

    Returns:
        ``box_fraction, box_coverage, energy_in_box, other_objects_mass, spread, peak_distance`` and
        ``hit`` (1.0 if the map's peak lies in the box).
    """
    m = span_map.double().flatten()
    own_f, other_f = own.flatten().bool(), other.flatten().bool() & ~own.flatten().bool()
    P = m.numel()
    pos = m.clamp(min=0)
    total = float(pos.sum())
    rows, cols = span_map.shape
    peak = int(m.argmax())
    if total > 0:
        q = pos / total
        nz = q[q > 0]
        spread = float(-(nz * nz.log()).sum() / math.log(P)) if P > 1 else 0.0
        energy = float(q[own_f].sum())
        other_mass = float(q[other_f].sum())
    else:  # nothing positive: no focus anywhere
        spread, energy, other_mass = 1.0, 0.0, 0.0
    r, c = divmod(peak, cols)
    br, bc = torch.nonzero(own.reshape(rows, cols), as_tuple=True)
    if br.numel():
        dist = float(torch.sqrt((br.double() - r) ** 2 + (bc.double() - c) ** 2).min())
    else:
        dist = math.hypot(rows, cols)
    n_own = int(own_f.sum())
    return {
        "box_fraction": n_own / P,
        "box_coverage": float((m[own_f] > 0).double().mean()) if n_own else 0.0,
        "energy_in_box": energy,
        "other_objects_mass": other_mass,
        "spread": spread,
        "peak_distance": dist / math.hypot(rows, cols),
        "hit": float(bool(own_f[peak])),
    }


def class_statistics(objects: pd.DataFrame) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """Class rarity and co-occurrence rarity from a run's object rows (one method).

    Returns:
        ``rarity[c] = -log(objects of class c / all objects)`` and
        ``cooc[(c, d)] = -log((items with c and d + 0.5) / (items with c + 1))`` for c ≠ d.
    """
    counts = Counter(objects["class_name"].dropna())
    n = sum(counts.values())
    rarity = {c: -math.log(k / n) for c, k in counts.items()}
    per_item = objects.dropna(subset=["class_name"]).groupby("item_id")["class_name"].agg(lambda s: sorted(set(s)))
    with_c: Counter[str] = Counter()
    both: Counter[tuple[str, str]] = Counter()
    for classes in per_item:
        for c in classes:
            with_c[c] += 1
            for d in classes:
                if d != c:
                    both[(c, d)] += 1
    cooc = {}
    for c in with_c:
        for d in with_c:
            if c != d:
                cooc[(c, d)] = -math.log((both[(c, d)] + 0.5) / (with_c[c] + 1.0))
    return rarity, cooc


def object_features(
    run: Any,
    *,
    method: str,
    run_dir: str | Path | None = None,
    progress: bool | None = None,
) -> tuple[pd.DataFrame, list[tuple[str, int, str]]]:
    """`FEATURES` (plus ``hit``) for every object row of one method whose explanation can be read.

    Returns:
        The object rows (``item_id, object, class_name, phrase``, the run's metric columns) with the
        feature columns added, and ``(item_id, object, reason)`` of rows that were left out.
    """
    import pandas as pd

    from dualex.evaluation.store import load_explanation

    df = read_rows(run)
    root = run_dir if run_dir is not None else (None if isinstance(run, pd.DataFrame) else run)
    if root is None:
        raise InputError("pass run_dir= with a DataFrame: the explanation files are read from the run directory")
    if method not in set(df["method"]):
        raise InputError(f"method {method!r} is not in this run; it has {', '.join(sorted(set(df['method'])))}")
    df = df[df["method"] == method]
    objects = df[df["level"] == "object"]
    good = objects[objects["error"].isna()]
    if good.empty:
        raise InputError(f"method {method!r} has no object rows without errors in this run")
    rarity, cooc = class_statistics(objects)
    per_item = objects.groupby("item_id").size()
    files = {
        r.item_id: r.explanation for r in df[(df["level"] == "pair") & df["explanation"].notna()].itertuples()
    }
    records: list[dict[str, Any]] = []
    skipped: list[tuple[str, int, str]] = []
    groups = list(good.groupby("item_id", sort=True))
    with bar(len(groups), f"features ({method})", progress) as pbar:
        for item, g in groups:
            pbar.update(1)
            rel = files.get(item) or next(iter(g["explanation"].dropna()), None)
            if not rel:
                skipped.extend((item, int(o), "no explanation file") for o in g["object"])
                continue
            try:
                ex = load_explanation(root, {"explanation": rel, "item_id": item, "method": method})
            except DualexError as exc:
                skipped.extend((item, int(o), first_line(exc)) for o in g["object"])
                continue
            if ex.cross is None:
                raise InputError(
                    f"method {method!r} gives no token × patch interactions, so no span maps to analyse"
                )
            rows = [r.to_dict() for _, r in g.sort_values("object").iterrows()]
            masks = []
            for r in rows:
                try:
                    masks.append(row_patch_mask(ex, r))
                except DualexError:
                    masks.append(torch.zeros(ex.n_patches, dtype=torch.bool))
            classes = [r.get("class_name") for r in rows]
            n_objects = int(per_item[item])
            for i, r in enumerate(rows):
                try:
                    span = row_span_positions(ex, r)
                    if not bool(masks[i].any()):
                        raise InputError("object has no usable box")
                except DualexError as exc:
                    skipped.append((item, int(r["object"]), first_line(exc)))
                    continue
                other = torch.zeros_like(masks[i])
                for k, mk in enumerate(masks):
                    if k != i:
                        other |= mk
                feats = map_features(ex.cross[span].sum(0).reshape(ex.grid), masks[i].reshape(ex.grid),
                                     other.reshape(ex.grid))
                c = classes[i]
                others = sorted({d for d in classes if d is not None and d != c})
                feats["n_objects"] = float(n_objects)
                feats["class_rarity"] = rarity.get(c, 0.0)
                feats["cooc_rarity"] = float(np.mean([cooc[(c, d)] for d in others])) if others and c else 0.0
                records.append({**{k: r.get(k) for k in _KEEP if k in r}, **feats})
    return pd.DataFrame.from_records(records), skipped


_KEEP = ("item_id", "object", "class_name", "phrase", "caption", "image_id", "pg_hit_t2i", "pg_energy_t2i")


# ---------------------------------------------------------------------------------------------------- clustering
@dataclass
class FailureCluster:
    """One group of failures.

    Attributes:
        cluster: Index (largest cluster first).
        size: Number of failed objects.
        share: Share of all failures.
        label: Plain-language summary of the dominant features.
        category: Failure category of the strongest dominant feature (``object coverage``, ``unusual
            scene``, ``correlated context``, ``cluttered scene``, ``diffuse attribution``, ``localisation``)
            or ``"mixed"``.
        dominant: ``(feature, z)`` of the dominant features, strongest first.
        means: Raw feature means of the cluster.
        z: Feature means in standard deviations from the average object.
        classes: Most frequent classes ``(class, count)``.
        examples: Up to ``n_examples`` failures nearest the cluster centre: item id, object, class, phrase.
    """

    cluster: int
    size: int
    share: float
    label: str
    category: str
    dominant: list[tuple[str, float]]
    means: dict[str, float]
    z: dict[str, float]
    classes: list[tuple[str, int]]
    examples: list[dict[str, Any]]


@dataclass
class FailureModes:
    """Outcome of `failure_modes` for one method of a run."""

    method: str
    criterion: str
    n_objects: int
    n_failed: int
    k: int
    silhouette: dict[int, float]
    clusters: list[FailureCluster]
    feature_mean: dict[str, float]
    feature_std: dict[str, float]
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    failures: Any = None  # DataFrame of the failed rows with features and ``cluster``

    def to_json_dict(self) -> dict[str, Any]:
        """The result as plain JSON data (clusters, features, counts)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("failures", "clusters", "skipped")}
        d["silhouette"] = {str(k): v for k, v in self.silhouette.items()}
        d["clusters"] = [asdict(c) for c in self.clusters]
        d["features"] = list(FEATURES)
        d["n_skipped"] = len(self.skipped)
        d["skipped"] = [list(s) for s in self.skipped[:100]]
        out: dict[str, Any] = _finite(d)
        return out

    def to_markdown(self) -> str:
        """The result as a Markdown report."""
        lines = [
            f"## Failure modes: method `{self.method}`",
            "",
            f"{self.n_failed} of {self.n_objects} objects fail ({self.criterion}); "
            f"{self.k} cluster(s)"
            + (f", silhouette {self.silhouette[self.k]:.2f}" if self.k in self.silhouette else "")
            + ".",
            "",
            "| cluster | size | share | label | category | top classes |",
            "|---|---|---|---|---|---|",
        ]
        for c in self.clusters:
            top = ", ".join(f"{n} ({k})" for n, k in c.classes[:3])
            lines.append(f"| {c.cluster} | {c.size} | {c.share:.0%} | {c.label} | {c.category} | {top} |")
        lines += ["", "Feature means per cluster (z: standard deviations from the average object):", ""]
        lines.append("| feature | all objects | " + " | ".join(f"cluster {c.cluster}" for c in self.clusters) + " |")
        lines.append("|---|---|" + "---|" * len(self.clusters))
        for f in FEATURES:
            cells = [f"{c.means[f]:.3g} (z {c.z[f]:+.1f})" for c in self.clusters]
            lines.append(f"| {f} | {self.feature_mean[f]:.3g} | " + " | ".join(cells) + " |")
        for c in self.clusters:
            lines += ["", f"### Cluster {c.cluster}: {c.label}", ""]
            for e in c.examples:
                lines.append(f"* `{e['item_id']}` object {e['object']} ({e['class_name']}): \"{e['phrase']}\"")
        if self.skipped:
            lines += ["", f"{len(self.skipped)} object row(s) skipped, e.g. {self.skipped[0][2]}."]
        return "\n".join(lines) + "\n"


def label_cluster(
    z: dict[str, float], *, threshold: float = DOMINANT_Z, top: int = 2
) -> tuple[str, str, list[tuple[str, float]]]:
    """Label, category and dominant features from a cluster's mean z-scores (pure function).

    Dominant features are those at least ``threshold`` standard deviations from the average object in a
    direction `DESCRIPTIONS` names. Features that describe a possible cause (size, coverage, clutter,
    rarity, context, spread) come first, strongest first; the `SYMPTOMS` (energy outside the box, peak
    far away), which every failure shares to some degree, follow. The label joins the first ``top``.
    """
    dom = []
    for f, v in z.items():
        d = 1 if v > 0 else -1
        if abs(v) >= threshold and (f, d) in DESCRIPTIONS:
            dom.append((f, float(v)))
    dom.sort(key=lambda t: (t[0] in SYMPTOMS, -abs(t[1])))
    if not dom:
        return "typical failures (no dominant feature)", "mixed", []
    phrases = [DESCRIPTIONS[(f, 1 if v > 0 else -1)][0] for f, v in dom[:top]]
    category = DESCRIPTIONS[(dom[0][0], 1 if dom[0][1] > 0 else -1)][1]
    return " / ".join(phrases), category, dom


def choose_k(
    X: np.ndarray, k: int | str = "auto", *, k_max: int = 8, seed: int = 0
) -> tuple[int, dict[int, float], Any]:
    """k-means on standardised features ``X`` ``(n, F)``; ``k="auto"`` takes the best silhouette.

    Returns:
        ``(k, silhouette per tried k, labels (n,))``.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = X.shape[0]
    distinct = int(np.unique(np.round(X, 9), axis=0).shape[0])
    if k != "auto":
        k = int(k)
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        k = min(k, distinct)
        if k == 1:
            return 1, {}, np.zeros(n, dtype=int)
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(X)
        return k, {k: float(silhouette_score(X, km.labels_))}, km.labels_
    candidates = range(2, min(k_max, distinct, n - 1) + 1)  # silhouette needs 2 <= k <= n - 1
    scores: dict[int, float] = {}
    fits = {}
    for kk in candidates:
        km = KMeans(n_clusters=kk, n_init=10, random_state=seed).fit(X)
        if len(set(km.labels_)) < 2:
            continue
        scores[kk] = float(silhouette_score(X, km.labels_))
        fits[kk] = km.labels_
    if not scores:
        return 1, {}, np.zeros(n, dtype=int)
    best = max(scores, key=lambda kk: (scores[kk], -kk))
    return best, scores, fits[best]


def failure_modes(
    run: Any,
    *,
    method: str | None = None,
    metric: str = "pg_hit_t2i",
    threshold: float = 0.5,
    k: int | str = "auto",
    k_max: int = 8,
    n_examples: int = 5,
    seed: int = 0,
    run_dir: str | Path | None = None,
    progress: bool | None = None,
) -> FailureModes:
    """Cluster the objects whose grounding fails and describe each cluster.

    Args:
        run: A run directory (or a DataFrame read from one, with ``run_dir``).
        method: The method to analyse (default: the run's only method, or the first one with
            explanations that have token × patch interactions).
        metric: Grounding metric that decides failure (``pg_hit_t2i``, ``pg_energy_t2i``, ...). If the
            run did not compute it, ``pg_hit_t2i``/``pg_energy_t2i`` are recomputed from the explanations.
        threshold: A row fails when ``metric < threshold``.
        k: Number of clusters, or ``"auto"`` (best silhouette among 2..k_max).
        k_max: Largest k tried by ``"auto"``.
        n_examples: Examples listed per cluster.
        seed: Seed of k-means.
        run_dir: Run directory when ``run`` is a DataFrame.
        progress: Progress bar (None: only on a terminal).

    Returns:
        A `FailureModes`.

    Raises:
        InputError: the method or metric is unknown, or no object fails.
    """
    df = read_rows(run)
    if df.empty:
        raise InputError("the run has no rows")
    method = method or _default_method(df)
    root = run_dir if run_dir is not None else (None if _is_frame(run) else run)
    feats, skipped = object_features(df, method=method, run_dir=root, progress=progress)
    if feats.empty:
        why = f" (e.g. {skipped[0][2]})" if skipped else ""
        raise InputError(f"no object of method {method!r} could be analysed{why}")
    if metric not in feats.columns or feats[metric].isna().all():
        fallback = {"pg_hit_t2i": "hit", "pg_energy_t2i": "energy_in_box"}
        if metric not in fallback:
            raise InputError(f"the run has no values of {metric!r} for method {method!r}")
        feats[metric] = feats[fallback[metric]]
    values = feats[metric].astype(float)
    failed_mask = (values < threshold).to_numpy()
    X_all = feats[list(FEATURES)].to_numpy(dtype=np.float64)
    mean = X_all.mean(0)
    std = X_all.std(0)
    std_safe = np.where(std > 1e-12, std, 1.0)
    criterion = f"{metric} < {threshold:g}"
    base: dict[str, Any] = {
        "method": method, "criterion": criterion, "n_objects": len(feats), "n_failed": int(failed_mask.sum())
    }
    fm, fs = dict(zip(FEATURES, mean.tolist(), strict=True)), dict(zip(FEATURES, std.tolist(), strict=True))
    if not failed_mask.any():
        return FailureModes(**base, k=0, silhouette={}, clusters=[], feature_mean=fm, feature_std=fs,
                            skipped=skipped, failures=feats.iloc[:0])
    fails = feats[failed_mask].reset_index(drop=True)
    Z = (fails[list(FEATURES)].to_numpy(dtype=np.float64) - mean) / std_safe
    kk, sil, labels = choose_k(Z, k, k_max=k_max, seed=seed)
    sizes = Counter(labels.tolist())
    order = sorted(sizes, key=lambda c: (-sizes[c], c))
    remap = {old: new for new, old in enumerate(order)}
    fails["cluster"] = [remap[int(c)] for c in labels]
    clusters = []
    for new, old in enumerate(order):
        sel = labels == old
        zc = Z[sel].mean(0)
        zd = dict(zip(FEATURES, zc.tolist(), strict=True))
        label, category, dom = label_cluster(zd)
        sub = fails[fails["cluster"] == new]
        dist = np.linalg.norm(Z[sel] - zc, axis=1)
        nearest = sub.iloc[np.argsort(dist, kind="stable")[:n_examples]]
        clusters.append(
            FailureCluster(
                cluster=new,
                size=int(sel.sum()),
                share=float(sel.mean()),
                label=label,
                category=category,
                dominant=dom,
                means={f: float(sub[f].mean()) for f in FEATURES},
                z=zd,
                classes=Counter(sub["class_name"].dropna()).most_common(5),
                examples=[
                    {"item_id": e.item_id, "object": int(e.object), "class_name": e.class_name, "phrase": e.phrase}
                    for e in nearest.itertuples()
                ],
            )
        )
    return FailureModes(**base, k=kk, silhouette=sil, clusters=clusters, feature_mean=fm, feature_std=fs,
                        skipped=skipped, failures=fails)


def _is_frame(x: Any) -> bool:
    import pandas as pd

    return isinstance(x, pd.DataFrame)


def _default_method(df: pd.DataFrame) -> str:
    methods = list(dict.fromkeys(df["method"]))
    if len(methods) == 1:
        return str(methods[0])
    with_maps = df[(df["level"] == "object") & df["pg_energy_t2i"].notna()]["method"]
    if not with_maps.empty:
        return str(with_maps.iloc[0])
    raise InputError(f"the run has several methods ({', '.join(methods)}); choose one with --method")


def write_report(
    result: FailureModes | list[FailureModes], out_dir: str | Path, *, stem: str = "failures"
) -> list[Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` (one section per method) to ``out_dir``."""
    results = result if isinstance(result, list) else [result]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = out / f"{stem}.json"
    md = out / f"{stem}.md"
    payload = {r.method: r.to_json_dict() for r in results}
    js.write_text(json.dumps(payload, indent=2))
    md.write_text("# Failure modes\n\n" + "\n".join(r.to_markdown() for r in results))
    return [js, md]


def _finite(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, np.generic):
        return _finite(x.item())
    return x


__all__ = [
    "DESCRIPTIONS",
    "FEATURES",
    "FailureCluster",
    "FailureModes",
    "choose_k",
    "class_statistics",
    "failure_modes",
    "label_cluster",
    "map_features",
    "object_features",
    "write_report",
]
