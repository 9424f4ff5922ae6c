"""`Contrast`: why x is closer to A than to B — the explanation of s(x, a) − s(x, b).

x is one input (an image, or a caption), a and b two competitors on the other side of the model. The two
pairs are explained in one call, so x's side is computed once (`dualex.methods.shared`), and every term
of the difference is the difference of the two explanations' terms:

* x an image: ``image_map()`` = Σ over a's caption rows of ``a.cross`` − the same for b, a
  ``(rows, cols)`` patch map of the difference (first-order methods: ``a.image_main − b.image_main``);
* x a caption: ``text_scores()`` = Σ over a's patches − Σ over b's, one value per caption position;
* ``decomposition()``: the difference of the two decompositions, key by key, so it adds up to
  s(x, a) − s(x, b) exactly (reference terms and bias included; ``residual`` is float rounding only).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from dualex.decisions.maps import all_rows_map
from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.methods.common import check_side, opposite
from dualex.models.base import Side

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FORMAT = "dualex.contrast"


@dataclass(frozen=True)
class XAxis:
    """What the two explanations of a contrast share when x is on one side of the model.

    Attributes:
        spatial: x is an image: the shared axis is its patch grid (a ``(rows, cols)`` map).
        shared: The `Explanation` attribute both explanations must agree on (``grid`` or ``tokens``).
        mismatch: The error when they do not.
        difference: One explanation's values on x's axis: a ``(rows, cols)`` patch map or ``(S,)`` scores.
        key: The name of the difference in `Contrast.to_json_dict` (``image_map`` or ``text_scores``).
        first_order: Index of x's side in `Explanation.first_order`'s ``(text, image)`` pair.
    """

    spatial: bool
    shared: str
    mismatch: str
    difference: Callable[[Explanation], Tensor]
    key: str
    first_order: int


X_AXES: dict[Side, XAxis] = {
    "image": XAxis(
        spatial=True,
        shared="grid",
        mismatch="the two explanations have different patch grids {a} and {b}",
        difference=all_rows_map,
        key="image_map",
        first_order=1,
    ),
    "text": XAxis(
        spatial=False,
        shared="tokens",
        mismatch="the two explanations explain different captions; x must be the same input",
        difference=Explanation.text_scores,
        key="text_scores",
        first_order=0,
    ),
}
"""The shared axis per side of x: every side-dependent step of a `Contrast` is a lookup here."""

NEEDS_STRINGS: dict[Side, bool] = {"text": True, "image": False}
"""Whether the inputs of a side are captions (strings) rather than images."""


def require_strings(side: Side, values: Sequence[Any], message: str) -> None:
    """Raise `InputError` with ``message`` when ``side`` takes captions and some value is no string."""
    if NEEDS_STRINGS[side] and not all(isinstance(v, str) for v in values):
        raise InputError(message)


def explain_against(model: Any, side: Side, x: Any, others: Sequence[Any], method: str, **options: Any) -> Any:
    """Explanations of (x, o) for every o in ``others``, x on ``side`` and the others on the other side.

    One call of `dualex.explain`, so x's side is computed once; a caption x is repeated once per pair (the
    text argument takes one caption per pair), an image x is broadcast.

    Returns:
        A list of `Explanation`, one per item of ``others``, in order.
    """
    from dualex.methods import explain

    args: dict[Side, Any] = {side: _X_ARGUMENT[side](x, len(others)), opposite(side): list(others)}
    return explain(model, args["image"], args["text"], method, **options)


_X_ARGUMENT: dict[Side, Callable[[Any, int], Any]] = {"image": lambda x, n: x, "text": lambda x, n: [x] * n}


def looks_like_image(value: Any) -> bool:
    """Whether ``value`` is an image rather than a caption: anything but a string, or a string naming an
    existing file with an image suffix."""
    if not isinstance(value, (str, Path)):
        return True
    p = Path(value)
    return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()


def guess_side(model: Any, x: Any, x_side: str | None) -> Side:
    """The side of the model that ``x`` goes to: ``x_side`` checked, or guessed from ``x``.

    Text-text bi-encoders put a sentence on the ``"text"`` side by default.
    """
    if x_side is not None:
        return check_side(x_side, "x_side")
    if model.tower("image").modality == "text":
        return "text"
    return "image" if looks_like_image(x) else "text"


def label_of(value: Any, default: str) -> str:
    """A short display label: the caption, a file name, or ``default`` for in-memory images."""
    if isinstance(value, str) and not looks_like_image(value):
        return value
    if isinstance(value, (str, Path)):
        return Path(value).name
    return default


@dataclass
class Contrast:
    """The explanation of s(x, a) − s(x, b).

    Attributes:
        a: Explanation of the pair (x, a).
        b: Explanation of the pair (x, b), same method, options and units.
        labels: Display names of a and b (captions, file names).
        x_side: The side of the model x is on: ``"image"`` (a and b are captions) or ``"text"`` (a and b
            are images, or second sentences of a bi-encoder).
    """

    a: Explanation
    b: Explanation
    labels: tuple[str, str] = ("A", "B")
    x_side: Side = "image"

    def __post_init__(self) -> None:
        self.x_side = check_side(self.x_side, "x_side")
        if self.a.method != self.b.method or self.a.units != self.b.units:
            raise InputError(
                f"a contrast needs two explanations of one method in one unit; got {self.a.method!r} "
                f"({self.a.units}) and {self.b.method!r} ({self.b.units})"
            )
        axis = self.axis
        shared_a, shared_b = getattr(self.a, axis.shared), getattr(self.b, axis.shared)
        if shared_a != shared_b:
            raise InputError(axis.mismatch.format(a=shared_a, b=shared_b))
        self.labels = (str(self.labels[0]), str(self.labels[1]))

    # ------------------------------------------------------------------ numbers
    @property
    def axis(self) -> XAxis:
        """The axis x's parts give the two explanations (`X_AXES`)."""
        return X_AXES[self.x_side]

    @property
    def method(self) -> str:
        """The method both explanations were made with."""
        return self.a.method

    @property
    def units(self) -> str:
        """Units of the terms (``"cosine"`` or ``"score"``), those of the explanations."""
        return self.a.units

    @property
    def similarities(self) -> tuple[float, float]:
        """s(x, a) and s(x, b) in `units`."""
        return float(self.a.decomposition()["similarity"]), float(self.b.decomposition()["similarity"])

    @property
    def difference(self) -> float:
        """s(x, a) − s(x, b) in `units` (positive: a is the closer one)."""
        sa, sb = self.similarities
        return sa - sb

    def image_map(self) -> Tensor:
        """Patch map of the difference when x is an image: Σ_s a.cross[s] − Σ_s b.cross[s], ``(rows, cols)``.

        The sums run over all caption rows, special tokens included (ij's EOS row carries interactions
        of the pooled token), so the map adds up to the difference of the cross totals. First-order
        methods (no ``cross``) give ``a.image_main − b.image_main``.

        Raises:
            InputError: x is a caption (a and b are different images, with no common patch map).
        """
        if not self.axis.spatial:
            raise InputError(
                "x is a caption and a, b are different images, so there is no common patch map; use "
                "text_scores() for the caption, or .a.image_map() and .b.image_map()"
            )
        return self.x_difference()

    def text_scores(self) -> Tensor:
        """Per-token difference when x is a caption: Σ_p a.cross[:, p] − Σ_p b.cross[:, p], ``(S,)``.

        First-order methods give ``a.text_main − b.text_main``; special positions are 0.

        Raises:
            InputError: x is an image (a and b are different captions).
        """
        if self.axis.spatial:
            raise InputError(
                "x is an image and a, b are different captions, so there is no common token axis; use "
                "image_map() for the image, or .a.text_scores() and .b.text_scores()"
            )
        return self.x_difference()

    def x_difference(self) -> Tensor:
        """The difference on x's own axis: `image_map` for an image x, `text_scores` for a caption x."""
        diff = self.axis.difference
        return diff(self.a) - diff(self.b)

    def first_order(self) -> Tensor:
        """Difference of the first-order scores of x's parts (`Explanation.first_order`: main effects plus
        the pair terms they are in), ``(rows, cols)`` for an image x, ``(S,)`` for a caption x."""
        i = self.axis.first_order
        out = self.a.first_order()[i] - self.b.first_order()[i]
        return out.reshape(self.a.grid) if self.axis.spatial else out

    def decomposition(self) -> dict[str, float]:
        """s(x, a) − s(x, b) split into parts that add up to it exactly.

        Returns:
            ``similarity`` (the difference), ``attributed`` (difference of the attributed totals),
            ``method_error``, each reference term (or ``baseline``) as a difference (a key missing on one
            side counts 0 there), and ``residual`` = similarity − (attributed − method_error + Σ parts),
            float rounding only.
        """
        da, db = self.a.decomposition(), self.b.decomposition()
        keys = [k for k in da if k != "residual"] + [k for k in db if k not in da and k != "residual"]
        out = {k: float(da.get(k, 0.0)) - float(db.get(k, 0.0)) for k in keys}
        parts = sum(v for k, v in out.items() if k not in ("similarity", "attributed", "method_error"))
        out["residual"] = out["similarity"] - (out["attributed"] - out["method_error"] + parts)
        return out

    # ------------------------------------------------------------------ figures
    def plot(self, **kwargs: Any) -> Any:
        """x with the difference map and both competitors (`dualex.decisions.plots.plot_contrast`)."""
        from dualex.decisions.plots import plot_contrast

        return plot_contrast(self, **kwargs)

    def _repr_html_(self) -> str:
        """Notebook display: `plot` beside the difference and its exact decomposition."""
        from dualex.plotting import html_table

        sa, sb = self.similarities
        rows: list[tuple[str, Any]] = [("method", self.method), ("units", self.units), (f"s(x, {self.labels[0]})", sa),
                                       (f"s(x, {self.labels[1]})", sb)]  # fmt: skip
        rows += [(f"difference: {k}", v) for k, v in self.decomposition().items()]
        return _html_with_figure(self.plot, html_table(rows, caption="Contrast"))

    # ------------------------------------------------------------------ persistence
    def to_metadata(self) -> dict[str, Any]:
        """The contrast's fields as JSON-ready metadata (saved beside the two explanations)."""
        return {"format": FORMAT, "version": 1, "labels": list(self.labels), "x_side": self.x_side}

    def save(self, directory: str | Path) -> Path:
        """Write ``contrast.json`` and the two explanations (``a.safetensors``, ``b.safetensors``) to a folder."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.a.save(d / "a.safetensors")
        self.b.save(d / "b.safetensors")
        meta = {**self.to_metadata(), "difference": self.difference, "decomposition": self.decomposition()}
        tmp = d / "contrast.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        tmp.replace(d / "contrast.json")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Contrast:
        """Read a folder written by `save`.

        Raises:
            InputError: a missing or invalid ``contrast.json`` or explanation file.
        """
        d = Path(directory)
        meta_path = d / "contrast.json"
        if not meta_path.is_file():
            raise InputError(f"{d} has no contrast.json; was it written by Contrast.save?")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{meta_path} is not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise InputError(f"{meta_path} is not a dualex contrast")
        labels = meta.get("labels")
        if not (isinstance(labels, list) and len(labels) == 2 and all(isinstance(v, str) for v in labels)):
            raise InputError(f"{meta_path}: 'labels' must be two strings")
        try:
            side = check_side(meta.get("x_side"), "x_side")
        except InputError:
            raise InputError(f"{meta_path}: 'x_side' must be 'image' or 'text'") from None
        return cls(
            Explanation.load(d / "a.safetensors"),
            Explanation.load(d / "b.safetensors"),
            labels=(labels[0], labels[1]),
            x_side=side,
        )

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for the viewer: both explanations, the difference map or scores, the decomposition."""
        out: dict[str, Any] = {
            **self.to_metadata(),
            "difference": self.difference,
            "similarities": list(self.similarities),
            "decomposition": self.decomposition(),
            "a": self.a.to_json_dict(include_image=False),
            "b": self.b.to_json_dict(include_image=False),
            self.axis.key: self.x_difference().tolist(),
        }
        return out

    def __repr__(self) -> str:
        return (
            f"Contrast({self.labels[0]!r} vs {self.labels[1]!r}, method={self.method!r}, "
            f"difference={self.difference:.4g} {self.units})"
        )


