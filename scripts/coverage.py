"""Write the README's supported-models table from a coverage run on tiny random models.

Runs every family of `dualex.testing.TINY_FAMILIES` with every method of
`dualex.evaluation.coverage.COVERAGE_METHODS` (ij, fixlip, gradxinput, and the attention methods where
they apply), counts the open_clip architectures dualex accepts, and replaces the README's section between
``<!-- coverage:start -->`` and ``<!-- coverage:end -->``. Offline; a few minutes on two cores.

Usage: ``python scripts/coverage.py [--readme README.md] [--no-census] [--print]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", default=str(Path(__file__).resolve().parents[1] / "README.md"))
    p.add_argument("--no-census", action="store_true", help="skip the open_clip architecture census")
    p.add_argument("--print", action="store_true", help="print the table instead of writing the README")
    p.add_argument("--quiet", action="store_true", help="no per-cell log lines")
    args = p.parse_args(argv)

    from dualex.evaluation.coverage import census_openclip, render_table, run_coverage, summary_counts, update_readme

    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    start = time.perf_counter()
    results = run_coverage(log=log)
    census = None if args.no_census else census_openclip(log=log)
    table = render_table(results, census)
    counts = summary_counts(results)
    print(f"coverage: {counts} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.print:
        print(table)
        return 0
    changed = update_readme(args.readme, table)
    print(f"{args.readme}: {'updated' if changed else 'unchanged'}", file=sys.stderr)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
