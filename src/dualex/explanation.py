"""`Explanation`: the result of every method — plain tensors plus metadata, no model inside.

Conventions (shapes):
    S   caption token positions, special tokens included (they are flagged in ``special``);
    P   image patches (rows × cols, row-major); for text-text bi-encoders, the second sentence's
        token positions (grid ``(1, P)``).

Attribution terms (all in ``units``, see ``params["units"]``):
    cross[S, P]          token × patch interactions,
    cross_prefix[S, Q]   token × image prefix positions (CLS, registers), where a method gives them,
    text_pairs[S, S]     token × token interactions (symmetric, zero diagonal; each pair counts once),
    image_pairs[P, P]    patch × patch interactions (same convention),
    text_main[S], image_main[P]  single-part effects,
    intercept            the constant of a surrogate model (FIxLIP's e_∅).
``target`` is the quantity the terms are meant to add up to (method-specific, e.g. exCLIP's
four-term score difference); ``baseline = score - target`` is the part of the model's score that is
attributed to no part. `Explanation.decomposition` splits the similarity into the attributed total, the
method's error and the unattributed rest (for ij: the three reference terms ``reference_terms``).

Sampled methods (FIxLIP, FIxLIP (SI), InteractionLIME) also carry ``stderr``: a standard error for
every estimated term, same shapes as the terms (`dualex.games.uncertainty`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.images import ImageTransform
from dualex.spans import Span, as_patch_mask, span_positions

_TENSOR_FIELDS = (
    "cross", "cross_prefix", "text_pairs", "image_pairs", "text_main", "image_main", "special", "image", "text_image"
)
# Attribution terms: floating point and finite in every file `Explanation.load` accepts.
_ATTRIBUTION_FIELDS = ("cross", "cross_prefix", "text_pairs", "image_pairs", "text_main", "image_main")
TERM_FIELDS = _ATTRIBUTION_FIELDS
"""The attribution terms (tensors that add up to the attributed total)."""
STDERR_PREFIX = "stderr."
"""Key prefix of the standard-error tensors in a saved file (``stderr.cross`` ...)."""
FORMAT_VERSION = 1
METADATA_CHECKSUM = "metadata_checksum"
"""Key of the metadata's own checksum in a saved file (files from before 0.3 have none)."""