def contrast(
    model: Any,
    x: Any,
    a: Any,
    b: Any,
    method: str = "ij",
    *,
    x_side: Literal["image", "text"] | None = None,
    labels: tuple[str, str] | None = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> Contrast:
    """Explain why x is closer to a than to b: s(x, a) − s(x, b).

    Args:
        model: A `DualEncoder`, a model name for `dualex.load`, or a supported module.
        x: One input: an image (path, PIL image, array) or a caption.
        a: The first competitor, of the other side (a caption for an image x, an image for a caption x).
        b: The second competitor.
        method: An explanation method (`dualex.list_methods`).
        x_side: ``"image"`` or ``"text"``: the side of the model x goes to (None: an image if x is not a
            string or names an image file; a sentence of a text-text bi-encoder goes to ``"text"``).
        labels: Display names of a and b (default: the captions or file names).
        device: Move the model there first.
        **options: Options of the method.

    Returns:
        A `Contrast`; both pairs are explained in one call, with x's side computed once.
    """
    from dualex.models.registry import resolve_model

    enc = resolve_model(model, device=device)
    side = guess_side(enc, x, x_side)
    require_strings(opposite(side), [a, b], "x is an image, so a and b must be captions (strings)")
    require_strings(side, [x], "x goes to the text side, so it must be a caption (a string)")
    ex_a, ex_b = explain_against(enc, side, x, [a, b], method, **options)
    names = labels or (label_of(a, "image A"), label_of(b, "image B"))
    return Contrast(ex_a, ex_b, labels=(str(names[0]), str(names[1])), x_side=side)


__all__ = [
    "X_AXES",
    "Contrast",
    "XAxis",
    "all_rows_map",
    "contrast",
    "explain_against",
    "guess_side",
    "label_of",
    "looks_like_image",
    "require_strings",
]


def _html_with_figure(draw: Any, table: str) -> str:
    """``draw()``'s figure (inline PNG) beside ``table``; a figure that cannot be drawn leaves the table."""
    import html

    from dualex.plotting import figure_html

    try:
        figure = figure_html(draw(), dpi=72)
    except Exception as exc:  # the numbers still show
        figure = f"<p>(no figure: {html.escape(f'{type(exc).__name__}: {exc}')})</p>"
    return f"<div style='display:flex;gap:1em;align-items:flex-start'><div>{figure}</div><div>{table}</div></div>"
