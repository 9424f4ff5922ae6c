"""The local engine: process pending units in this process, writing a shard every few units."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from dualex.datasets.base import Item
from dualex.evaluation.store import PAIR, RunStore
from dualex.evaluation.work import WorkConfig, process_items
from dualex.explanation import Explanation
from dualex.models.base import DualEncoder
from dualex.progress import bar


def run_local(
    store: RunStore,
    model: DualEncoder,
    items: Sequence[Item],
    work: Sequence[tuple[int, list[str]]],
    cfg: WorkConfig,
    *,
    shard_size: int = 16,
    flush_seconds: float = 60.0,
    progress: bool | None = None,
    batch_size: int = 8,
) -> int:
    """Process ``work`` ((item index, methods) pairs) and write the rows to ``store``.

    Items are explained ``batch_size`` at a time (`process_items`), but never more items at once than
    ``shard_size``, so that a kill loses no more work than before batching. A shard is written when
    ``shard_size`` units are buffered or ``flush_seconds`` have passed since the last write, and at the
    end. Returns the number of units that recorded an error.
    """

    def sink(method: str, item_id: str, ex: Explanation) -> str:
        ex.save(store.explanation_path(method, item_id))
        return store.explanation_relpath(method, item_id)

    buffer: list[dict[str, Any]] = []
    units = errors = 0
    last = time.monotonic()
    total = sum(len(m) for _, m in work)
    with bar(total, "evaluate", progress, unit="unit", lines=True) as pbar:
        try:
            step = max(1, min(batch_size, shard_size))
            for start in range(0, len(work), step):
                chunk = work[start : start + step]
                results = process_items(model, [(items[i], m) for i, m in chunk], cfg, sink)
                for (_, methods), rows in zip(chunk, results, strict=True):
                    buffer.extend(rows)
                    units += len(methods)
                    errors += sum(1 for r in rows if r.get("level") == PAIR and r.get("error"))
                    pbar.update(len(methods))
                pbar.set_postfix(errors=errors, refresh=False)
                if units >= shard_size or time.monotonic() - last >= flush_seconds:
                    store.write_shard(buffer, worker="local")
                    buffer, units, last = [], 0, time.monotonic()
        finally:  # also on Ctrl-C: the buffer holds only complete units, keep them
            store.write_shard(buffer, worker="local")
    return errors
