"""``dualex export --html``: the viewer as one self-contained HTML file that works offline.

The page, its script and style, and every explanation (numbers as JSON, the image as a base64 PNG) are
inlined; a Content-Security-Policy in the page forbids loading anything from anywhere, so the file
behaves the same with no network at all.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dualex.errors import InputError
from dualex.viewer.catalog import Sources, group_entries
from dualex.viewer.server import static_text

EXPORT_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)
_STYLE_TAG = '<link rel="stylesheet" href="/static/viewer.css">'
_SCRIPT_TAG = '<script src="/static/viewer.js" defer></script>'


def _script_safe_json(data: Any) -> str:
    """JSON that cannot end its ``<script>`` element early (``<``, ``>``, ``&`` as unicode escapes)."""
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(data: dict[str, Any]) -> str:
    """The self-contained page for ``data = {"pairs": [...], "explanations": {file: payload}}``."""
    html = static_text("index.html")
    css = static_text("viewer.css")
    js = static_text("viewer.js")
    for text, what in ((css, "style"), (js, "script")):
        if f"</{what}" in text.lower():
            raise AssertionError(f"viewer {what} contains a closing </{what}> tag and cannot be inlined")
    if _STYLE_TAG not in html or _SCRIPT_TAG not in html:
        raise AssertionError("index.html no longer has the style/script tags the export replaces")
    head = (
        f'<meta http-equiv="Content-Security-Policy" content="{EXPORT_CSP}">\n'
        f"<style>\n{css}</style>"
    )
    body = (
        f'<script type="application/json" id="dualex-data">{_script_safe_json(data)}</script>\n'
        f"<script>\n{js}</script>"
    )
    return html.replace(_STYLE_TAG, head).replace(_SCRIPT_TAG, body)


def collect(
        source: str | Path | Sequence[str | Path],
        *,
        limit: int | None = 200,
        skipped: list[str] | None = None,
) -> dict[str, Any]:
    """Pairs and payloads of the explanation files at ``source`` (files, or directories recursively).

    A file that cannot be read (truncated, damaged, failing its checks) is left out with one warning
    line on stderr naming it and why, and its name is appended to ``skipped``.

    Args:
        source: An explanation ``.safetensors`` file or a directory holding some, or several of them
            (their file names are then prefixed by each root's label, as in ``dualex serve A B``).

        limit: At most this many files (the first ones in sorted order); None for all.

        skipped: If given, receives the names of the files left out.

    Raises:
        InputError: Nothing to export.
    """
    sources = Sources.open(source, verb="export")
    where = (str(Path(source).expanduser()) if isinstance(source, (str, Path))
             else ", ".join(str(Path(s).expanduser()) for s in source))
    entries = sources.entries()
    left_out = skipped if skipped is not None else []
    for name, why in sources.unreadable().items():
        print(f"dualex export: warning: skipping {name}: {sources.scrub(why)}", file=sys.stderr)
        left_out.append(name)
    if not entries:
        raise InputError(f"no dualex explanation files (*.safetensors written by Explanation.save) under {where}")
    if limit is not None and len(entries) > limit:
        print(f"dualex export: {len(entries)} explanation files; exporting the first {limit} (see --limit)",
              file=sys.stderr)
        entries = entries[:limit]
    payloads = {}
    kept = []
    for e in entries:
        try:
            payloads[e.file] = sources.load_entry(e)
        except InputError as exc:  # one bad file does not sink the export
            print(f"dualex export: warning: skipping {e.file}: {sources.scrub(str(exc))}", file=sys.stderr)
            left_out.append(e.file)
            continue
        kept.append(e)
    if not kept:
        raise InputError(f"none of the {len(entries)} explanation file(s) under {where} could be read (see warnings)")
    return {"pairs": group_entries(kept), "explanations": payloads}


def export_html(
        source: str | Path | Sequence[str | Path],
        out: str | Path,
        *,
        limit: int | None = 200,
        skipped: list[str] | None = None,
) -> Path:
    """Write the self-contained viewer page for ``source`` (one root or several) to ``out`` (``.html``).

    Unreadable files are left out with a warning and appended to ``skipped`` (see `collect`); ``dualex
    export`` then exits non-zero.
    """
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"the HTML export needs an .html file name, got {str(out)!r}")
    page = render_page(collect(source, limit=limit, skipped=skipped))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
