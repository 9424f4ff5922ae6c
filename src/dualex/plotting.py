"""Figures of an `Explanation` (matplotlib, Agg backend: no display needed).

* `plot_explanation` — the paper-style panel: per caption span an image heatmap, per image box a
  coloured caption (Möller et al., TMLR 2025, Fig. 1 reads the interaction tensor this way).
* `plot_matrix` — the token × patch matrix (or an intra-modal matrix) with readable labels.
* `plot_pairs` — the k strongest token × patch interactions as sign-coloured links from words to patches.
* `figure_html` — a figure as an inline ``<img>`` (PNG, base64) for notebook displays (``_repr_html_``).
* `save_figure` — PNG, SVG or PDF by file suffix.

Figures are built on an Agg canvas directly (no pyplot), so nothing needs a display and the user's
pyplot backend is left alone.

Colours: red is positive, blue negative, white zero; every colour range is symmetric around zero, so
equal colour means equal magnitude within a panel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from dualex.errors import InputError
from dualex.images import float_box

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from dualex.explanation import Explanation

DEFAULT_CMAP = "RdBu_r"
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


# ---------------------------------------------------------------------------------------------- helpers
def symmetric_limit(values: Any) -> float:
    """``max |values|`` (a positive number even for all-zero input), the half-width of a colour range."""
    a = np.abs(np.asarray(values, dtype=np.float64))
    m = float(a.max()) if a.size else 0.0
    return m if m > 0 and math.isfinite(m) else 1e-12


def _tick(v: float, _pos: Any = None) -> str:
    """Colour-bar tick label: two significant digits, no offset text above the bar."""
    return "0" if v == 0 else f"{v:.2g}".replace("-", "−")


def upsample(grid_map: Any, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a ``(rows, cols)`` patch map onto ``size = (H, W)`` pixels.

    Each patch value sits at the patch centre (``align_corners=False``), as the patches tile the input.
    """
    t = torch.as_tensor(np.asarray(grid_map, dtype=np.float32))[None, None]
    out = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def overlay_rgba(values: np.ndarray, vmax: float, *, cmap: Colormap, alpha: float) -> np.ndarray:
    """RGBA overlay ``(H, W, 4)``: colour from ``cmap`` on ``[-vmax, vmax]``, opacity ∝ ``|value|``.

    Zero is fully transparent, so the photo shows where nothing is attributed.
    """
    rgba: np.ndarray = cmap(Normalize(-vmax, vmax)(values))
    rgba[..., 3] = alpha * np.clip(np.abs(values) / vmax, 0.0, 1.0) ** 0.75
    return rgba


def _as_image(image: Any) -> np.ndarray | None:
    if image is None:
        return None
    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.dtype != np.uint8:
        a = np.clip(a * 255.0 if a.max() <= 1.0 else a, 0, 255).astype(np.uint8)
    return a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a


def _canvas_size(ex: Explanation) -> tuple[int, int]:
    """``(H, W)`` of the coordinate frame image panels are drawn in (model-input pixels)."""
    img = _as_image(ex.image)
    if img is not None:
        return int(img.shape[0]), int(img.shape[1])
    if ex.image_size is not None:
        return int(ex.image_size[0]), int(ex.image_size[1])
    if ex.image_transform is not None:
        return int(ex.image_transform.input_size[0]), int(ex.image_transform.input_size[1])
    return ex.grid


def _is_text_text(ex: Explanation) -> bool:
    return ex.image_tokens is not None


# ---------------------------------------------------------------------------------------------- coloured text
@dataclass
class _Word:
    text: str
    value: float | None  # None: drawn without colour
    gap: bool  # whitespace before this word in the source text
    highlight: bool = False


def caption_words(
        ex: Explanation,
        values: Any,
        *,
        highlight: Sequence[int] = (),
        specials: bool = False,
) -> list[_Word]:
    """Display units of the caption, one per token position, with their values.

    Sub-word tokens of one word are drawn without a gap. Special positions are left out unless
    ``specials`` (then drawn uncoloured).
    """
    words = ex.words()
    vals = np.asarray(values, dtype=np.float64) if values is not None else None
    hl = set(int(i) for i in highlight)
    out: list[_Word] = []
    prev_end: int | None = None
    for i, w in enumerate(words):
        is_special = bool(ex.special[i])
        if is_special and not specials:
            continue
        off = ex.token_offsets[i] if i < len(ex.token_offsets) else None
        gap = True
        if off is not None and prev_end is not None:
            gap = off[0] > prev_end
        if off is not None:
            prev_end = off[1]
        value = None if (vals is None or is_special) else float(vals[i])
        out.append(_Word(w if w.strip() else repr(w), value, gap, i in hl))
    return out


