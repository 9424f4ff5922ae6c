"""`Ranking`: a gallery ranked by similarity to a query, and why its first results come first.

The query (an image or a caption) is embedded once, the gallery (captions for an image query, images for a
caption query) in batches; the ranking is the order of the model's scores. The top k results are
explained against the query in one call, so the query's side is computed once (`dualex.methods.shared`);
`Ranking.contrast` explains why one result ranks above another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from dualex.decisions.contrast import (
    IMAGE_SUFFIXES,
    NEEDS_STRINGS,
    Contrast,
    explain_against,
    guess_side,
    label_of,
    require_strings,
)
from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.methods.common import opposite
from dualex.models.base import Side


@dataclass
class Ranking:
    """A ranked gallery with explanations of its top k.

    Attributes:
        query: Display label of the query.
        labels: Display labels of the N gallery items, in gallery order.
        scores: ``(N,)`` the model's scores of (query, item), gallery order.
        order: ``(N,)`` gallery indices, best first (ties: the earlier item first).
        explanations: Explanations of the top k, in rank order (``explanations[r]`` explains
            ``order[r]``).
        query_side: The side of the model the query is on (``"image"``: the gallery holds captions).
    """

    query: str
    labels: list[str]
    scores: Tensor
    order: Tensor
    explanations: list[Explanation]
    query_side: Side = "image"

    @property
    def k(self) -> int:
        """Number of explained results."""
        return len(self.explanations)

    def top(self, k: int | None = None) -> list[tuple[int, str, float]]:
        """``(gallery index, label, score)`` of the first ``k`` results (default: the explained ones)."""
        n = self.k if k is None else k
        return [(int(i), self.labels[int(i)], float(self.scores[int(i)])) for i in self.order[:n]]

    def rank_of(self, index: int) -> int:
        """Rank (0 = first) of gallery item ``index``."""
        return int((self.order == int(index)).nonzero()[0, 0])

    def contrast(self, first: int = 0, second: int = 1) -> Contrast:
        """Why the result at rank ``first`` is above the one at rank ``second`` (both among the top k)."""
        for r in (first, second):
            if not 0 <= r < self.k:
                raise InputError(f"rank {r} has no explanation; the top {self.k} are explained (raise k)")
        la, lb = (self.labels[int(self.order[r])] for r in (first, second))
        return Contrast(self.explanations[first], self.explanations[second], labels=(la, lb), x_side=self.query_side)

    def _repr_html_(self) -> str:
        """Notebook display: the first result's explanation figure beside the ranked list (top 10)."""
        from dualex.decisions.contrast import _html_with_figure
        from dualex.plotting import html_table

        rows: list[tuple[str, Any]] = [("query", self.query), ("items", len(self.labels)), ("explained", self.k)]
        rows += [(f"{r + 1}. {label}", score) for r, (_, label, score) in enumerate(self.top(10))]
        table = html_table(rows, caption="Ranking")
        if not self.explanations:
            return table
        return _html_with_figure(lambda: self.explanations[0].plot(title=f"first: {self.top(1)[0][1]}"), table)

    def __repr__(self) -> str:
        best = self.top(1)
        head = f", first={best[0][1]!r}" if best else ""
        return f"Ranking(query={self.query!r}, items={len(self.labels)}, k={self.k}{head})"


def gallery_items(gallery: Any, item_side: Side) -> tuple[list[Any], list[str]]:
    """The gallery as ``(inputs, labels)``.

    Args:
        gallery: A list of items (images or captions), a folder of images (path), a text file of captions
            (one per line), or a `dualex.datasets.Dataset` (its captions for ``item_side="text"``, its
            images otherwise).
        item_side: The side of the model the items go to.
    """
    from dualex.datasets.base import Dataset

    if isinstance(gallery, Dataset):
        items = gallery.items()
        if NEEDS_STRINGS[item_side]:
            return [it.caption for it in items], [it.caption for it in items]
        return [it for it in items], [it.id for it in items]
    if isinstance(gallery, (str, Path)):
        p = Path(gallery)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InputError(f"{p} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            return [str(f) for f in files], [f.name for f in files]
        if p.is_file() and p.suffix.lower() == ".txt":
            lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
            if not lines:
                raise InputError(f"{p} holds no captions (one per line)")
            return lines, lines
        raise InputError(f"gallery {str(p)!r} is neither a folder of images nor a .txt file of captions")
    if not isinstance(gallery, Sequence) or isinstance(gallery, (str, bytes)) or len(gallery) == 0:
        raise InputError("gallery must be a non-empty list, a folder of images, a .txt file or a dataset")
    items = list(gallery)
    return items, [label_of(v, f"item {i}") for i, v in enumerate(items)]


def _load(item: Any) -> Any:
    from dualex.datasets.base import Item

    return item.load_image() if isinstance(item, Item) else item


def explain_ranking(
    model: Any,
    query: Any,
    gallery: Any,
    k: int = 5,
    method: str = "ij",
    *,
    query_side: Literal["image", "text"] | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    **options: Any,
) -> Ranking:
    """Rank ``gallery`` by similarity to ``query`` and explain the top ``k``.

    Args:
        model: A `DualEncoder`, a model name for `dualex.load`, or a supported module.
        query: An image (path, PIL image, array) or a caption.
        gallery: Items of the other side: a list, a folder of images, a ``.txt`` file of captions, or a
            `dualex.datasets.Dataset`.
        k: Number of top results to explain (0: rank only).
        method: Explanation method (`dualex.list_methods`).
        query_side: ``"image"`` or ``"text"`` (None: guessed as in `dualex.contrast`).
        batch_size: Gallery items per tower pass when scoring.
        device: Move the model there first.
        **options: Options of the method.

    Returns:
        A `Ranking`; ``order`` sorts ``scores`` in decreasing order, and explanation r is of the query and
        ``order[r]`` (its ``score`` equals ``scores[order[r]]``).
    """
    from dualex.methods import check_method_options
    from dualex.methods.common import positive_int
    from dualex.models.registry import resolve_model

    check_method_options(method, options)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InputError(f"k must be an integer ≥ 0, got {k!r}")
    batch_size = positive_int("batch_size", batch_size)
    enc = resolve_model(model, device=device)
    side = guess_side(enc, query, query_side)
    item_side = opposite(side)
    require_strings(side, [query], "the query goes to the text side, so it must be a caption (a string)")
    items, labels = gallery_items(gallery, item_side)
    require_strings(item_side, items, "an image query ranks captions: the gallery must hold strings")

    def prepared(side_: Side, values: list[Any]) -> Any:
        return enc.tower(side_).prepare(values).to(enc.device)

    with torch.no_grad():
        e_q = enc.tower(side).encode(prepared(side, [_load(query)])).float()
        chunks = []
        for s in range(0, len(items), batch_size):
            chunk = [_load(v) for v in items[s : s + batch_size]]
            chunks.append(enc.tower(item_side).encode(prepared(item_side, chunk)).float())
        e_g = torch.cat(chunks)
    scores = enc.similarity(e_g, e_q.expand_as(e_g)).score.cpu()  # the score is symmetric in its two sides
    order = torch.sort(scores, descending=True, stable=True).indices
    k = min(k, len(items))
    explanations: list[Explanation] = []
    if k:
        best = [_load(items[int(i)]) for i in order[:k]]
        q = _load(query)
        explanations = explain_against(enc, side, q, best, method, **options)
    return Ranking(
        query=label_of(query, "query image"),
        labels=labels,
        scores=scores,
        order=order,
        explanations=explanations,
        query_side=side,
    )


__all__ = ["Ranking", "explain_ranking", "gallery_items"]