@dataclass
class Explanation:
    """Attributions of one (caption, image) pair's similarity.

    Attributes:
        cross: ``(S, P)`` token × patch interactions, or None for first-order methods.
        tokens: The S caption tokens as display strings: the caption text each covers, tokenizer markers
            (``</w>``, ``Ġ``, ``▁``, ``##``) gone and bytes decoded (``"café"``, not ``"cafÃ©</w>"``);
            special tokens as the tokenizer spells them. Index DataFrames and print with these.
        special: ``(S,)`` bool, True for positions that are not players.
        text: The caption.
        grid: ``(rows, cols)`` patch grid.
        score: The model's own score of the pair (cosine × logit scale + bias).
        cosine: Plain cosine similarity of the pair.
        method: Method name (``"ij"``, ``"fixlip"``, ...).
        params: Options the method ran with (JSON-serialisable), including ``units``.
        token_offsets: Character span of each token in ``text`` (None for specials).
        image_size: ``(H, W)`` of the model input, pixels.
        image_transform: Maps original-image boxes onto the model input.
        image: The model-input image, uint8 ``(H, W, 3)``, for plots (None if not kept).
        target: What the attribution terms should add up to (None if the method claims nothing).
        baseline: ``score - target`` where a target exists.
        intercept: Constant of a surrogate model.
        model: Name of the model explained.
        image_tokens: For text-text bi-encoders, the second sentence's tokens (the "patches").
        image_text: For text-text bi-encoders, the second sentence.
        image_offsets: Character spans of ``image_tokens``.
        text_image: For image–image pairs (``dualex.explain(..., modalities=("image", "image"))``), the first
            side's model-input image, uint8 ``(H, W, 3)``: its hidden positions are the rows (``tokens`` names
            them, prefix positions are special) and ``text_grid`` their patch grid.
        text_grid: ``(rows, cols)`` patch grid of the first side when it is an image (else None).
        diagnostics: Method-specific quality figures (e.g. ``r2`` of a surrogate fit, ``delta``).
        stderr: Standard error of each estimated term, keyed by term field (``cross``,
            ``text_main``, ...; same shape as the term), for sampled methods; empty otherwise. Summaries
            (``se_total``, ``se_rel_top``, ``significant_share``, ``budget_hint``) are in ``diagnostics``.
        pieces: The S raw tokenizer pieces (``"a</w>"``, ``"Ġphoto"``); files from before 0.3 stored these
            as ``tokens`` and load with ``tokens`` turned into display strings.
        image_pieces: For text-text bi-encoders, the raw pieces of ``image_tokens`` (which, like ``tokens``,
            are display strings).
        reference_terms: The parts of the similarity that no interaction carries, in ``units``
            (ij: ``text_x_image_reference`` = e_tᵀr_i/(‖e_t‖‖e_i‖), ``text_reference_x_image`` = r_tᵀe_i/…,
            ``reference_x_reference`` = −r_tᵀr_i/…, and ``bias`` for ``units="score"``); see
            `decomposition`. Empty where a method reports none.
    """

    cross: Tensor | None
    tokens: list[str]
    special: Tensor
    text: str
    grid: tuple[int, int]
    score: float
    cosine: float
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    token_offsets: list[tuple[int, int] | None] = field(default_factory=list)
    image_size: tuple[int, int] | None = None
    image_transform: ImageTransform | None = None
    image: Tensor | None = None
    cross_prefix: Tensor | None = None
    text_pairs: Tensor | None = None
    image_pairs: Tensor | None = None
    text_main: Tensor | None = None
    image_main: Tensor | None = None
    target: float | None = None
    baseline: float = 0.0
    intercept: float = 0.0
    model: str = ""
    image_tokens: list[str] | None = None
    image_text: str | None = None
    text_image: Tensor | None = None
    text_grid: tuple[int, int] | None = None
    image_offsets: list[tuple[int, int] | None] | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)
    stderr: dict[str, Tensor] = field(default_factory=dict)
    reference_terms: dict[str, float] = field(default_factory=dict)
    pieces: list[str] | None = None
    image_pieces: list[str] | None = None

    def __post_init__(self) -> None:
        self.special = self.special.bool().cpu()
        S, P = len(self.tokens), self.grid[0] * self.grid[1]
        if self.special.shape != (S,):
            raise ValueError(f"special must have shape ({S},), got {tuple(self.special.shape)}")
        if not self.token_offsets:
            self.token_offsets = [None] * S
        if self.pieces is None:  # given raw pieces as tokens (files before 0.3, hand-built explanations)
            from dualex.bytelevel import display_tokens

            self.pieces = list(self.tokens)
            self.tokens = display_tokens(self.pieces, text=self.text, offsets=list(self.token_offsets),
                                         special=self.special.tolist())  # fmt: skip
        elif len(self.pieces) != S:
            raise ValueError(f"pieces must list one raw piece per token ({S}), got {len(self.pieces)}")
        if self.image_tokens is not None and self.image_pieces is None:  # a bi-encoder's second sentence
            from dualex.bytelevel import display_tokens

            n = len(self.image_tokens)
            self.image_pieces = list(self.image_tokens)
            self.image_tokens = display_tokens(self.image_pieces, text=self.image_text or "",
                                               offsets=list(self.image_offsets or [None] * n),
                                               special=[False] * n)  # fmt: skip
        expected = {
            "cross": (S, P),
            "text_pairs": (S, S),
            "image_pairs": (P, P),
            "text_main": (S,),
            "image_main": (P,),
        }
        for name, shape in expected.items():
            t = getattr(self, name)
            if t is not None:
                t = t.detach().float().cpu()
                if tuple(t.shape) != shape:
                    raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
                setattr(self, name, t)
        if self.cross_prefix is not None:
            self.cross_prefix = self.cross_prefix.detach().float().cpu()
        stderr = {}
        for name, t in (self.stderr or {}).items():
            ref = getattr(self, name, None) if name in TERM_FIELDS else None
            if ref is None:
                raise ValueError(f"stderr[{name!r}] has no matching attribution term")
            t = t.detach().float().cpu()
            if t.shape != ref.shape:
                raise ValueError(f"stderr[{name!r}] must have shape {tuple(ref.shape)}, got {tuple(t.shape)}")
            stderr[name] = t
        self.stderr = stderr
        self.reference_terms = {str(k): float(v) for k, v in (self.reference_terms or {}).items()}

    # ------------------------------------------------------------------ basic views
    @property
    def n_tokens(self) -> int:
        """Number of caption positions S (special ones included)."""
        return len(self.tokens)

    @property
    def n_patches(self) -> int:
        """Number of patches P (rows × cols of the grid)."""
        return self.grid[0] * self.grid[1]

    @property
    def units(self) -> str:
        """Units of the attribution terms: ``"cosine"`` or ``"score"`` (``params["units"]``, default score)."""
        return str(self.params.get("units", "score"))

    @property
    def players(self) -> Tensor:
        """Caption positions that are players, ``(k,)`` long."""
        return torch.nonzero(~self.special, as_tuple=False).flatten()

    def words(self) -> list[str]:
        """Display form of each token (the same as `tokens` since 0.3; kept for older code)."""
        return list(self.tokens)

    def span(self, span: Span, *, occurrence: int = 0) -> Tensor:
        """Token positions named by ``span`` (words, ``(start, stop)`` range, indices or bool mask)."""
        return span_positions(
            span,
            text=self.text,
            tokens=self.tokens,
            special=self.special,
            offsets=self.token_offsets,
            occurrence=occurrence,
        )

    def patches(self, region: Any) -> Tensor:
        """Patch mask ``(rows, cols)`` bool for a box ``(x0, y0, x1, y1)`` in original-image pixels,
        a list of boxes (union), or a bool mask. For bi-encoders, ``region`` may name words of the
        second sentence."""
        if self.image_tokens is not None and (isinstance(region, str) or _is_int_range(region)):
            pos = span_positions(
                region,
                text=self.image_text or "",
                tokens=self.image_tokens,
                special=torch.zeros(len(self.image_tokens), dtype=torch.bool),
                offsets=self.image_offsets or [None] * len(self.image_tokens),
            )
            m = torch.zeros(self.n_patches, dtype=torch.bool)
            m[pos] = True
            return m.reshape(self.grid)
        return as_patch_mask(region, grid=self.grid, transform=self.image_transform)

    # ------------------------------------------------------------------ conditional maps
    def image_map(self, span: Span = None, *, occurrence: int = 0) -> Tensor:
        """Image map conditioned on a caption span: ``Σ_{s∈span} cross[s]``, shape ``(rows, cols)``.

        With ``span=None`` all caption players are used. First-order explanations (no ``cross``)
        return ``image_main`` for ``span=None`` and raise otherwise.
        """
        if self.cross is None:
            if span is not None:
                raise InputError(f"method {self.method!r} gives no token × patch interactions, so no span map")
            if self.image_main is None:
                raise InputError("this explanation has no image-side attributions")
            return self.image_main.reshape(self.grid)
        pos = self.span(span, occurrence=occurrence)
        return self.cross[pos].sum(0).reshape(self.grid)

    def text_scores(self, box: Any = None) -> Tensor:
        """Caption scores conditioned on an image region: ``Σ_{p∈box} cross[:, p]``, shape ``(S,)``.

        ``box`` is ``(x0, y0, x1, y1)`` in original-image pixels, a list of boxes, or a patch mask;
        None means all patches. Special positions are set to 0.
        """
        if self.cross is None:
            if box is not None:
                raise InputError(f"method {self.method!r} gives no token × patch interactions, so no box scores")
            if self.text_main is None:
                raise InputError("this explanation has no text-side attributions")
            return self.text_main.masked_fill(self.special, 0.0)
        cols = slice(None) if box is None else self.patches(box).flatten()
        out = self.cross[:, cols].sum(1)
        return out.masked_fill(self.special, 0.0)

    def image_map_error(self, span: Span = None, *, occurrence: int = 0) -> Tensor | None:
        """Standard-error bound of `image_map`: ``Σ_{s∈span} stderr["cross"][s]``, ``(rows, cols)``.

        The standard deviation of a sum is at most the sum of the standard deviations, so this bounds the
        error of a span map (it is exact for a single token); ``inf`` where a term has no finite error.
        None when the explanation has no standard errors.
        """
        if self.cross is None:
            se = self.stderr.get("image_main")
            return None if se is None or span is not None else se.reshape(self.grid)
        se = self.stderr.get("cross")
        if se is None:
            return None
        return se[self.span(span, occurrence=occurrence)].sum(0).reshape(self.grid)

    def text_image_map(self, box: Any = None) -> Tensor:
        """For image–image pairs: `text_scores` of the first image's patches as a ``(rows, cols)`` map.

        Raises:
            InputError: the first side is not an image.
        """
        if self.text_grid is None:
            raise InputError("the first side of this explanation is a caption; use text_scores()")
        return self.text_scores(box)[self.players].reshape(self.text_grid)

    def text_scores_error(self, box: Any = None) -> Tensor | None:
        """Standard-error bound of `text_scores` (sum of the errors over the box's patches), ``(S,)``."""
        if self.cross is None:
            se = self.stderr.get("text_main")
            return None if se is None or box is not None else se.masked_fill(self.special, 0.0)
        se = self.stderr.get("cross")
        if se is None:
            return None
        cols = slice(None) if box is None else self.patches(box).flatten()
        return se[:, cols].sum(1).masked_fill(self.special, 0.0)

    def first_order(self, p: float | None = None) -> tuple[Tensor, Tensor]:
        """Per-part scores ``(text (S,), image (P,))``.

        With main effects (game-theoretic methods): ``main_i + p · Σ_j pair_ij`` over all pairs the
        part is in (cross and intra-modal), the weighted Banzhaf conversion (``p`` defaults to the
        method's ``p``, else 0.5 = Shapley/Banzhaf). Without main effects (integrated Jacobians): the
        marginal sums of ``cross`` (each interaction shared by both of its parts is counted fully
        on each side, so each side sums to the attributed total).
        """
        S, P = self.n_tokens, self.n_patches
        text = torch.zeros(S)
        image = torch.zeros(P)
        has_main = self.text_main is not None or self.image_main is not None
        if has_main:
            w = float(p if p is not None else self.params.get("p", 0.5))
            if self.text_main is not None:
                text += self.text_main
            if self.image_main is not None:
                image += self.image_main
        else:
            w = 1.0
        if self.cross is not None:
            text += w * self.cross.sum(1)
            image += w * self.cross.sum(0)
        if self.text_pairs is not None:
            text += w * self.text_pairs.sum(1)
        if self.image_pairs is not None:
            image += w * self.image_pairs.sum(1)
        if self.cross_prefix is not None and not has_main:
            text += self.cross_prefix.sum(1)
        return text.masked_fill(self.special, 0.0), image

    # ------------------------------------------------------------------ completeness
    def total(self) -> float:
        """Sum of all attribution terms (each pair once) plus the intercept."""
        t = self.intercept
        for name in ("cross", "cross_prefix", "text_main", "image_main"):
            v = getattr(self, name)
            if v is not None:
                t += float(v.double().sum())
        for name in ("text_pairs", "image_pairs"):
            v = getattr(self, name)
            if v is not None:
                t += float(torch.triu(v.double(), diagonal=1).sum())
        return t

    def completeness(self) -> dict[str, float]:
        """How well the terms add up to ``target``.

        Returns:
            ``attributed`` (sum of all terms), ``target``, ``error`` (attributed − target),
            ``relative_error`` (|error| / |target|), ``score``, ``baseline``, and the method's
            diagnostics (e.g. ``r2`` for surrogate fits).
        """
        core = self.completeness_terms()
        out: dict[str, float] = {"attributed": core[0], "score": self.score, "baseline": self.baseline}
        if self.target is not None:
            out.update(target=core[1], error=core[2], relative_error=core[3])
        out.update({k: float(v) for k, v in self.diagnostics.items()})
        return out

    def completeness_terms(self) -> tuple[float, float, float, float]:
        """``(attributed, target, error, relative_error)`` (the last three NaN without a target).

        The one place completeness is computed: ``error = attributed − target``, ``relative_error =
        |error| / |target|`` (``|target|`` floored at 1e-12).
        """
        attributed = self.total()
        if self.target is None:
            nan = float("nan")
            return attributed, nan, nan, nan
        target = float(self.target)
        err = attributed - target
        return attributed, target, err, abs(err) / max(abs(target), 1e-12)

    def decomposition(self) -> dict[str, float]:
        """The model's similarity (in ``units``) split into parts that add up to it exactly.

        ``similarity = attributed − method_error + Σ reference_terms`` for methods that report reference
        terms (ij: the interactions, minus the integration error, plus e_tᵀr_i, r_tᵀe_i and −r_tᵀr_i
        over ‖e_t‖‖e_i‖, plus the bias in score units), else ``similarity = attributed − method_error +
        baseline`` (FIxLIP: ``baseline`` = v(∅), ``method_error`` = surrogate total − (v(N) − v(∅))).

        Returns:
            ``similarity`` (cosine or score, as ``units``), ``attributed`` (Σ terms + intercept),
            ``method_error`` (attributed − what the terms should add up to: integration or fit error;
            0 when the method claims no target), the reference terms or ``baseline``, and ``residual``
            (similarity − the sum of the parts; float rounding only).
        """
        cosine_units = self.units == "cosine"
        similarity = self.cosine if cosine_units else self.score
        attributed = self.total()
        if self.reference_terms:
            err = float(self.diagnostics.get("convergence_delta", 0.0))
            parts = dict(self.reference_terms)
        else:
            err = attributed - self.target if self.target is not None else 0.0
            parts = {"baseline": float(self.baseline)}
        out = {"similarity": similarity, "attributed": attributed, "method_error": err, **parts}
        out["residual"] = similarity - (attributed - err + sum(parts.values()))
        return out

    # ------------------------------------------------------------------ persistence
    def to_metadata(self) -> dict[str, Any]:
        """The non-tensor fields as JSON-ready metadata (the header of a saved file)."""
        meta: dict[str, Any] = {"format": "dualex.explanation", "version": FORMAT_VERSION}
        for f in fields(self):
            if f.name in _TENSOR_FIELDS or f.name == "stderr":
                continue
            v = getattr(self, f.name)
            if isinstance(v, ImageTransform):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            meta[f.name] = v
        return meta

    def tensors(self) -> dict[str, Tensor]:
        """The tensor fields (and ``stderr.<term>`` errors) by name, contiguous on CPU, as saved."""
        out = {}
        for name in _TENSOR_FIELDS:
            v = getattr(self, name)
            if v is not None:
                out[name] = v.contiguous().cpu()
        for name, v in self.stderr.items():
            out[STDERR_PREFIX + name] = v.contiguous().cpu()
        return out

    def save(self, path: str | Path) -> Path:
        """Write one ``.safetensors`` file: tensors plus JSON metadata in its header (no pickle).

        The metadata carries two SHA-256 checksums, both checked by `load`: ``checksum`` over the tensors
        (`tensor_checksum`) and ``metadata_checksum`` over the metadata itself (caption, tokens, score,
        params, ...; `metadata_checksum`), so an edited header is refused like a damaged tensor. The file
        is written to a temporary name and renamed, so a crash never leaves half a file; it gets the
        permissions of any new file (``0o666`` less the umask, ``0o644`` usually), like the figures.
        """
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tensors = self.tensors()
        tensors["special"] = tensors["special"].to(torch.uint8)
        meta = _jsonable(self.to_metadata())
        meta[METADATA_CHECKSUM] = metadata_checksum(meta)
        meta["checksum"] = tensor_checksum(tensors)
        save_file(tensors, str(tmp), metadata={"dualex": json.dumps(meta)})
        _make_readable(tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Explanation:
        """Read a file written by `save`, checking it.

        Raises:
            InputError: naming the file and the problem: missing or unreadable file, no or invalid
                dualex metadata, an unknown format version, a missing field or one of the wrong type,
                tensors that do not match the checksum or the token count, NaN or infinite values.
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise InputError(f"explanation file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta_raw = (f.metadata() or {}).get("dualex")
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        except Exception as exc:
            raise InputError(f"{path} is not a dualex explanation file ({exc})") from None
        if meta_raw is None:
            raise InputError(f"{path} has no dualex metadata; was it written by Explanation.save?")
        try:
            meta = json.loads(meta_raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: its dualex metadata is not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise InputError(f"{path}: its dualex metadata is a JSON {type(meta).__name__}, not an object")
        checksum = meta.pop("checksum", None)
        if checksum is not None and checksum != tensor_checksum(tensors):
            raise InputError(f"{path}: the tensors do not match the stored checksum; the file was damaged or edited")
        meta_sum = meta.pop(METADATA_CHECKSUM, None)
        try:
            ex = cls.from_parts(meta, tensors)
        except (InputError, ValueError, TypeError, KeyError) as exc:
            raise InputError(f"{path}: {exc}") from None
        # Files written before dualex 0.3 carry no metadata checksum: they load with their tensors checked.
        if meta_sum is not None and meta_sum != metadata_checksum(meta):
            raise InputError(
                f"{path}: the metadata (caption, tokens, score, ...) does not match its stored checksum; "
                "the file's header was damaged or edited"
            )
        return ex

    @classmethod
    def from_parts(cls, meta: dict[str, Any], tensors: dict[str, Tensor]) -> Explanation:
        """An `Explanation` from stored metadata and tensors, checking their fields and types.

        Raises:
            InputError: wrong format or version, a missing field, a field of the wrong type, a token
                count that does not match the tensors, NaN or infinite values.
        """
        meta = dict(meta)
        meta.pop("checksum", None)
        meta.pop(METADATA_CHECKSUM, None)
        fmt = meta.pop("format", "dualex.explanation")
        if fmt != "dualex.explanation":
            raise InputError(f"format {fmt!r} is not a dualex explanation")
        version = meta.pop("version", FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
            hint = " (newer than this dualex: upgrade dualex)" if newer else ""
            raise InputError(
                f"unknown explanation format version {version!r}{hint}; this dualex reads {FORMAT_VERSION}"
            )
        _check_metadata(meta, tensors)
        if meta.get("image_transform") is not None:
            meta["image_transform"] = ImageTransform.from_dict(meta["image_transform"])
        for key in ("grid", "image_size", "text_grid"):
            if meta.get(key) is not None:
                meta[key] = tuple(meta[key])
        for key in ("token_offsets", "image_offsets"):
            if meta.get(key) is not None:
                meta[key] = [tuple(o) if o is not None else None for o in meta[key]]
        if isinstance(meta.get("diagnostics"), dict):  # non-finite values are stored as null
            meta["diagnostics"] = {k: math.nan if v is None else float(v) for k, v in meta["diagnostics"].items()}
        kwargs = {**meta, **{k: v for k, v in tensors.items() if k in _TENSOR_FIELDS}}
        kwargs["stderr"] = {k[len(STDERR_PREFIX) :]: v for k, v in tensors.items() if k.startswith(STDERR_PREFIX)}
        kwargs["special"] = kwargs["special"].bool()
        kwargs.setdefault("cross", None)  # first-order explanations store no cross tensor
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in kwargs.items() if k in known})

    def to_json_dict(self, *, include_image: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (lists of floats) for the CLI's ``--json`` and the viewer."""
        d: dict[str, Any] = _jsonable(self.to_metadata())
        d["stderr"] = {}
        tensors = self.tensors()
        if not include_image:
            tensors.pop("image", None)  # the stored pixels
        for name, t in tensors.items():
            if name.startswith(STDERR_PREFIX):
                d["stderr"][name[len(STDERR_PREFIX) :]] = _jsonable(t.tolist())  # inf (not identified) -> null
                continue
            d[name] = t.tolist()
        d["words"] = self.words()
        d["completeness"] = _jsonable(self.completeness())
        d["decomposition"] = _jsonable(self.decomposition())
        return d

    # ------------------------------------------------------------------ plots
    def plot(self, spans: list[Span] | None = None, boxes: list[Any] | None = None, **kwargs: Any) -> Any:
        """Paper-style figure: per span an image heatmap over the photo, per box a coloured caption.

        Red is positive, blue negative; colour ranges are symmetric around zero. Returns a
        matplotlib ``Figure``. See `dualex.plotting.plot_explanation` for options.
        """
        from dualex.plotting import plot_explanation

        return plot_explanation(self, spans=spans, boxes=boxes, **kwargs)

    def plot_pairs(self, k: int = 10, **kwargs: Any) -> Any:
        """The ``k`` strongest token × patch interactions as sign-coloured links from caption words to image
        patches (red raises the similarity, blue lowers it). Returns a matplotlib ``Figure``; see
        `dualex.plotting.plot_pairs` for options."""
        from dualex.plotting import plot_pairs

        return plot_pairs(self, k, **kwargs)

    def key_numbers(self, *, top: int = 5) -> list[tuple[str, Any]]:
        """``(name, value)`` rows a reader checks first: pair, score, units, completeness, strongest pairs.

        The notebook display (`_repr_html_`) shows them beside the figure.
        """
        rows: list[tuple[str, Any]] = [("method", self.method)]
        if self.model:
            rows.append(("model", self.model))
        rows.append(("caption", self.text))
        if self.image_text is not None:
            rows.append(("second sentence", self.image_text))
        rows += [("score", self.score), ("cosine", self.cosine), ("units", self.units),
                 ("tokens × patches", f"{self.n_tokens} × {self.n_patches} (grid {self.grid[0]}×{self.grid[1]})")]
        c = self.completeness()
        rows.append(("attributed (Σ terms)", c["attributed"]))
        if self.target is not None:
            rows += [("target", c["target"]), ("completeness error", c["error"])]
        for key in ("se_rel_top", "r2", "relative_delta"):
            if key in self.diagnostics:
                rows.append((key, float(self.diagnostics[key])))
        if self.cross is not None:
            from dualex.plotting import top_pairs

            words, cols = self.words(), self.grid[1]
            for s, p, v in top_pairs(self, top):
                where = (self.image_tokens[p] if self.image_tokens is not None and p < len(self.image_tokens)
                         else f"patch (row {p // cols}, col {p % cols})")
                rows.append((f"{words[s].strip()!r} × {where}", v))
        return rows

    def _repr_html_(self) -> str:
        """Notebook display: the default figure (whole-caption image map, caption coloured over the whole
        image) beside the key numbers (`key_numbers`)."""
        from dualex.plotting import figure_html, html_table

        try:
            figure = figure_html(self.plot(title=False), dpi=72)
        except Exception as exc:  # a figure that cannot be drawn must not hide the numbers
            figure = f"<p>(no figure: {type(exc).__name__}: {exc})</p>"
        table = html_table(self.key_numbers(), caption=f"Explanation ({self.method})")
        return (f"<div style='display:flex;gap:1em;align-items:flex-start'><div>{figure}</div>"
                f"<div>{table}</div></div>")

    def __repr__(self) -> str:
        parts = [f"method={self.method!r}", f"tokens={self.n_tokens}", f"grid={self.grid}", f"score={self.score:.4g}"]
        if self.target is not None:
            parts.append(f"target={self.target:.4g}")
        return f"Explanation({', '.join(parts)})"


def metadata_checksum(meta: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` over the JSON metadata of a file (keys sorted; the checksum keys left out).

    ``meta`` is the metadata as stored (after `_jsonable`, or as `json.loads` reads it back): Python's
    JSON writes every float so that it reads back exactly, so the checksum of the stored and the
    reloaded dict agree.
    """
    import hashlib

    plain = {k: v for k, v in meta.items() if k not in ("checksum", METADATA_CHECKSUM)}
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _make_readable(path: Path) -> None:
    """Give a file the permissions of an ordinary new file (``0o666`` less the umask)."""
    import os
    import re

    try:  # Linux names the umask in /proc; reading it there leaves the process's umask alone
        found = re.search(r"^Umask:\s*([0-7]+)", Path("/proc/self/status").read_text(), re.MULTILINE)
        umask = int(found.group(1), 8) if found else None
    except OSError:
        umask = None
    if umask is None:
        umask = os.umask(0o022)
        os.umask(umask)
    path.chmod(0o666 & ~umask)


def tensor_checksum(tensors: dict[str, Tensor]) -> str:
    """``"sha256:<hex>"`` over the names, dtypes, shapes and bytes of ``tensors`` (in name order)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


_NUMBER = (int, float)


def _is_number(v: Any) -> bool:
    return isinstance(v, _NUMBER) and not isinstance(v, bool)


def _check_metadata(meta: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Field presence and types of stored metadata; finite, floating attribution tensors."""
    for key in ("tokens", "text", "grid", "score", "cosine", "method"):
        if key not in meta:
            raise InputError(f"the metadata has no {key!r} field")
    if "special" not in tensors:
        raise InputError("the file has no 'special' tensor")
    tokens = meta["tokens"]
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise InputError("'tokens' must be a list of strings")
    for key in ("text", "method"):
        if not isinstance(meta[key], str):
            raise InputError(f"{key!r} must be a string, got {type(meta[key]).__name__}")
    for key in ("model", "image_text"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise InputError(f"{key!r} must be a string, got {type(meta[key]).__name__}")
    grid = meta["grid"]
    if not (isinstance(grid, list) and len(grid) == 2 and all(isinstance(g, int) and g > 0 for g in grid)):
        raise InputError(f"'grid' must be two positive integers, got {grid!r}")
    for key in ("score", "cosine"):
        if not _is_number(meta[key]):
            raise InputError(f"{key!r} must be a number, got {meta[key]!r}")
    for key in ("target", "baseline", "intercept"):
        if meta.get(key) is not None and not _is_number(meta[key]):
            raise InputError(f"{key!r} must be a number, got {meta[key]!r}")
    for key in ("params", "diagnostics"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise InputError(f"{key!r} must be an object, got {type(meta[key]).__name__}")
    if any(v is not None and not _is_number(v) for v in (meta.get("diagnostics") or {}).values()):
        raise InputError("'diagnostics' must map names to numbers")
    S = len(tokens)
    if int(tensors["special"].numel()) != S:
        raise InputError(f"{S} tokens but a 'special' tensor of {int(tensors['special'].numel())} entries")
    pieces = meta.get("pieces")
    if pieces is not None and (not isinstance(pieces, list) or len(pieces) != len(tokens)
                               or not all(isinstance(t, str) for t in pieces)):  # fmt: skip
        raise InputError("'pieces' must be a list of strings, one per token")
    image_pieces, image_tokens = meta.get("image_pieces"), meta.get("image_tokens")
    if image_pieces is not None and (not isinstance(image_pieces, list) or not isinstance(image_tokens, list)
                                     or len(image_pieces) != len(image_tokens)
                                     or not all(isinstance(t, str) for t in image_pieces)):  # fmt: skip
        raise InputError("'image_pieces' must be a list of strings, one per second-sentence token")
    for key, n in (("token_offsets", S), ("image_offsets", len(meta.get("image_tokens") or []))):
        offs = meta.get(key)
        if offs is None:
            continue
        if not isinstance(offs, list) or (offs and len(offs) != n):
            raise InputError(f"{key!r} must list one character span per token ({n})")
        if not all(o is None or (isinstance(o, list) and len(o) == 2 and all(isinstance(v, int) for v in o))
                   for o in offs):  # fmt: skip
            raise InputError(f"{key!r} entries must be [start, end] or null")
    if any(not _is_number(v) for v in (meta.get("reference_terms") or {}).values()):
        raise InputError("'reference_terms' must map names to numbers")
    for name, t in tensors.items():
        if name.startswith(STDERR_PREFIX):  # standard errors: ≥ 0, inf where a term is not identified
            if name[len(STDERR_PREFIX) :] not in tensors or not t.is_floating_point():
                raise InputError(f"tensor {name!r} must be floating point and belong to a stored term")
            if bool(torch.isnan(t).any()) or bool((t < 0).any()):
                raise InputError(f"tensor {name!r} holds NaN or negative standard errors")
            continue
        if name not in _ATTRIBUTION_FIELDS:
            continue
        if not t.is_floating_point():
            raise InputError(f"tensor {name!r} must hold floating-point values, got {t.dtype}")
        if not bool(torch.isfinite(t).all()):
            raise InputError(f"tensor {name!r} holds NaN or infinite values")


def _is_int_range(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and all(isinstance(v, int) for v in x)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Tensor):
        return x.tolist()
    if hasattr(x, "item") and callable(x.item):
        return x.item()
    return x
