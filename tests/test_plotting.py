"""Figures of hand-made explanations: colours follow the values, files are written, bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib import colormaps
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.images import ImageTransform
from dualex.plotting import (
    overlay_rgba,
    plot_explanation,
    plot_matrices,
    plot_matrix,
    save_figure,
    symmetric_limit,
    top_k_indices,
    upsample,
)

CAPTION = "a red circle left of a blue square"


def _offsets(text: str) -> list[tuple[int, int]]:
    out, i = [], 0
    for w in text.split():
        j = text.index(w, i)
        out.append((j, j + len(w)))
        i = j + len(w)
    return out


_RANDOM = object()


def make_explanation(*, cross: torch.Tensor | object | None = _RANDOM, image: bool = True, **extra) -> Explanation:
    """Caption with BOS/EOS around 8 words; a 4×4 grid over a 32×32 input cropped from a 40×48 photo."""
    words = CAPTION.split()
    tokens = ["<bos>", *words, "<eos>"]
    special = torch.zeros(len(tokens), dtype=torch.bool)
    special[0] = special[-1] = True
    if cross is _RANDOM:
        cross = torch.randn(len(tokens), 16, generator=torch.Generator().manual_seed(0))
    img = torch.full((32, 32, 3), 128, dtype=torch.uint8) if image else None
    kw = dict(
        cross=cross,
        tokens=tokens,
        special=special,
        text=CAPTION,
        grid=(4, 4),
        score=0.31,
        cosine=0.12,
        method="ij",
        token_offsets=[None, *_offsets(CAPTION), None],
        image_size=(32, 32),
        image_transform=ImageTransform.resize_center_crop((40, 48), 32, (32, 32)),
        image=img,
        target=0.25,
        model="hand-made",
    )
    kw.update(extra)
    return Explanation(**kw)


def _structured_cross() -> torch.Tensor:
    """``red`` (position 2) interacts positively with the top-left patch, ``blue`` (7) negatively with
    the bottom-right one; everything else is zero."""
    cross = torch.zeros(10, 16)
    cross[2, 0] = 1.0
    cross[7, 15] = -1.0
    return cross


def _overlay(ax) -> np.ndarray:
    images = [im for im in ax.get_images() if isinstance(im, AxesImage)]
    return np.asarray(images[-1].get_array())


def _word_faces(ax) -> list[tuple[float, ...]]:
    return [tuple(p.get_facecolor()) for p in ax.patches if isinstance(p, Rectangle)]


# --------------------------------------------------------------------------------------------- pure helpers
def test_upsample_keeps_patch_centres_and_range():
    m = np.arange(16, dtype=np.float64).reshape(4, 4)
    up = upsample(m, (32, 32))
    assert up.shape == (32, 32)
    # pixels 3/4 of patch 0 row 0 col 0 and the opposite corner are the extreme patches' values
    assert up[0, 0] == pytest.approx(0.0)
    assert up[-1, -1] == pytest.approx(15.0)
    assert up.min() >= m.min() - 1e-6 and up.max() <= m.max() + 1e-6


@settings(max_examples=30, deadline=None)
@given(st.floats(-5, 5, allow_nan=False), st.floats(0.1, 10))
def test_overlay_is_red_for_positive_blue_for_negative_and_transparent_at_zero(v, vmax):
    rgba = overlay_rgba(np.array([[v, -v, 0.0]]), vmax, cmap=colormaps["RdBu_r"], alpha=0.8)
    assert rgba[0, 2, 3] == 0.0
    if abs(v) > 1e-3 * vmax:
        pos, neg = (rgba[0, 0], rgba[0, 1]) if v > 0 else (rgba[0, 1], rgba[0, 0])
        assert pos[0] > pos[2] and neg[2] > neg[0]
        assert rgba[0, 0, 3] == pytest.approx(rgba[0, 1, 3])
        assert rgba[0, 0, 3] > 0
    assert np.all(rgba[..., 3] <= 0.8 + 1e-12)


def test_symmetric_limit_is_positive_even_for_zeros():
    assert symmetric_limit([0.0, 0.0]) > 0
    assert symmetric_limit([-3.0, 2.0]) == 3.0


def test_top_k_indices_keeps_largest_mass_in_original_order():
    mat = np.zeros((5, 3))
    mat[4] = 10
    mat[1] = -7
    mat[2] = 1
    assert top_k_indices(mat, np.arange(5), 2, axis=0).tolist() == [1, 4]
    assert top_k_indices(mat, np.arange(5), None, axis=0).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(InputError):
        top_k_indices(mat, np.arange(5), 0, axis=0)


# --------------------------------------------------------------------------------------------- panel figure
def test_default_figure_has_image_map_and_caption_panels():
    ex = make_explanation()
    fig = ex.plot()
    # two panels (image + caption each); the heatmap has a colour bar, the plain image none
    assert len(fig.axes) == 4
    assert len(fig.axes[0].child_axes) == 1 and not fig.axes[2].child_axes
    cbar_labels = [t.get_text() for t in fig.axes[0].child_axes[0].get_yticklabels()]
    assert "0" in cbar_labels and not fig.axes[0].child_axes[0].yaxis.get_offset_text().get_text()
    assert "method ij" in fig._suptitle.get_text()


def test_span_overlay_follows_the_sign_of_the_interactions():
    ex = make_explanation(cross=_structured_cross())
    fig = plot_explanation(ex, spans=["red", "blue"])
    red_ax, blue_ax = fig.axes[0], fig.axes[2]  # each span: image, caption
    red = _overlay(red_ax)
    blue = _overlay(blue_ax)
    assert red.shape == (32, 32, 4)
    # "red": top-left patch is red and opaque, the far corner transparent
    assert red[2, 2, 0] > red[2, 2, 2] and red[2, 2, 3] > 0.5
    assert red[30, 30, 3] == pytest.approx(0.0, abs=1e-6)
    # "blue": bottom-right patch is blue
    assert blue[30, 30, 2] > blue[30, 30, 0] and blue[30, 30, 3] > 0.5
    # the span's words are highlighted (bold) in the caption underneath
    bold = [t.get_text() for t in fig.axes[1].texts if t.get_fontweight() == "bold"]
    assert bold == ["red"]


def test_box_colours_the_caption_by_text_scores():
    ex = make_explanation(cross=_structured_cross())
    # the 40×48 photo is resized to 32×38 and 3 px are cropped on each side: these boxes (original
    # pixels) cover input patches (0, 0) and (3, 3)
    tf = ex.image_transform
    assert tf.box_to_input((3.8, 0, 13.9, 10)) == pytest.approx((0.0, 0.0, 8.0, 8.0), abs=0.05)
    assert tf.box_to_input((34.1, 30, 44.2, 40)) == pytest.approx((24.0, 24.0, 32.0, 32.0), abs=0.05)
    fig = plot_explanation(ex, boxes=[(3.8, 0, 13.9, 10), (34.1, 30, 44.2, 40)])
    cap_tl, cap_br = fig.axes[1], fig.axes[3]
    faces_tl = _word_faces(cap_tl)
    faces_br = _word_faces(cap_br)
    words = [t.get_text() for t in cap_tl.texts][1:]  # first text is the caption title
    assert words == CAPTION.split()
    red_i, blue_i = words.index("red"), words.index("blue")
    assert faces_tl[red_i][0] > faces_tl[red_i][2]  # "red" reddish for the top-left box
    assert faces_br[blue_i][2] > faces_br[blue_i][0]  # "blue" bluish for the bottom-right box
    neutral = faces_tl[words.index("circle")]
    assert neutral[0] == pytest.approx(neutral[2], abs=0.02)  # zero -> white
    # the box is drawn where box_to_input puts it
    rects = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert rects and rects[0].get_xy() == pytest.approx((0.0, 0.0), abs=0.05)
    assert rects[0].get_width() == pytest.approx(8.0, abs=0.05)


def test_patch_mask_region_and_no_image():
    ex = make_explanation(image=False)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1, 2] = True
    fig = plot_explanation(ex, spans=[(1, 3)], boxes=[mask])
    assert len(fig.axes) == 4
    rects = [p for p in fig.axes[2].patches if isinstance(p, Rectangle)]
    assert len(rects) == 1 and rects[0].get_xy() == pytest.approx((16.0, 8.0))


def test_bad_span_and_box_raise_input_error():
    ex = make_explanation()
    with pytest.raises(InputError):
        plot_explanation(ex, spans=["green triangle"])
    with pytest.raises(InputError):
        plot_explanation(ex, boxes=[(500, 500, 600, 600)])


def test_first_order_explanation_plots_main_effects_and_refuses_spans():
    ex = make_explanation(cross=None, text_main=torch.randn(10), image_main=torch.randn(16))
    fig = plot_explanation(ex)
    assert len(fig.axes) == 4
    with pytest.raises(InputError):
        plot_explanation(ex, spans=["red"])


def test_text_text_explanation_draws_second_sentence_words():
    second = "the cat sat on the mat"
    n2 = len(second.split())
    ex = make_explanation(
        cross=torch.randn(10, n2, generator=torch.Generator().manual_seed(1)),
        grid=(1, n2),
        image=None,
        image_size=None,
        image_transform=None,
        image_tokens=second.split(),
        image_text=second,
        image_offsets=_offsets(second),
    )
    fig = plot_explanation(ex, spans=["circle"], boxes=["cat"])
    top_words = [t.get_text() for t in fig.axes[0].texts][1:]
    assert top_words == second.split()
    assert not fig.axes[0].get_images()  # words, not a heatmap
    bold = [t.get_text() for t in fig.axes[2].texts if t.get_fontweight() == "bold"]
    assert bold == ["cat"]


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_save_figure_formats(tmp_path, suffix, magic):
    fig = plot_explanation(make_explanation())
    path = save_figure(fig, tmp_path / "sub" / f"fig{suffix}")
    assert path.read_bytes()[:5].startswith(magic)


def test_save_figure_refuses_unknown_suffix(tmp_path):
    with pytest.raises(InputError, match=r"\.png"):
        save_figure(plot_explanation(make_explanation()), tmp_path / "fig.jpg")


# --------------------------------------------------------------------------------------------- matrices
def test_matrix_with_about_200_players_labels_every_row_and_column():
    S, rows, cols = 12, 14, 14
    ex = Explanation(
        cross=torch.randn(S, rows * cols),
        tokens=[f"w{i}" for i in range(S)],
        special=torch.zeros(S, dtype=torch.bool),
        text=" ".join(f"w{i}" for i in range(S)),
        grid=(rows, cols),
        score=1.0,
        cosine=0.3,
        method="fixlip",
        image_pairs=torch.randn(rows * cols, rows * cols),
    )
    fig = plot_matrix(ex, "cross")
    ax = fig.axes[0]
    xl = [t.get_text() for t in ax.get_xticklabels()]
    yl = [t.get_text() for t in ax.get_yticklabels()]
    assert len(xl) == 196 and xl[0] == "(0,0)" and xl[15] == "(1,1)"
    assert yl[:2] == ["0:w0", "1:w1"]
    assert min(t.get_fontsize() for t in ax.get_xticklabels()) >= 5.0
    im = ax.get_images()[0]
    lo, hi = im.get_clim()
    assert lo == -hi  # centred at zero
    figs = plot_matrices(ex, top_k=20)
    assert set(figs) == {"cross", "image_pairs"}
    assert len(figs["image_pairs"].axes[0].get_xticklabels()) == 20


def test_matrix_top_k_keeps_the_strongest_and_drops_specials():
    cross = torch.zeros(10, 16)
    cross[3, 5] = 4.0
    cross[7, 9] = -2.0
    ex = make_explanation(cross=cross, text_pairs=torch.randn(10, 10))
    fig = plot_matrix(ex, "cross", top_k=2)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["3:circle", "7:blue"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["(1,1)", "(2,1)"]
    assert "top 2×2" in ax.get_title()
    assert "top" not in plot_matrix(ex, "cross").axes[0].get_title()
    fig = plot_matrix(ex, "text_pairs")
    assert len(fig.axes[0].get_yticklabels()) == 8  # BOS/EOS left out
    with pytest.raises(InputError, match="image_pairs"):
        plot_matrix(ex, "image_pairs")
    with pytest.raises(InputError):
        plot_matrix(ex, "diagonal")


def test_patches_whose_interval_covers_zero_are_hatched():
    cross = _structured_cross()
    cross[2, 1:] = 0.5  # "red" interacts clearly with every patch but the top-left one ...
    se = torch.full_like(cross, 1e-3)
    se[:, 0] = 10.0  # ... whose terms are all uncertain
    ex = make_explanation(cross=cross, stderr={"cross": se})
    red = ex.tokens.index("red")
    assert ex.image_map_error("red").flatten()[0] == pytest.approx(10.0)
    assert ex.image_map_error("red circle").flatten()[0] == pytest.approx(20.0)  # the bound sums the errors
    assert ex.text_scores_error().shape == (ex.n_tokens,) and float(ex.text_scores_error()[red]) > 10.0
    fig = plot_explanation(ex, spans=["red"])
    hatched = [p for p in fig.axes[0].patches if isinstance(p, Rectangle) and p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_xy() == (0.0, 0.0)
    plain = plot_explanation(make_explanation(cross=cross), spans=["red"])
    assert not [p for p in plain.axes[0].patches if isinstance(p, Rectangle) and p.get_hatch()]
    assert make_explanation(cross=cross).image_map_error("red") is None


def test_spans_and_boxes_each_take_their_own_row():
    """The demo's layout (docs/figures/shapes_ij.png): three phrases over three boxes, 3 × 2, no empty slot."""
    ex = make_explanation()
    fig = plot_explanation(ex, spans=["red", "blue", "square"], boxes=[(0, 0, 20, 20), (20, 20, 40, 40),
                                                                      (0, 20, 20, 40)])  # fmt: skip
    images = fig.axes[0::2]  # per panel: image, caption
    xs = sorted({round(a.get_position().x0, 4) for a in images})
    ys = sorted({round(a.get_position().y0, 4) for a in images})
    assert len(xs) == 3 and len(ys) == 2
    assert [round(a.get_position().x0, 4) for a in images[3:]] == xs  # boxes start at the first column
    assert fig.get_size_inches()[0] < 4 * 3.0  # three columns wide, not four