def second_sentence_words(ex: Explanation, values: Any, *, highlight: Sequence[int] = ()) -> list[_Word]:
    """Display units of a bi-encoder's second sentence (its "patches"), with values."""
    toks = ex.image_tokens or []
    offs = ex.image_offsets or [None] * len(toks)
    text = ex.image_text or ""
    vals = np.asarray(values, dtype=np.float64).reshape(-1) if values is not None else None
    hl = set(int(i) for i in highlight)
    out: list[_Word] = []
    prev_end: int | None = None
    for i, tok in enumerate(toks):
        off = offs[i] if i < len(offs) else None
        shown = text[off[0] : off[1]] if off is not None else tok
        gap = True if (off is None or prev_end is None) else off[0] > prev_end
        if off is not None:
            prev_end = off[1]
        out.append(_Word(shown, None if vals is None else float(vals[i]), gap, i in hl))
    return out


_MEASURE: Any = None


def _text_width_pt(s: str, fontsize: float, bold: bool = False) -> float:
    """Width of ``s`` in points for the default font."""
    global _MEASURE
    if _MEASURE is None:
        from matplotlib.backends.backend_agg import RendererAgg

        _MEASURE = RendererAgg(8, 8, 72)  # type: ignore[no-untyped-call]  # matplotlib leaves __init__ unannotated
    prop = FontProperties(size=fontsize, weight="bold" if bold else "normal")
    w, _, _ = _MEASURE.get_text_width_height_descent(s, prop, ismath=False)
    return float(w)


def _layout_words(words: Sequence[_Word], width_pt: float, fontsize: float) -> list[tuple[float, int, float]]:
    """Greedy line breaking: ``(x_pt, line, w_pt)`` per word within ``width_pt``."""
    pad = 0.25 * fontsize
    space = 0.3 * fontsize
    out: list[tuple[float, int, float]] = []
    x, line = 0.0, 0
    for k, w in enumerate(words):
        ww = _text_width_pt(w.text, fontsize, w.highlight) + 2 * pad
        step = (space if w.gap else 0.12 * fontsize) if k else 0.0
        if k and x + step + ww > width_pt:
            x, line, step = 0.0, line + 1, 0.0
        out.append((x + step, line, ww))
        x = x + step + ww
    return out


def _n_lines(words: Sequence[_Word], width_pt: float, fontsize: float) -> int:
    lay = _layout_words(words, width_pt, fontsize)
    return (lay[-1][1] + 1) if lay else 1


def _line_height_pt(fontsize: float) -> float:
    return 2.0 * fontsize


def draw_colored_text(
    ax: Axes,
    words: Sequence[_Word],
    *,
    vmax: float,
    cmap: Colormap,
    fontsize: float = 10.0,
    title: str | None = None,
) -> None:
    """Draw words with background colours from ``cmap`` on ``[-vmax, vmax]``, wrapped to the axes width.

    Highlighted words are bold with a black frame. Words with value None have no colour.
    """
    ax.set_axis_off()
    fig = ax.figure
    assert isinstance(fig, Figure), "text rows are drawn on axes of a top-level Figure"
    bbox = ax.get_position()
    width_pt = bbox.width * fig.get_figwidth() * 72.0
    height_pt = bbox.height * fig.get_figheight() * 72.0
    norm = Normalize(-vmax, vmax)
    pad = 0.25 * fontsize
    lh = _line_height_pt(fontsize)
    top = 0.0
    if title:
        ax.text(0.0, 1.0, title, transform=ax.transAxes, fontsize=fontsize * 0.85, va="top", ha="left",
                color="0.25", parse_math=False)
        top = 1.5 * fontsize
    for w, (x, line, ww) in zip(words, _layout_words(words, width_pt, fontsize), strict=True):
        y_center = height_pt - top - (line + 0.5) * lh
        face = (1.0, 1.0, 1.0, 0.0) if w.value is None else cmap(norm(w.value))
        dark = w.value is not None and sum(face[:3]) / 3 < 0.45
        ax.add_patch(
            Rectangle(
                (x / width_pt, (y_center - 0.42 * lh) / height_pt),
                ww / width_pt,
                0.84 * lh / height_pt,
                transform=ax.transAxes,
                facecolor=face,
                edgecolor="black" if w.highlight else (0.8, 0.8, 0.8, 1.0),
                linewidth=1.2 if w.highlight else 0.4,
                clip_on=False,
            )
        )
        ax.text(
            (x + pad) / width_pt,
            y_center / height_pt,
            w.text,
            transform=ax.transAxes,
            fontsize=fontsize,
            fontweight="bold" if w.highlight else "normal",
            va="center_baseline",
            ha="left",
            color="white" if dark else "black",
            parse_math=False,
        )


