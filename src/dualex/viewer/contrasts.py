"""Saved contrasts for the viewer: folders written by `dualex.Contrast.save` (``dualex contrast``,
``dualex zero-shot``) under the served roots, and the JSON the contrast page draws from.

A contrast folder holds ``contrast.json`` with ``a.safetensors`` and ``b.safetensors``. Its public name is
the folder's path relative to its root (``label/path`` with several roots); the two files are resolved
through `dualex.viewer.catalog.Sources.resolve`, so a name cannot lead out of its root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dualex.decisions.contrast import Contrast
from dualex.viewer.catalog import Sources, _finite, _round, explanation_payload
from dualex.viewer.paths import relative_name

MAX_CONTRASTS = 2_000


def contrast_dirs(root: Path, *, limit: int = MAX_CONTRASTS) -> list[Path]:
    """Folders under ``root`` holding a ``contrast.json`` and both explanation files (hidden folders and
    symbolic links skipped), sorted."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        d = Path(dirpath)
        if "contrast.json" in filenames and {"a.safetensors", "b.safetensors"} <= set(filenames):
            out.append(d)
            if len(out) >= limit:
                break
    return sorted(out)


def list_contrasts(sources: Sources) -> list[dict[str, str]]:
    """``[{name, title}]`` of every saved contrast under the served roots (``title``: ``A vs B``)."""
    import json

    items = []
    for root in sources.roots:
        if root.only is not None:  # a single explanation file was served: no folders
            continue
        for d in contrast_dirs(root.path):
            rel = relative_name(root.path, d) if d != root.path else "."
            name = f"{root.label}/{rel}" if root.label else rel
            try:
                meta = json.loads((d / "contrast.json").read_text(encoding="utf-8"))
                labels = meta.get("labels") or ["A", "B"]
                title = f"{labels[0]} vs {labels[1]}"
            except (OSError, ValueError, TypeError, IndexError):
                title = name
            items.append({"name": name, "title": title})
    return items


def load_contrast(sources: Sources, name: str) -> dict[str, Any]:
    """The page's JSON of the contrast folder ``name``.

    Raises:
        dualex.viewer.paths.Forbidden: the name leads out of its root.
        dualex.viewer.paths.NotFound: no contrast there.
        InputError: the folder's files are damaged.
    """
    prefix = "" if name in ("", ".") else name.rstrip("/") + "/"
    root, a_path = sources.resolve(prefix + "a.safetensors")
    sources.resolve(prefix + "b.safetensors")
    con = Contrast.load(a_path.parent)
    out: dict[str, Any] = {
        "name": name,
        "labels": list(con.labels),
        "x_side": con.x_side,
        "method": con.method,
        "units": con.units,
        "difference": _finite(con.difference),
        "similarities": _finite(list(con.similarities)),
        "decomposition": _finite(con.decomposition()),
        "a": explanation_payload(con.a, sources.public_name(root, a_path)),
        "b": explanation_payload(con.b, sources.public_name(root, a_path.parent / "b.safetensors")),
    }
    out["difference_map" if con.axis.spatial else "difference_scores"] = _round(con.x_difference())
    return out


__all__ = ["contrast_dirs", "list_contrasts", "load_contrast"]
