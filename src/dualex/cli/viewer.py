"""``dualex serve`` and ``dualex export``: the viewer's subcommands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dualex.cli.args import add_flags, add_paths, add_values, command

ORDER = 30  # position of these subcommands in ``dualex --help``


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` and ``export`` to ``sub``."""
    s = command(sub, "serve", run_serve)
    add_paths(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    add_values(s, int, {"--port": (8765, "port (default: 8765; 0 picks a free one)")})
    add_flags(s, {"--open": "open the page in the default browser"})

    e = command(sub, "export", run_export)
    add_paths(e)
    add_flags(e, {"--html": "export the interactive HTML viewer (the only format)"})
    e.add_argument("--out", type=Path, required=True, help="output file (.html)")
    e.add_argument("--limit", type=int, default=200,
                   help="at most this many explanation files (default: 200; 0 for no limit)")


def run_serve(args: argparse.Namespace) -> int:
    """Browse explanations in a local web viewer.

    Serve the explanation files (*.safetensors from `dualex explain --save` or a `dualex evaluate` run) under PATH
    to a browser. Read-only: no uploads. With several PATHs (e.g. two runs to compare, anywhere on disk), file names
    are prefixed by a short label per PATH and explanations of the same pair from different PATHs are shown together
    (compare mode).
    """
    from dualex.viewer.server import serve

    try:
        serve(args.path, args.host, args.port, open_browser=args.open)
    except OSError as exc:
        print(f"dualex: error: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Write a self-contained, offline HTML viewer.

    Write one HTML file with the viewer and the explanations at PATH inlined (no network needed). Several PATHs are
    joined as in `dualex serve`.
    """
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