def _text_block_height_in(words: Sequence[_Word], width_in: float, fontsize: float, title: bool) -> float:
    lines = _n_lines(words, width_in * 72.0, fontsize)
    return (lines * _line_height_pt(fontsize) + (1.5 * fontsize if title else 0.0) + 4.0) / 72.0


# ---------------------------------------------------------------------------------------------- image panels
def draw_image_map(
    ax: Axes,
    ex: Explanation,
    grid_map: Any,
    *,
    vmax: float,
    cmap: Colormap,
    alpha: float = 0.7,
    colorbar: bool = True,
    uncertain: Any = None,
) -> None:
    """The model-input image with ``grid_map`` (rows, cols) upsampled over it; a plain heatmap without image.

    ``uncertain`` (rows, cols) bool: patches whose 95 % interval covers 0, drawn hatched.
    """
    H, W = _canvas_size(ex)
    gm = np.asarray(grid_map, dtype=np.float64).reshape(ex.grid)
    img = _as_image(ex.image)
    if img is not None:
        ax.imshow(img, extent=(0, W, H, 0), cmap="gray" if img.ndim == 2 else None)
        ax.imshow(overlay_rgba(upsample(gm, (H, W)), vmax, cmap=cmap, alpha=alpha), extent=(0, W, H, 0))
    else:
        ax.imshow(gm, cmap=cmap, vmin=-vmax, vmax=vmax, extent=(0, W, H, 0), interpolation="nearest")
    if uncertain is not None:
        from matplotlib.patches import Rectangle

        rows, cols = ex.grid
        ph, pw = H / rows, W / cols
        for r, c in zip(*np.nonzero(np.asarray(uncertain, dtype=bool).reshape(ex.grid)), strict=True):
            ax.add_patch(Rectangle((c * pw, r * ph), pw, ph, fill=False, hatch="////", linewidth=0.0,
                                   edgecolor=(0, 0, 0, 0.45)))  # fmt: skip
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        from matplotlib.cm import ScalarMappable

        cax = ax.inset_axes((1.02, 0.0, 0.04, 1.0))
        cb = ax.figure.colorbar(ScalarMappable(Normalize(-vmax, vmax), cmap), cax=cax)
        cb.ax.tick_params(labelsize=7)
        cb.ax.yaxis.set_major_formatter(FuncFormatter(_tick))


def draw_plain_image(ax: Axes, ex: Explanation) -> None:
    """The model-input image without overlay (a neutral grid if the explanation keeps no image)."""
    H, W = _canvas_size(ex)
    img = _as_image(ex.image)
    if img is not None:
        ax.imshow(img, extent=(0, W, H, 0), cmap="gray" if img.ndim == 2 else None)
    else:
        ax.imshow(np.zeros(ex.grid), cmap="Greys", vmin=0, vmax=1, extent=(0, W, H, 0))
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _boxes_of(region: Any) -> list[Any] | None:
    """The pixel boxes in ``region`` (one box or a list of boxes); None for a patch mask."""
    if isinstance(region, torch.Tensor) and region.dtype == torch.bool:
        return None
    if isinstance(region, (list, tuple)) and region and isinstance(region[0], (list, tuple, torch.Tensor)):
        return list(region)
    return [region]


def draw_region(ax: Axes, ex: Explanation, region: Any) -> None:
    """Outline a box (original pixels), a list of boxes, or a patch mask on an image panel."""
    boxes = _boxes_of(region)
    H, W = _canvas_size(ex)
    if boxes is not None and ex.image_transform is not None:
        sx = W / ex.image_transform.input_size[1]
        sy = H / ex.image_transform.input_size[0]
        for b in boxes:
            vals = b.tolist() if isinstance(b, torch.Tensor) else list(b)
            x0, y0, x1, y1 = ex.image_transform.box_to_input(float_box(vals))
            xy, w, h = (x0 * sx, y0 * sy), (x1 - x0) * sx, (y1 - y0) * sy
            for lw, col in ((3.0, "white"), (1.5, "black")):  # a white halo keeps the frame visible on dark photos
                ax.add_patch(Rectangle(xy, w, h, fill=False, edgecolor=col, linewidth=lw))
        return
    mask = ex.patches(region).numpy()
    rows, cols = ex.grid
    ph, pw = H / rows, W / cols
    for r, c in zip(*np.nonzero(mask), strict=True):
        ax.add_patch(Rectangle((c * pw, r * ph), pw, ph, fill=False, edgecolor="black", linewidth=1.0))


