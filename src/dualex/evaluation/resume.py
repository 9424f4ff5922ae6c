"""Resuming a run part by part, from the shards' Parquet footers.

A shard written for a dataset part (`RunStore.write_shard` with ``part=``) carries the part's tag in its
name (``part-<ns>-<worker>-p<tag>-<rand>.parquet``) and, in its Parquet footer's key-value metadata,
the part (``dualex:part``) and its units (``dualex:units``: ``[[item_id, method, pair error or null],
...]``). To resume a part, an engine reads the footers of that part's shards and of the untagged shards
of older runs (which may hold units of any part) — never a list of the run's items or units — and skips
the units recorded there; the newest shard's record of a unit wins, as in `RunStore.read_rows`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from dualex.datasets.base import Item
from dualex.evaluation.store import PAIR, UNITS_KEY, RunStore, is_io_error, part_tag


def shard_tag(name: str) -> str | None:
    """The part tag in a shard's file name, or None for an untagged shard (any part's units)."""
    fields = name.removesuffix(".parquet").split("-")
    return fields[3] if len(fields) == 5 and fields[3].startswith("p") else None


def shard_index(store: RunStore) -> dict[str | None, list[str]]:
    """Shard file names (oldest first) per part tag; ``None`` collects the untagged shards.

    Only the shard folder is listed; no file is opened.
    """
    out: dict[str | None, list[str]] = {}
    for p in store.shards():
        out.setdefault(shard_tag(p.name), []).append(p.name)
    return out


def shards_of(index: Mapping[str | None, list[str]], part: str) -> list[str]:
    """The shards that may hold units of ``part``: its own and the untagged ones, oldest first."""
    return sorted([*index.get(None, []), *index.get(part_tag(part), [])])


def _footer_units(store: RunStore, name: str) -> list[tuple[str, str, str | None]] | None:
    """A shard's units from its footer (None: unreadable; read from its columns if it has no such footer)."""
    import warnings

    import pyarrow.parquet as pq

    path = store.shard_dir / name
    try:
        meta = pq.read_metadata(path).metadata or {}
        if UNITS_KEY in meta:
            return [(str(i), str(m), e) for i, m, e in json.loads(meta[UNITS_KEY])]
    except Exception as exc:
        warnings.warn(f"ignoring unreadable shard {name} ({exc}); its items will be recomputed", stacklevel=3)
        return None
    t = store._read_shard(path, ["item_id", "method", "level", "error"])  # an untagged shard: read its keys
    if t is None:
        return None
    d = t.to_pydict()
    failed: dict[tuple[str, str], str | None] = {}
    for item, meth, level, err in zip(d["item_id"], d["method"], d["level"], d["error"], strict=True):
        failed.setdefault((item, meth), None)
        if level == PAIR and err is not None:
            failed[(item, meth)] = err
    return [(i, m, e) for (i, m), e in failed.items()]


def latest_records(store: RunStore, names: Iterable[str]) -> dict[tuple[str, str], str | None]:
    """Per (item_id, method) unit in the shards ``names`` (oldest first), its newest pair-level error or None."""
    latest: dict[tuple[str, str], str | None] = {}
    for name in names:
        units = _footer_units(store, name)
        for item, meth, err in units or ():
            latest[(item, meth)] = err
    return latest


def done_units(latest: Mapping[tuple[str, str], str | None], *, retry_errors: bool = False) -> set[tuple[str, str]]:
    """The units of `latest_records` that count as done (not to be run again)."""
    return {k for k, err in latest.items() if not (err is not None and (retry_errors or is_io_error(err)))}


def done_in(store: RunStore, names: Iterable[str], *, retry_errors: bool = False) -> set[tuple[str, str]]:
    """(item_id, method) units recorded in the shards ``names`` (oldest first; the newest record wins).

    As `RunStore.done_keys`: a unit whose newest record is an I/O error of the run directory is not
    done, nor, with ``retry_errors``, one whose newest record has any pair-level error.
    """
    return done_units(latest_records(store, names), retry_errors=retry_errors)


@dataclass
class PartScan:
    """The pending units of one part: iterate for ``(item, methods still to run)``; counts as it goes.

    Attributes:
        skipped: Units already recorded (not yielded).
        seen: Units of the part read so far (recorded or not).
        before: Units done before the current `evaluate` call began (optional): ``before_count``
            counts the part's units among them, ``earlier_errors`` the part's units recorded since (by
            an earlier attempt of the call) whose record in ``latest`` has an error.
    """

    items: Iterable[Item]
    methods: Sequence[str]
    done: set[tuple[str, str]]
    before: set[tuple[str, str]] | None = None
    latest: Mapping[tuple[str, str], str | None] | None = None
    skipped: int = 0
    seen: int = 0
    before_count: int = 0
    earlier_errors: int = 0

    def __iter__(self) -> Iterator[tuple[Item, list[str]]]:
        for it in self.items:
            self.seen += len(self.methods)
            todo = [m for m in self.methods if (it.id, m) not in self.done]
            self.skipped += len(self.methods) - len(todo)
            if self.before is not None:
                for m in self.methods:
                    key = (it.id, m)
                    if key in self.before:
                        self.before_count += 1
                    elif key in self.done and (self.latest or {}).get(key) is not None:
                        self.earlier_errors += 1
            if todo:
                yield it, todo


@dataclass
class UnitCounts:
    """What an engine did, in (item, method) units.

    Attributes:
        seen: Units of the items read (recorded before or not).
        skipped: Units already recorded (resumed past).
        run: Units run now.
        errors: Units run now whose pair row records an error.
    """

    seen: int = 0
    skipped: int = 0
    run: int = 0
    errors: int = 0

    def add(self, other: UnitCounts) -> None:
        """Add another part's counts to these."""
        self.seen += other.seen
        self.skipped += other.skipped
        self.run += other.run
        self.errors += other.errors
