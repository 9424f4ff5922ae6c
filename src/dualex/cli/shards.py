"""``dualex shards``: write any dataset dualex reads as WebDataset tar shards (or Parquet files)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dualex.cli.args import add_dataset_options, add_flags, add_values, command

ORDER = 11  # position of these subcommands in ``dualex --help``


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``shards`` to ``sub``."""
    p = command(sub, "shards", run_shards)
    p.add_argument("--dataset", required=True, help="KIND:PATH of the dataset to write (shapes: generates scenes)")
    add_dataset_options(p, "reader option, e.g. -D split=val2017, -D n=500 (shapes)")
    p.add_argument("--out", required=True, type=Path, help="folder for the shards (created)")
    add_values(p, int, {"--shard-size": (1000, "items per shard (default 1000)"),
                        "--limit": (None, "write only the first N items")})  # fmt: skip
    p.add_argument("--format", default="webdataset", choices=["webdataset", "parquet"], help="default webdataset")
    add_flags(p, {"--no-progress": "no progress bar"})


def run_shards(args: argparse.Namespace) -> int:
    """Write a dataset as WebDataset shards (or Parquet) for streaming runs.

    Read --dataset KIND:PATH (coco, flickr30k, imagenet-grid, shapes, webdataset, parquet) and write it to --out as
    WebDataset tar shards of --shard-size items (KEY.jpg|png|webp image, KEY.txt caption, KEY.json ground truth), or
    as Parquet files with --format parquet. `dualex evaluate --dataset webdataset:OUT` then streams them.
    """
    from dualex.datasets import open_dataset
    from dualex.datasets.parquet import write_parquet
    from dualex.datasets.webdataset import write_webdataset
    from dualex.writable import check_writable

    opts = dict(args.dataset_option)
    if args.limit is not None:
        opts["limit"] = args.limit
    ds = open_dataset(args.dataset, **opts)
    check_writable(args.out, what="shard folder", directory=True)
    write = write_parquet if args.format == "parquet" else write_webdataset
    n, files = write(ds, args.out, shard_size=args.shard_size, progress=False if args.no_progress else None)
    kind = "parquet" if args.format == "parquet" else "webdataset"
    print(f"wrote {n} item(s) in {files} shard(s) to {args.out}; read them with --dataset {kind}:{args.out}")
    return 0