# ---------------------------------------------------------------------------------------------- the panel figure
def _span_label(ex: Explanation, span: Any) -> str:
    if span is None:
        return "whole caption"
    if isinstance(span, str):
        return f"“{span}”"
    words = ex.words()
    return "“" + " ".join(words[i] for i in ex.span(span).tolist()) + "”"


def _box_label(ex: Explanation, box: Any) -> str:
    if box is None:
        return "whole image" if not _is_text_text(ex) else "whole sentence"
    if isinstance(box, str):
        return f"“{box}”"
    if isinstance(box, torch.Tensor) and box.dtype == torch.bool:
        return f"{int(box.sum())} patches"
    boxes = _boxes_of(box) or []
    return " ∪ ".join("(" + ", ".join(f"{float(v):.0f}" for v in (b.tolist() if isinstance(b, torch.Tensor) else b))
                      + ")" for b in boxes)


def _second_positions(ex: Explanation, region: Any) -> list[int]:
    return torch.nonzero(ex.patches(region).flatten(), as_tuple=False).flatten().tolist()


def plot_explanation(
    ex: Explanation,
    spans: Sequence[Any] | None = None,
    boxes: Sequence[Any] | None = None,
    *,
    cmap: str | Colormap = DEFAULT_CMAP,
    alpha: float = 0.7,
    panel_size: float = 3.0,
    ncols: int | None = None,
    fontsize: float = 10.0,
    shared_scale: bool = False,
    specials: bool = False,
    title: str | bool = True,
) -> Figure:
    """The paper-style figure of an explanation.

    Each panel is a column: an image on top and the caption underneath.

    * Per span (caption words, a token range, or token indices): the image map
      ``ex.image_map(span)`` (rows × cols, summed over the span's tokens) upsampled over the model-input
      image, the span highlighted in the caption. With standard errors (sampled methods) patches whose
      95 % interval covers 0 (``|value| ≤ 1.96 · ex.image_map_error(span)``) are hatched.
    * Per box (``(x0, y0, x1, y1)`` in original-image pixels, a list of boxes, or a patch mask): the box
      drawn on the image and the caption coloured by ``ex.text_scores(box)``.
    * With neither: the whole caption's image map and the caption coloured over the whole image.

    For text-text bi-encoders the "image" is the second sentence: it is drawn as coloured words, and a
    "box" names words of it.

    Args:
        ex: The explanation.

        spans: Caption spans to map onto the image.

        boxes: Image regions to map onto the caption.

        cmap: A diverging colour map; red positive, blue negative by default.

        alpha: Opacity of the strongest overlay colour (opacity grows with ``|value|``).

        panel_size: Width of one panel, inches.

        ncols: Panels per row (default: up to 4, and with both spans and boxes the boxes start a new
            row: the demo's three phrases over its three boxes, 3 × 2).

        fontsize: Caption font size, points.

        shared_scale: One colour range for all panels (default: each panel its own ``±max|value|``).

        specials: Also draw special tokens (BOS, EOS, padding), uncoloured.

        title: Figure title; True for the default (model, method, score), False for none.

    Returns:
        A matplotlib ``Figure`` (Agg canvas; save it with `save_figure`).

    Raises:
        InputError: A span or box does not fit the explanation (or the method gives no cross terms).
    """
    cm = colormaps[cmap] if isinstance(cmap, str) else cmap
    text_text = _is_text_text(ex)
    spans = list(spans) if spans else []
    boxes = list(boxes) if boxes else []
    default = not spans and not boxes
    panels: list[tuple[str, Any]] = [("span", s) for s in spans] + [("box", b) for b in boxes]
    if default:
        panels = [("span", None), ("box", None)]

    # values first: errors for bad spans/boxes come before any drawing
    data = []
    for kind, what in panels:
        if kind == "span":
            m = ex.image_map(what).numpy()
            hl = ex.span(what).tolist() if (what is not None and ex.cross is not None) else []
            data.append((kind, what, m, hl))
        else:
            t = ex.text_scores(what).numpy()
            data.append((kind, what, t, []))
    limits = [symmetric_limit(v if k == "span" else v[~ex.special.numpy()]) for k, _, v, _ in data]
    if shared_scale:
        limits = [max(limits)] * len(limits)

    n = len(panels)
    if ncols is None and spans and boxes:  # spans on their row(s), boxes starting a row of their own
        nc = min(max(len(spans), len(boxes)), 4)
        span_rows = math.ceil(len(spans) / nc)
        places = [divmod(k, nc) for k in range(len(spans))]
        places += [(span_rows + r, c) for r, c in (divmod(k, nc) for k in range(len(boxes)))]
    else:
        nc = ncols or min(n, 4)
        places = [divmod(k, nc) for k in range(n)]
    nr = max(r for r, _ in places) + 1
    width_in = panel_size
    # words per panel: top (text-text: second sentence) and bottom (caption)
    bottoms, tops = [], []
    for kind, what, v, hl in data:
        if kind == "span":
            bottoms.append(caption_words(ex, None, highlight=hl, specials=specials))
            tops.append(second_sentence_words(ex, v) if text_text else None)
        else:
            bottoms.append(caption_words(ex, v, specials=specials))
            tops.append(
                second_sentence_words(ex, None, highlight=_second_positions(ex, what) if what is not None else [])
                if text_text else None
            )
    H, W = _canvas_size(ex)
    if text_text:
        top_h = max(_text_block_height_in(t or [], width_in, fontsize, True) for t in tops)
    else:
        top_h = panel_size * H / W
    bottom_h = max(_text_block_height_in(b, width_in, fontsize, True) for b in bottoms)
    gap_w, gap_h = 0.75, 0.45
    head = 0.5 if title else 0.1
    fig_w = nc * width_in + (nc - 1) * gap_w + 0.9
    fig_h = head + nr * (top_h + bottom_h + 0.15) + (nr - 1) * gap_h + 0.2
    fig = Figure(figsize=(fig_w, fig_h))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)

    def frac_x(x_in: float) -> float:
        return x_in / fig_w

    def frac_y(y_in_from_top: float) -> float:
        return 1.0 - y_in_from_top / fig_h

    for k, ((kind, what, v, _hl), lim, top_words, bottom_words) in enumerate(
        zip(data, limits, tops, bottoms, strict=True)
    ):
        r, c = places[k]
        x0 = 0.2 + c * (width_in + gap_w)
        y0 = head + r * (top_h + bottom_h + 0.15 + gap_h)
        ax_top = fig.add_axes((frac_x(x0), frac_y(y0 + top_h), frac_x(width_in), top_h / fig_h))
        ax_bot = fig.add_axes(
            (frac_x(x0), frac_y(y0 + top_h + 0.15 + bottom_h), frac_x(width_in), bottom_h / fig_h)
        )
        if kind == "span":
            label = _span_label(ex, what)
            if text_text:
                draw_colored_text(ax_top, top_words or [], vmax=lim, cmap=cm, fontsize=fontsize,
                                  title=f"second sentence | {label}   Σ {float(v.sum()):+.3g}")
            else:
                err = ex.image_map_error(what) if (what is None or ex.cross is not None) else None
                unc = None if err is None else np.abs(v) <= 1.959964 * err.numpy()
                draw_image_map(ax_top, ex, v, vmax=lim, cmap=cm, alpha=alpha, uncertain=unc)
                ax_top.set_title(f"{label}   Σ {float(v.sum()):+.3g}", fontsize=fontsize * 0.9)
            draw_colored_text(ax_bot, bottom_words, vmax=lim, cmap=cm, fontsize=fontsize, title="caption")
        else:
            label = _box_label(ex, what)
            if text_text:
                draw_colored_text(ax_top, top_words or [], vmax=lim, cmap=cm, fontsize=fontsize,
                                  title=f"second sentence | {label}")
            else:
                draw_plain_image(ax_top, ex)
                if what is not None:
                    draw_region(ax_top, ex, what)
                ax_top.set_title(label, fontsize=fontsize * 0.9)
            draw_colored_text(ax_bot, bottom_words, vmax=lim, cmap=cm, fontsize=fontsize,
                              title=f"caption | {label}   Σ {float(v.sum()):+.3g}   (±{lim:.3g})")
    if title:
        fig.suptitle(_figure_title(ex) if title is True else str(title), fontsize=fontsize, y=1.0 - 0.12 / fig_h,
                     va="top")
    return fig


