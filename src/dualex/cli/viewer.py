"""``dualex serve`` and ``dualex export``: the viewer's subcommands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ORDER = 30  # position of these subcommands in ``dualex --help``


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` and ``export`` to ``sub``."""
    s = sub.add_parser(
        "serve",
        help="browse explanations in a local web viewer",
        description="Serve the explanation files (*.safetensors from `dualex explain --save` or a "
        "`dualex evaluate` run) under PATH to a browser. Read-only: no uploads. With several PATHs (e.g. "
        "two runs to compare, anywhere on disk), file names are prefixed by a short label per PATH and "
        "explanations of the same pair from different PATHs are shown together (compare mode).",
    )
    s.add_argument("path", type=Path, nargs="+",
                   help="run directories, folders of explanation files, or single files")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0 picks a free one)")
    s.add_argument("--open", action="store_true", help="open the page in the default browser")
    s.set_defaults(func=run_serve)

    e = sub.add_parser(
        "export",
        help="write a self-contained, offline HTML viewer",
        description="Write one HTML file with the viewer and the explanations at PATH inlined (no network "
        "needed). Several PATHs are joined as in `dualex serve`.",
    )
    e.add_argument("path", type=Path, nargs="+",
                   help="run directories, folders of explanation files, or single files")
    e.add_argument("--html", action="store_true", help="export the interactive HTML viewer (the only format)")
    e.add_argument("--out", type=Path, required=True, help="output file (.html)")
    e.add_argument("--limit", type=int, default=200,
                   help="at most this many explanation files (default: 200; 0 for no limit)")
    e.set_defaults(func=run_export)


def run_serve(args: argparse.Namespace) -> int:
    """Run ``dualex serve`` (the viewer's web server) with the parsed ``args``; returns the exit status."""
    from dualex.viewer.server import serve

    try:
        serve(args.path, args.host, args.port, open_browser=args.open)
    except OSError as exc:
        print(f"dualex: error: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Run ``dualex export`` (static viewer pages) with the parsed ``args``; returns the exit status."""
    from dualex.errors import InputError
    from dualex.viewer.export import export_html

    if not args.html:
        raise InputError("choose an export format: --html")
    skipped: list[str] = []
    out = export_html(args.path, args.out, limit=args.limit or None, skipped=skipped)
    print(f"viewer written to {out} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    if skipped:
        print(f"dualex export: error: {len(skipped)} file(s) could not be read and are not in the page "
              "(see the warnings above)", file=sys.stderr)
        return 1
    return 0
