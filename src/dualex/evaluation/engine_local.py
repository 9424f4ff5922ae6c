"""The local engine: read the dataset part by part in this process, writing a shard every few units."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

from dualex.datasets.base import Dataset
from dualex.evaluation.resume import PartScan, UnitCounts, done_in, shard_index, shards_of
from dualex.evaluation.store import PAIR, RunStore
from dualex.evaluation.work import WorkConfig, process_items
from dualex.explanation import Explanation
from dualex.models.base import DualEncoder
from dualex.progress import bar


def run_local(
    store: RunStore,
    model: DualEncoder | Callable[[], DualEncoder],
    dataset: Dataset,
    methods: Sequence[str],
    cfg: WorkConfig,
    *,
    shard_size: int = 16,
    flush_seconds: float = 60.0,
    progress: bool | None = None,
    batch_size: int = 8,
    retry_errors: bool = False,
) -> UnitCounts:
    """Run every pending (item, method) unit of ``dataset`` and write the rows to ``store``.

    Parts (`Dataset.plan`) are read one after the other, lazily; the units already recorded in a part's
    shards (`dualex.evaluation.resume`) are skipped. Items are explained ``batch_size`` at a time
    (`process_items`), but never more items at once than ``shard_size``, so that a kill loses no more
    work than before batching. A shard (tagged with its part) is written when ``shard_size`` units are
    buffered, when ``flush_seconds`` have passed since the last write, and at the end of each part.

    Args:
        model: The model, or a function that loads it (called once, when the first unit is pending).

    Returns:
        `UnitCounts`.
    """
    loaded: list[DualEncoder] = []

    def get_model() -> DualEncoder:
        if not loaded:
            loaded.append(model if isinstance(model, DualEncoder) else model())
        return loaded[0]

    def sink(method: str, item_id: str, ex: Explanation) -> str:
        ex.save(store.explanation_path(method, item_id))
        return store.explanation_relpath(method, item_id)

    index = shard_index(store)
    counts = UnitCounts()
    total = None if dataset.streaming else len(dataset.items()) * len(methods)
    step = max(1, min(batch_size, shard_size))
    with bar(total, "evaluate", progress, unit="unit", lines=True) as pbar:
        for part, n in dataset.plan():
            scan = PartScan(itertools.islice(dataset.read_part(part), n),
                            methods, done_in(store, shards_of(index, part), retry_errors=retry_errors))  # fmt: skip
            before = counts.seen
            buffer: list[dict[str, Any]] = []
            units = 0
            last = time.monotonic()
            pending = iter(scan)
            try:
                while chunk := list(itertools.islice(pending, step)):
                    results = process_items(get_model(), chunk, cfg, sink)
                    for (_, todo), rows in zip(chunk, results, strict=True):
                        buffer.extend(rows)
                        units += len(todo)
                        counts.run += len(todo)
                        counts.errors += sum(1 for r in rows if r.get("level") == PAIR and r.get("error"))
                    pbar.update(before + scan.seen - pbar.n)
                    pbar.set_postfix(errors=counts.errors, refresh=False)
                    if units >= shard_size or time.monotonic() - last >= flush_seconds:
                        store.write_shard(buffer, worker="local", part=part)
                        buffer, units, last = [], 0, time.monotonic()
            finally:  # also on Ctrl-C: the buffer holds only complete units, keep them
                store.write_shard(buffer, worker="local", part=part)
            counts.seen += scan.seen
            counts.skipped += scan.skipped
            pbar.update(counts.seen - pbar.n)
    return counts