def _figure_title(ex: Explanation) -> str:
    parts = []
    if ex.model:
        parts.append(ex.model)
    parts.append(f"method {ex.method}")
    parts.append(f"score {ex.score:.4g}")
    c = ex.completeness()
    if "target" in c:
        parts.append(f"attributed {c['attributed']:.4g} / target {c['target']:.4g}")
    return "   ·   ".join(parts)


# ---------------------------------------------------------------------------------------------- matrices
def _patch_labels(ex: Explanation) -> list[str]:
    if _is_text_text(ex):
        words = [w.text for w in second_sentence_words(ex, None)]
        return [f"{i}:{w}" for i, w in enumerate(words)]
    rows, cols = ex.grid
    return [f"({r},{c})" for r in range(rows) for c in range(cols)]


def _token_labels(ex: Explanation) -> list[str]:
    return [f"{i}:{w}" for i, w in enumerate(ex.words())]


def top_k_indices(matrix: np.ndarray, candidates: np.ndarray, k: int | None, axis: int) -> np.ndarray:
    """The ``k`` of ``candidates`` (indices along ``axis``) with the largest summed ``|matrix|``, in order."""
    if k is None or k >= len(candidates):
        return candidates
    if k < 1:
        raise InputError(f"top_k must be at least 1, got {k}")
    mass = np.abs(matrix).sum(axis=1 - axis)[candidates]
    keep = np.argsort(-mass, kind="stable")[:k]
    return np.sort(candidates[keep])