def _links(fig):
    return [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "pair"]


def test_plot_pairs_links_the_strongest_pairs_with_their_sign():
    cross = torch.zeros(10, 16)
    cross[2, 0] = 1.0  # "red" x top-left patch: positive, strongest
    cross[7, 15] = -0.8  # "blue" x bottom-right patch: negative
    cross[3, 5] = 0.3
    cross[0, 3] = 5.0  # BOS is not a player: never drawn
    ex = make_explanation(cross=cross)
    links = _links(ex.plot_pairs(k=2))
    assert len(links) == 2
    red, blue = links
    assert red.get_xydata()[1].tolist() == pytest.approx([4.0, 4.0])  # centre of patch 0 (8-pixel patches)
    assert blue.get_xydata()[1].tolist() == pytest.approx([28.0, 28.0])  # centre of patch 15
    r_rgb, b_rgb = red.get_color(), blue.get_color()
    assert r_rgb[0] > r_rgb[2] and b_rgb[2] > b_rgb[0]  # red raises, blue lowers
    assert red.get_linewidth() > blue.get_linewidth()
    assert len(_links(ex.plot_pairs(k=500))) == 8 * 16  # at most every player pair


def test_plot_pairs_refuses_first_order_and_bad_k():
    ex = make_explanation(cross=None, text_main=torch.ones(10), image_main=torch.ones(16))
    with pytest.raises(InputError, match="no token × patch interactions"):
        ex.plot_pairs(k=3)
    with pytest.raises(InputError, match="k must be a positive integer"):
        make_explanation().plot_pairs(k=0)


def test_notebook_display_has_an_inline_figure_and_the_key_numbers():
    cross = torch.zeros(10, 16)
    cross[2, 0] = 1.0
    page = make_explanation(cross=cross)._repr_html_()
    assert '<img src="data:image/png;base64,' in page
    for text in ("method", "score", "0.31", "cosine", "target", "&#x27;red&#x27; × patch (row 0, col 0)"):
        assert text in page
    first_order = make_explanation(cross=None, text_main=torch.ones(10), image_main=torch.ones(16))
    assert "<img" in first_order._repr_html_()
