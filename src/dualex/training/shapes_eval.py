"""How well a dual encoder matches shapes scenes to their captions, and grounds the named objects.

* `retrieval_metrics`: held-out image→text and text→image top-1 among the candidates of a pool, and
  hard-negative accuracy (the true caption against its colour-swapped and shape-swapped versions).
* `grounding_table`: the conditional pointing-game energy (PGE, `dualex.metrics.pointing`) of
  span-conditional image maps — the share of a phrase's positive image-map mass on the patches of the
  named object's box — for ``method="ij"`` and for first-order gradient × input maps at the same layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.datasets.shapes_generator import ShapeScene, swap_colours, swap_shapes
from dualex.models.base import DualEncoder
from dualex.progress import bar


def hard_negatives(scene: ShapeScene, index: int) -> tuple[str, str]:
    """The colour-swapped and shape-swapped captions used for evaluation (seeded by ``index``)."""
    return swap_colours(scene, np.random.default_rng([index, 1])), swap_shapes(scene, np.random.default_rng([index, 2]))


@torch.no_grad()
def embed(
    model: DualEncoder,
    images: Sequence[Any],
    texts: Sequence[str],
    *,
    batch_size: int = 100,
    progress: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """L2-normalised image and text embeddings, ``(M, D)`` and ``(K, D)`` float32 on CPU."""
    img, txt = [], []
    with bar(len(images) + len(texts), "embedding", progress) as pb:
        for i in range(0, len(images), batch_size):
            chunk = model.tower("image").prepare(list(images[i : i + batch_size])).to(model.device)
            img.append(model.tower("image").encode(chunk).float().cpu())
            pb.update(chunk.batch_size)
        for i in range(0, len(texts), batch_size):
            chunk_t = model.tower("text").prepare(list(texts[i : i + batch_size])).to(model.device)
            txt.append(model.tower("text").encode(chunk_t).float().cpu())
            pb.update(chunk_t.batch_size)
    norm = torch.nn.functional.normalize
    return norm(torch.cat(img), dim=-1), norm(torch.cat(txt), dim=-1)


def retrieval_metrics(
    model: DualEncoder, scenes: Sequence[ShapeScene], *, pool: int = 100, progress: bool | None = None
) -> dict[str, float]:
    """Held-out retrieval and hard-negative accuracy.

    Args:
        model: The dual encoder.
        scenes: Held-out scenes.
        pool: Candidates per retrieval: consecutive groups of ``pool`` scenes (the last may be smaller).
        progress: Progress bar (None: only on a terminal).

    Returns:
        ``i2t_top1`` / ``t2i_top1`` (fraction of scenes whose own caption / image ranks first among the
        pool's true captions / images), ``hard_colour`` / ``hard_shape`` (true caption scored above the
        colour- / shape-swapped one), ``hard_both`` (above both), the same three per object count
        (``hard_colour_n3`` ...), and ``n_scenes``.
    """
    negs = [hard_negatives(s, i) for i, s in enumerate(scenes)]
    texts = [s.caption for s in scenes] + [c for c, _ in negs] + [h for _, h in negs]
    img, txt = embed(model, [s.image for s in scenes], texts, progress=progress)
    N = len(scenes)
    true, col, shp = txt[:N], txt[N : 2 * N], txt[2 * N :]
    i2t = t2i = 0
    for start in range(0, N, pool):
        sl = slice(start, min(start + pool, N))
        sim = img[sl] @ true[sl].T
        diag = torch.arange(sim.shape[0])
        i2t += int((sim.argmax(1) == diag).sum())
        t2i += int((sim.argmax(0) == diag).sum())
    s_true = (img * true).sum(-1)
    beat_c = s_true > (img * col).sum(-1)
    beat_s = s_true > (img * shp).sum(-1)
    out: dict[str, float] = {
        "n_scenes": float(N),
        "pool": float(pool),
        "i2t_top1": i2t / N,
        "t2i_top1": t2i / N,
        "hard_colour": float(beat_c.float().mean()),
        "hard_shape": float(beat_s.float().mean()),
        "hard_both": float((beat_c & beat_s).float().mean()),
    }
    counts = torch.tensor([len(s.objects) for s in scenes])
    for n in sorted(set(counts.tolist())):
        sel = counts == n
        out[f"hard_colour_n{n}"] = float(beat_c[sel].float().mean())
        out[f"hard_shape_n{n}"] = float(beat_s[sel].float().mean())
        out[f"hard_both_n{n}"] = float((beat_c & beat_s)[sel].float().mean())
    return out


# ---------------------------------------------------------------------------------------------- grounding
def gradxinput_map(model: DualEncoder, image: Any, caption: str, *, layer: int = -1) -> Tensor:
    """First-order image map of ``method="gradxinput"``: ``Σ_w ∂cos/∂x_{p,w} · (x − r)_{p,w}`` at image layer
    ``layer`` (reference: zeros after normalisation, as for ``ij``), ``(rows, cols)``."""
    from dualex.methods import explain

    ex = explain(model, image, caption, method="gradxinput", side="image", layer=layer,
                        baselines={"image": "zeros"}, progress=False)
    assert ex.image_main is not None
    return ex.image_main.reshape(ex.grid)


def area_energy(values: Tensor, weights: Tensor) -> float:
    """``Σ_p w_p v⁺_p / Σ_p v⁺_p``: the positive mass of a patch map inside a box when each patch counts by
    the fraction ``w_p`` of its area the box covers (the map read as constant over each patch)."""
    v = values.flatten().double().clamp(min=0)
    total = float(v.sum())
    return float((v * weights.flatten().double()).sum()) / total if total > 0 else 0.0


def grounding_table(
    model: DualEncoder,
    scenes: Sequence[ShapeScene],
    *,
    layer: int = -1,
    n_steps: int = 10,
    progress: bool | None = None,
    **ij_options: Any,
) -> dict[str, Any]:
    """Conditional pointing-game energy per method on shapes scenes.

    For every object phrase of every scene (the phrase's character span, the object's exact box), a map
    over the patch grid per method:

    * ``ij``: the span-conditional map of `dualex.explain(..., method="ij")` (rows of the phrase's tokens
      summed, `dualex.metrics.pointing`);
    * ``gradxinput_caption``: ``method="gradxinput"`` (image side, zeros reference) of the whole caption's
      cosine at the same image layer — first order, so one map for every phrase of the caption;
    * ``gradxinput_phrase``: the same with the phrase alone as the caption (``"a small red circle"``), a
      span-conditional first-order map;
    * ``uniform``: a constant map (chance level).

    Scores per map: ``pge`` — positive-part energy on the box's patches (patches at least half covered,
    `dualex.metrics.pointing.positive_energy`, the project's pointing-game convention); ``pge_area`` —
    positive mass weighted by the fraction of each patch inside the box (`area_energy`); ``hit`` — the
    map's maximum lies on a box patch (for ``uniform``: the share of box patches).

    Returns:
        ``{"pge", "pge_area", "hit": {method: mean}, "pge_by_objects": {method: {n: mean pge}},
        "n_phrases", "n_scenes", "layer", "n_steps"}``.
    """
    from dualex.methods import explain
    from dualex.metrics.pointing import char_span_positions, hit, positive_energy
    from dualex.spans import box_patch_weights

    methods = ("ij", "gradxinput_caption", "gradxinput_phrase", "uniform")
    scores: dict[str, dict[str, list[float]]] = {k: {m: [] for m in methods} for k in ("pge", "pge_area", "hit")}
    n_obj: list[int] = []
    with bar(len(scenes), "grounding", progress) as pb:
        for scene in scenes:
            ex = explain(model, scene.image, scene.caption, method="ij", layer=layer, n_steps=n_steps,
                                progress=False, **ij_options)
            assert ex.cross is not None and ex.image_transform is not None
            whole = gradxinput_map(model, scene.image, scene.caption, layer=layer).flatten()
            for span in scene.spans:
                box = scene.span_box(span)
                inside = ex.patches(box).flatten()
                weights = box_patch_weights(box, grid=ex.grid, transform=ex.image_transform).flatten()
                phrase = scene.caption[span.start : span.end]
                maps = {
                    "ij": ex.cross[char_span_positions(ex, span.start, span.end)].sum(0),
                    "gradxinput_caption": whole,
                    "gradxinput_phrase": gradxinput_map(model, scene.image, "a " + phrase, layer=layer).flatten(),
                    "uniform": torch.ones(ex.n_patches),
                }
                for name, m in maps.items():
                    scores["pge"][name].append(positive_energy(m, inside))
                    scores["pge_area"][name].append(area_energy(m, weights))
                    scores["hit"][name].append(hit(m, inside) if name != "uniform" else float(inside.float().mean()))
                n_obj.append(len(scene.objects))
            pb.update(1)
    counts = np.asarray(n_obj)
    out: dict[str, Any] = {k: {m: float(np.mean(v)) for m, v in per.items()} for k, per in scores.items()}
    out["pge_by_objects"] = {
        m: {int(n): float(np.mean(np.asarray(v)[counts == n])) for n in sorted(set(n_obj))}
        for m, v in scores["pge"].items()
    }
    out.update(n_phrases=len(n_obj), n_scenes=len(scenes), layer=layer, n_steps=n_steps)
    return out


def format_grounding(table: dict[str, Any]) -> str:
    """The grounding table as aligned text."""
    counts = sorted({n for per in table["pge_by_objects"].values() for n in per})
    head = f"{'method':<20} {'PGE':>6} {'PGE-area':>8} {'hit':>6} " + " ".join(
        f"{'PGE n=' + str(n):>8}" for n in counts
    )
    lines = [
        f"conditional pointing game on {table['n_scenes']} held-out scenes, {table['n_phrases']} phrases "
        f"(image layer {table['layer']}, ij n_steps {table['n_steps']})",
        head,
    ]
    for m, v in table["pge"].items():
        per = table["pge_by_objects"][m]
        lines.append(
            f"{m:<20} {v:6.3f} {table['pge_area'][m]:8.3f} {table['hit'][m]:6.3f} "
            + " ".join(f"{per.get(n, float('nan')):8.3f}" for n in counts)
        )
    return "\n".join(lines)
