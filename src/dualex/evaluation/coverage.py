"""Coverage: which model families load and explain with which methods, measured on tiny random models.

`run_coverage` builds one tiny random model per family (`dualex.testing.TINY_FAMILIES`), explains one
pair with each method of `COVERAGE_METHODS`, and records per cell ``"ok"`` (finite and not all zero),
``"unsupported"`` (the method refused the model with one `UnsupportedModelError` line, which is kept) or
``"failed"`` (any other error, or non-finite or all-zero results). `census_openclip` counts, per tower
family, the open_clip architectures dualex accepts: each architecture is shrunk
(`dualex.tiny.tiny_openclip_arch`) and wrapped with a local tokenizer. `render_table` writes both as the
README's supported-models table (`update_readme` replaces it between two marker comments), so the table
is generated, never hand-kept (``python scripts/coverage.py``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dualex.errors import DualexError, UnsupportedModelError
from dualex.models.base import DualEncoder

COVERAGE_METHODS: dict[str, dict[str, Any]] = {
    "ij": {"n_steps": 4},
    "fixlip": {"budget": 64},
    "gradxinput": {},
    "grad_eclip": {},
    "rollout": {},
}
"""Methods the coverage run tries, with small options (random weights: only whether they run counts)."""

START, END = "<!-- coverage:start -->", "<!-- coverage:end -->"


@dataclass
class Cell:
    """One family × method result: ``status`` is ``"ok"``, ``"unsupported"`` or ``"failed"``."""

    status: str
    note: str = ""
    seconds: float = 0.0


@dataclass
class FamilyResult:
    """The methods' results on one family's tiny model."""

    family: str
    model: str
    cells: dict[str, Cell] = field(default_factory=dict)


def _values(ex: Any) -> list[torch.Tensor]:
    out = []
    for name in ("cross", "text_main", "image_main"):
        v = getattr(ex, name, None)
        if isinstance(v, torch.Tensor):
            out.append(v.detach().float())
    return out


def run_cell(model: DualEncoder, second: Any, caption: str, method: str, options: dict[str, Any]) -> Cell:
    """Explain one pair with ``method`` and judge the result (see the module docstring)."""
    from dualex.methods import explain

    start = time.perf_counter()
    try:
        ex = explain(model, second, caption, method=method, **options)
    except UnsupportedModelError as exc:
        return Cell("unsupported", _first_line(exc), time.perf_counter() - start)
    except (DualexError, RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        return Cell("failed", f"{type(exc).__name__}: {_first_line(exc)}", time.perf_counter() - start)
    secs = time.perf_counter() - start
    values = _values(ex)
    if not values:
        return Cell("failed", "no attribution tensors", secs)
    if not all(bool(torch.isfinite(v).all()) for v in values):
        return Cell("failed", "non-finite values", secs)
    if not any(float(v.abs().sum()) > 0 for v in values):
        return Cell("failed", "all values are zero", secs)
    return Cell("ok", "", secs)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def run_coverage(
    families: dict[str, Callable[[], DualEncoder]] | None = None,
    methods: dict[str, dict[str, Any]] | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> list[FamilyResult]:
    """Every family × method on tiny random models (defaults: `TINY_FAMILIES` × `COVERAGE_METHODS`)."""
    from dualex.testing import TINY_FAMILIES, tiny_pair_inputs

    families = TINY_FAMILIES if families is None else families
    methods = COVERAGE_METHODS if methods is None else methods
    out: list[FamilyResult] = []
    for key, factory in families.items():
        model = factory()
        second, captions = tiny_pair_inputs(model)
        res = FamilyResult(key, model.name)
        for method, options in methods.items():
            cell = run_cell(model, second[0], captions[0], method, options)
            # one note for many families: the model's name and family left out
            cell.note = cell.note.replace(f" ({model.family})", "").replace(model.name, "the model")
            res.cells[method] = cell
            if log is not None:
                c = res.cells[method]
                log(f"{key:40s} {method:12s} {c.status:12s} {c.seconds:6.2f}s {c.note}")
        out.append(res)
    return out


# ---------------------------------------------------------------------------------------------- open_clip
@dataclass
class Census:
    """open_clip architectures by tower family: the accepted ones and the refused ones with reasons."""

    accepted: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def n_accepted(self) -> int:
        """Number of accepted entries, over all groups."""
        return sum(len(v) for v in self.accepted.values())

    @property
    def n_total(self) -> int:
        """Number of entries, accepted and refused."""
        return self.n_accepted + sum(len(v) for v in self.refused.values())


def tower_family(cfg: dict[str, Any]) -> str:
    """A short name for the image + text tower kind of an open_clip model config."""
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    if "multimodal_cfg" in cfg:
        image = "CoCa"
    elif v.get("timm_model_name"):
        image = "timm " + _timm_kind(v["timm_model_name"])
    elif isinstance(v.get("layers"), (list, tuple)):
        image = "ModifiedResNet"
    else:
        image = "ViT" + (" (avg-pooled)" if v.get("pool_type") == "avg" else "")
    if t.get("hf_model_name"):
        text = "HF text tower"
    elif t.get("hf_tokenizer_name"):
        text = "hub tokenizer"
    else:
        text = "CLIP BPE"
    return f"{image} / {text}"


def _timm_kind(name: str) -> str:
    for prefix, kind in (
        ("convnext", "ConvNeXt"),
        ("eva02", "EVA-02"),
        ("eva", "EVA-01"),
        ("vit_pe_core", "PE-Core"),
        ("fastvit", "FastViT"),
        ("swin", "Swin"),
        ("vitamin", "ViTamin"),
        ("vit_base_mci", "MCi ViT"),
        ("vit_relpos", "relpos ViT"),
        ("vit", "ViT"),
    ):
        if name.startswith(prefix):
            return kind
    return name.split("_")[0]


def census_openclip(archs: Iterable[str] | None = None, *, log: Callable[[str], None] | None = None) -> Census:
    """Wrap a tiny copy of every open_clip architecture (or ``archs``) with a local tokenizer."""
    import open_clip

    from dualex.testing import tiny_openclip_family

    census = Census()
    for arch in archs if archs is not None else open_clip.list_models():
        cfg = open_clip.get_model_config(arch)
        fam = tower_family(cfg)
        try:
            model = tiny_openclip_family(arch)
            pair = model.prepare(*_one_pair())
            with torch.no_grad():
                s = model.score(pair).score
            if not bool(torch.isfinite(s).all()):
                raise ValueError("non-finite score")
            census.accepted.setdefault(fam, []).append(arch)
        except (DualexError, RuntimeError, ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
            census.refused.setdefault(fam, []).append((arch, f"{type(exc).__name__}: {_first_line(exc)}"))
        if log is not None:
            log(f"{arch:45s} {fam:40s} {'ok' if arch in census.accepted.get(fam, []) else 'refused'}")
    return census


def _one_pair() -> tuple[list[Any], list[str]]:
    from dualex.testing import random_image

    return [random_image(1)], ["a red dog"]


# ---------------------------------------------------------------------------------------------- rendering
MARK = {"ok": "✓", "unsupported": "—", "failed": "✗"}


def render_table(results: Sequence[FamilyResult], census: Census | None = None) -> str:
    """The README's coverage section (Markdown): the family × method table, its notes, and the census."""
    methods = list(results[0].cells) if results else []
    lines = [
        "Generated by `python scripts/coverage.py` on tiny random models (one per family, `dualex.testing."
        "TINY_FAMILIES`): ✓ = explains with finite, non-zero results; — = the method does not apply (note "
        "below); ✗ = fails.",
        "",
        "| family (tiny model) | " + " | ".join(f"`{m}`" for m in methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    notes: dict[str, int] = {}
    for r in results:
        cells = []
        for m in methods:
            c = r.cells[m]
            mark = MARK[c.status]
            if c.note:
                idx = notes.setdefault(c.note, len(notes) + 1)
                mark += f" [{idx}]"
            cells.append(mark)
        lines.append(f"| `{r.family}` | " + " | ".join(cells) + " |")
    if notes:
        lines.append("")
        for note, idx in notes.items():
            lines.append(f"[{idx}] {_md(note)}  ")
    if census is not None:
        lines += [
            "",
            f"open_clip architectures (tiny copies, local tokenizer): {census.n_accepted} of {census.n_total} "
            "load and score.",
            "",
            "| image / text tower | accepted | refused (reason) |",
            "|---|---|---|",
        ]
        for fam in sorted(set(census.accepted) | set(census.refused)):
            ok = census.accepted.get(fam, [])
            bad = census.refused.get(fam, [])
            reason = _md(bad[0][1]) if bad else ""
            lines.append(f"| {fam} | {len(ok)} | {len(bad)}{f' ({reason})' if bad else ''} |")
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def update_readme(path: str | Path, table: str) -> bool:
    """Replace the text between the coverage markers of ``path`` with ``table``; True if it changed.

    Raises:
        ValueError: the file lacks the markers.
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise ValueError(f"{p} has no {START} ... {END} section to fill")
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: f"{START}\n{table}\n{END}", text, flags=re.S)
    if new != text:
        p.write_text(new, encoding="utf-8")
    return new != text


def summary_counts(results: Sequence[FamilyResult]) -> dict[str, int]:
    """How many cells have each status."""
    counts: dict[str, int] = {"ok": 0, "unsupported": 0, "failed": 0}
    for r in results:
        for c in r.cells.values():
            counts[c.status] += 1
    return counts


__all__ = [
    "COVERAGE_METHODS",
    "Cell",
    "Census",
    "FamilyResult",
    "census_openclip",
    "render_table",
    "run_cell",
    "run_coverage",
    "summary_counts",
    "tower_family",
    "update_readme",
]