def plot_matrix(
    ex: Explanation,
    which: str = "cross",
    top_k: int | tuple[int | None, int | None] | None = None,
    *,
    cmap: str | Colormap = DEFAULT_CMAP,
    cell: float = 0.13,
    max_size: float = 40.0,
    specials: bool = False,
    colorbar: bool = True,
) -> Figure:
    """An interaction matrix as a heatmap with one labelled tick per player.

    Args:
        ex: The explanation.

        which: ``"cross"`` (caption tokens × patches), ``"text_pairs"`` (tokens × tokens) or
            ``"image_pairs"`` (patches × patches). Patches are labelled ``(row,col)``; tokens
            ``index:word``.

        top_k: Keep only the k rows and k columns with the largest summed ``|value|`` (a pair
            ``(k_rows, k_cols)`` sets them separately; None keeps all).

        cmap: Diverging colour map; the range is symmetric around zero.

        cell: Size of one matrix cell, inches (≈ 9 pt, room for a 6 pt label), so ~200 players stay
            readable in SVG/PDF and a 150-dpi PNG.

        max_size: Cap on either figure side, inches (cells shrink beyond it).

        specials: Keep special token positions (BOS, EOS, padding) as rows/columns.

        colorbar: Draw a colour bar.

    Returns:
        A matplotlib ``Figure``.

    Raises:
        InputError: The explanation has no such matrix.
    """
    names = {"cross": "cross", "text_pairs": "text_pairs", "image_pairs": "image_pairs"}
    if which not in names:
        raise InputError(f"which must be one of {sorted(names)}, got {which!r}")
    mat_t = getattr(ex, which)
    if mat_t is None:
        raise InputError(f"this explanation (method {ex.method!r}) has no {which} matrix")
    mat = mat_t.numpy().astype(np.float64)
    if which in ("text_pairs", "image_pairs"):
        mat = np.triu(mat, 1) + np.triu(mat, 1).T  # each pair once, shown on both sides of the diagonal
    tok_idx = np.arange(ex.n_tokens) if specials else ex.players.numpy()
    patch_idx = np.arange(ex.n_patches)
    row_idx, col_idx = {
        "cross": (tok_idx, patch_idx),
        "text_pairs": (tok_idx, tok_idx),
        "image_pairs": (patch_idx, patch_idx),
    }[which]
    row_lab = _token_labels(ex) if which != "image_pairs" else _patch_labels(ex)
    col_lab = _patch_labels(ex) if which != "text_pairs" else _token_labels(ex)
    k_rows, k_cols = top_k if isinstance(top_k, tuple) else (top_k, top_k)
    if which == "cross":
        row_idx = top_k_indices(mat[:, col_idx], row_idx, k_rows, axis=0)
        col_idx = top_k_indices(mat[row_idx], col_idx, k_cols, axis=1)
    else:
        row_idx = top_k_indices(mat[:, row_idx], row_idx, k_rows, axis=0)
        col_idx = row_idx if k_cols == k_rows else top_k_indices(mat[row_idx], col_idx, k_cols, axis=1)
    sub = mat[np.ix_(row_idx, col_idx)]
    lim = symmetric_limit(sub)
    nr, nc = sub.shape
    longest_row = max((len(row_lab[i]) for i in row_idx), default=4)
    longest_col = max((len(col_lab[i]) for i in col_idx), default=4)
    c = min(cell, max_size / max(nr, nc, 1))
    font = max(3.0, min(8.0, c * 72 * 0.7))
    label_w = 0.6 * font / 72 * longest_row + 0.3
    label_h = 0.6 * font / 72 * longest_col + 0.3
    mat_w, mat_h = max(nc * c, 2.0), max(nr * c, 1.0)
    fig_w = label_w + mat_w + (1.0 if colorbar else 0.3)
    fig_h = label_h + mat_h + 0.6
    fig = Figure(figsize=(fig_w, fig_h))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    ax = fig.add_axes((label_w / fig_w, label_h / fig_h, mat_w / fig_w, mat_h / fig_h))
    im = ax.imshow(sub, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(nc), [col_lab[i] for i in col_idx], rotation=90, fontsize=font)
    ax.set_yticks(range(nr), [row_lab[i] for i in row_idx], fontsize=font)
    ax.tick_params(length=1.5, pad=1)
    for t in ax.get_xticklabels() + ax.get_yticklabels():
        t.set_parse_math(False)
    axis_names = {"cross": ("caption token", "image patch (row,col)" if not _is_text_text(ex) else "second sentence"),
                  "text_pairs": ("caption token", "caption token"),
                  "image_pairs": ("image patch (row,col)", "image patch (row,col)")}[which]
    ax.set_ylabel(axis_names[0], fontsize=8)
    ax.set_xlabel(axis_names[1], fontsize=8)
    shown = f"  (top {nr}×{nc})" if top_k is not None else ""
    ax.set_title(f"{which}  ·  method {ex.method}  ·  ±{lim:.3g} {ex.units}{shown}", fontsize=9)
    if colorbar:
        cax = fig.add_axes(((label_w + mat_w + 0.15) / fig_w, label_h / fig_h, 0.15 / fig_w, mat_h / fig_h))
        cb = fig.colorbar(im, cax=cax)
        cb.ax.tick_params(labelsize=7)
        cb.ax.yaxis.set_major_formatter(FuncFormatter(_tick))
    return fig


