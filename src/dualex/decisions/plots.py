"""Figures of decisions: a `Contrast` as x with the difference map beside both competitors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from dualex.decisions.maps import all_rows_map
from dualex.plotting import (
    DEFAULT_CMAP,
    _canvas_size,
    _is_text_text,
    _text_block_height_in,
    caption_words,
    draw_colored_text,
    draw_image_map,
    draw_plain_image,
    second_sentence_words,
    symmetric_limit,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from dualex.decisions.contrast import Contrast
    from dualex.explanation import Explanation


def _short(s: str, n: int = 48) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def plot_contrast(
    con: Contrast,
    *,
    cmap: str | Colormap = DEFAULT_CMAP,
    alpha: float = 0.7,
    panel_size: float = 3.0,
    fontsize: float = 10.0,
    title: str | bool = True,
) -> Figure:
    """Three columns: the difference (why A rather than B), then A's and B's own explanations.

    x an image: the difference map ``con.image_map()`` over the image, then a's and b's image maps (Σ over
    all their caption rows, so that the first panel is the second minus the third) with their captions
    coloured over the whole image (one colour range for a and b, so they compare). x a caption: the
    caption coloured by ``con.text_scores()``, then each image with its map and the caption coloured by
    it. Red is positive (for A), blue negative (for B).

    Args:
        con: The contrast.
        cmap: A diverging colour map.
        alpha: Opacity of the strongest overlay colour.
        panel_size: Width of one column, inches.
        fontsize: Caption font size, points.
        title: Figure title; True for the default (labels, method, difference), False for none.

    Returns:
        A matplotlib ``Figure`` (Agg canvas; save it with `dualex.plotting.save_figure`).
    """
    cm = colormaps[cmap] if isinstance(cmap, str) else cmap
    a, b = con.a, con.b
    la, lb = con.labels
    sa, sb = con.similarities
    text_text = _is_text_text(a)
    maps = [all_rows_map(a).numpy(), all_rows_map(b).numpy()]  # the difference map is A's minus B's
    words = [a.text_scores().numpy(), b.text_scores().numpy()]
    x_image = con.axis.spatial  # x an image: the difference is a patch map; a caption: one value per token
    diff = con.x_difference().numpy()
    lim_ab = max(symmetric_limit(m) for m in maps)
    lim_w = max(symmetric_limit(w[~e.special.numpy()]) for w, e in zip(words, (a, b), strict=True))
    lim_d = symmetric_limit(diff if x_image else diff[~a.special.numpy()])
    width = panel_size
    H, W = _canvas_size(a)
    top_h = panel_size * H / W if not text_text else 1.2
    bottoms = [caption_words(e, w) for e, w in zip((a, b), words, strict=True)]
    if not x_image:
        bottoms.append(caption_words(a, diff))
    bottom_h = max(_text_block_height_in(bw, width, fontsize, True) for bw in bottoms)
    gap_w = 0.75
    head = 0.55 if title else 0.1
    fig_w = 3 * width + 2 * gap_w + 0.9
    fig_h = head + top_h + 0.15 + bottom_h + 0.2
    fig = Figure(figsize=(fig_w, fig_h))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)

    def axes(col: int, top: bool) -> Axes:
        x0 = 0.2 + col * (width + gap_w)
        y_top = head if top else head + top_h + 0.15
        h = top_h if top else bottom_h
        return fig.add_axes((x0 / fig_w, 1.0 - (y_top + h) / fig_h, width / fig_w, h / fig_h))

    def side_panel(ax: Axes, ex: Explanation, values: np.ndarray | None, lim: float, label: str) -> None:
        if text_text:
            draw_colored_text(ax, second_sentence_words(ex, values), vmax=lim, cmap=cm, fontsize=fontsize,
                              title=label)  # fmt: skip
        elif values is None:
            draw_plain_image(ax, ex)
            ax.set_title(label, fontsize=fontsize * 0.9)
        else:
            draw_image_map(ax, ex, values, vmax=lim, cmap=cm, alpha=alpha)
            ax.set_title(label, fontsize=fontsize * 0.9)

    d_label = f"{_short(la, 22)} − {_short(lb, 22)}   Δ {sa - sb:+.3g}"
    if x_image:
        side_panel(axes(0, True), a, diff, lim_d, d_label)
        draw_colored_text(axes(0, False), [], vmax=lim_w, cmap=cm, fontsize=fontsize,
                          title=f"A: {_short(la)}\nB: {_short(lb)}")  # fmt: skip
    else:
        ax = axes(0, True)
        ax.set_axis_off()
        ax.text(0.0, 0.5, f"A: {_short(la)}\nB: {_short(lb)}", fontsize=fontsize * 0.9, va="center",
                transform=ax.transAxes, parse_math=False)  # fmt: skip
        draw_colored_text(axes(0, False), bottoms[2], vmax=lim_d, cmap=cm, fontsize=fontsize,
                          title=f"caption | A − B   Δ {sa - sb:+.3g}")  # fmt: skip
    for col, (ex, m, name, s) in enumerate(zip((a, b), maps, ("A", "B"), (sa, sb), strict=True), 1):
        side_panel(axes(col, True), ex, m, lim_ab, f"{name}: {_short(label_of_side(ex, con), 30)}   s {s:.3g}")
        draw_colored_text(axes(col, False), bottoms[col - 1], vmax=lim_w, cmap=cm, fontsize=fontsize,
                          title=f"caption | {name}")  # fmt: skip
    if title:
        text = title if isinstance(title, str) else (
            f"why {_short(la, 40)!r} rather than {_short(lb, 40)!r}   ({a.method}, {a.units}, Δ {sa - sb:+.3g})"
        )
        fig.suptitle(text, fontsize=fontsize, y=1.0 - 0.12 / fig_h, va="top")
    return fig


def label_of_side(ex: Explanation, con: Contrast) -> str:
    """The competitor's label as its explanation shows it: the caption (x an image) or the label given."""
    if con.axis.spatial:
        return ex.text
    return con.labels[0] if ex is con.a else con.labels[1]


__all__ = ["plot_contrast"]