def plot_matrices(ex: Explanation, top_k: int | None = None, **kwargs: Any) -> dict[str, Figure]:
    """`plot_matrix` for every matrix the explanation has (``cross`` and the intra-modal ones)."""
    return {w: plot_matrix(ex, w, top_k, **kwargs) for w in ("cross", "text_pairs", "image_pairs")
            if getattr(ex, w) is not None}


# ---------------------------------------------------------------------------------------------- saving
# ---------------------------------------------------------------------------------------------- top pairs
def top_pairs(ex: Explanation, k: int) -> list[tuple[int, int, float]]:
    """The ``k`` token × patch interactions of largest magnitude: ``[(token, patch, value)]``, strongest first.

    Special positions (BOS, EOS, padding) are never chosen; ties keep row-major order.

    Raises:
        InputError: the method gives no token × patch interactions, or ``k`` is not a positive integer.
    """
    if ex.cross is None:
        raise InputError(f"method {ex.method!r} gives no token × patch interactions, so no top pairs")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    mag = ex.cross.abs().masked_fill(ex.special[:, None], -1.0).flatten()
    n = min(k, int((mag >= 0).sum()))
    order = torch.argsort(-mag, stable=True)[:n]
    P = ex.n_patches
    return [(int(i) // P, int(i) % P, float(ex.cross.flatten()[i])) for i in order]


def plot_pairs(
    ex: Explanation,
    k: int = 10,
    *,
    cmap: str | Colormap = DEFAULT_CMAP,
    panel_size: float = 4.0,
    fontsize: float = 10.0,
    max_words: int = 40,
    title: str | bool = True,
) -> Figure:
    """The ``k`` strongest token × patch interactions as links from caption words to image regions.

    The caption's words are listed top to bottom on the left, the model-input image is on the right
    (for text-text bi-encoders: the second sentence's words), and each of the ``k`` interactions of
    largest ``|cross[s, p]|`` is a line from word ``s`` to the centre of patch ``p``: red where the pair
    raises the similarity, blue where it lowers it, wider and more opaque the stronger it is (width ∝
    ``|value| / max |value|`` over the ``k``). Linked patches are outlined.

    Args:
        ex: The explanation (needs ``cross``).

        k: How many interactions (fewer if the explanation has fewer).

        cmap: A diverging colour map; the sign colours are its ends.

        panel_size: Height of the figure's drawing area, inches.

        fontsize: Word font size, points.

        max_words: With more caption players than this, only the linked words are listed.

        title: Figure title; True for the default, False for none.

    Returns:
        A matplotlib ``Figure``; its links are the ``Line2D`` artists with gid ``"pair"``, strongest first.

    Raises:
        InputError: no ``cross`` term, or a bad ``k``.
    """
    from matplotlib.lines import Line2D

    pairs = top_pairs(ex, k)
    cm = colormaps[cmap] if isinstance(cmap, str) else cmap
    words = ex.words()
    players = [int(i) for i in ex.players]
    linked = sorted({s for s, _, _ in pairs})
    shown = players if len(players) <= max_words else linked
    text_text = _is_text_text(ex)
    H, W = _canvas_size(ex) if not text_text else (float(panel_size * 72), float(panel_size * 72))
    fig = Figure(figsize=(panel_size * 1.5, panel_size + (0.5 if title else 0.1)))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.02, 0.96, panel_size / (panel_size + (0.5 if title else 0.1)) - 0.03))
    left = -0.5 * W
    step = H / max(len(shown), 1)
    y_word = {s: (i + 0.5) * step for i, s in enumerate(shown)}
    for s in shown:
        ax.text(-0.06 * W, y_word[s], words[s], ha="right", va="center", fontsize=fontsize,
                fontweight="bold" if s in linked else "normal")
    rows, cols = ex.grid
    if text_text:
        second = ex.image_tokens or []
        step_b = H / max(len(second), 1)
        centres = {p: (0.12 * W, (p + 0.5) * step_b) for p in range(ex.n_patches)}
        for p, t in enumerate(second):
            ax.text(0.15 * W, centres[p][1], t, ha="left", va="center", fontsize=fontsize)
        right = W
    else:
        draw_plain_image(ax, ex)
        ph, pw = H / rows, W / cols
        centres = {p: ((p % cols + 0.5) * pw, (p // cols + 0.5) * ph) for p in range(ex.n_patches)}
        for p in sorted({p for _, p, _ in pairs}):
            x, y = centres[p]
            ax.add_patch(Rectangle((x - pw / 2, y - ph / 2), pw, ph, fill=False, edgecolor="black", linewidth=0.8))
        right = W
    vmax = max((abs(v) for _, _, v in pairs), default=1.0) or 1.0
    for s, p, v in pairs:
        strength = abs(v) / vmax
        colour = cm(0.92 if v > 0 else 0.08)
        x1, y1 = centres[p]
        ax.add_line(Line2D([-0.04 * W, x1], [y_word[s], y1], color=colour, linewidth=0.8 + 3.2 * strength,
                           alpha=0.35 + 0.6 * strength, gid="pair", solid_capstyle="round"))
        ax.plot([x1], [y1], "o", color=colour, markersize=3.5, alpha=0.9)
    ax.set_xlim(left, right)
    ax.set_ylim(H, 0)
    ax.set_axis_off()
    if title:
        head = (f"{len(pairs)} strongest token × patch interactions · {ex.method}" if title is True else str(title))
        fig.suptitle(head + ("  (red raises the score, blue lowers it)" if title is True else ""),
                     fontsize=fontsize, y=0.99, va="top")
    return fig


def figure_html(fig: Figure, *, dpi: int = 80, width: int | None = None) -> str:
    """``fig`` as an ``<img>`` element with the PNG inlined (base64), for ``_repr_html_``."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    style = f' style="max-width:{width}px"' if width else ' style="max-width:100%"'
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"{style}/>'


def html_table(rows: Sequence[tuple[str, Any]], *, caption: str | None = None) -> str:
    """A two-column HTML table of ``(name, value)`` rows (values escaped; floats to 4 significant digits)."""
    import html

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(str(v))

    head = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{cell(v)}</td></tr>" for k, v in rows)
    return f"<table>{head}{body}</table>"


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Write ``fig`` as PNG, SVG or PDF, chosen by the suffix of ``path`` (parent folders are created).

    Raises:
        InputError: The suffix is not one of ``.png``, ``.svg``, ``.pdf``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FIGURE_SUFFIXES:
        raise InputError(f"figure path must end in {', '.join(FIGURE_SUFFIXES)}; got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=suffix[1:], dpi=dpi, bbox_inches="tight", pad_inches=0.08)
    return path
