"""The Ray engine: the same work as the local engine, spread over a Ray cluster with Ray Data.

The pending units become a Ray dataset of ``(item index, methods)`` records. ``map_batches`` runs them
through `EvalWorker`, a callable class: each actor loads one model replica (``num_gpus=1`` per actor
when the cluster has GPUs, CPU actors otherwise) and re-opens the dataset from its description, so only
indices travel. Workers return, per unit, its rows (JSON) and its explanation file (bytes). The driver
streams the results and writes explanation files and shards into the run directory itself, with the
same atomic writes as the local engine — so the run directory needs no shared file system and a run
can be resumed by either engine.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dualex.datasets.base import Dataset, Item, open_dataset
from dualex.errors import DualexError, InputError
from dualex.evaluation.store import PAIR, RunStore, atomic_write_bytes
from dualex.evaluation.work import WorkConfig, process_items
from dualex.explanation import Explanation
from dualex.models.registry import load
from dualex.progress import bar


def _reopen(desc: dict[str, Any]) -> Dataset:
    path = desc.get("path") or ""
    opts = dict(desc.get("options") or {})
    return open_dataset(f"{desc['kind']}:{path}", **opts)


class EvalWorker:
    """One model replica on one actor: processes batches of units into rows and explanation bytes.

    Args:
        model_spec: Model name for `dualex.load` (or ``py:module:function``).
        dataset: `Dataset.describe` output, to re-open the same dataset.
        cfg: Method and metric options.
        store_root: The run directory (only to name explanation files; workers never write there).
        device: Model device (default: the actor's GPU if it has one, else CPU).
    """

    def __init__(
        self, model_spec: str, dataset: dict[str, Any], cfg: WorkConfig, store_root: str, device: str | None = None
    ) -> None:
        import torch

        from dualex.plugins import load_plugins

        load_plugins(cfg.plugins)  # the run's plugins (model loaders, methods, metrics, readers), as on the driver
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load(model_spec, device=device)
        self.items = _reopen(dataset).items()
        self.cfg = cfg
        self.store = RunStore(store_root)
        self.tag = f"ray-{os.getpid()}"
        self._tmp = tempfile.mkdtemp(prefix="dualex-ray-")

    def _explanation_bytes(self, ex: Explanation) -> bytes:
        path = Path(self._tmp) / "ex.safetensors"
        ex.save(path)
        return path.read_bytes()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"rows": [], "path": [], "data": []}
        files: dict[tuple[str, str], tuple[str, bytes]] = {}

        def sink(method: str, iid: str, ex: Explanation) -> str:
            rel = self.store.explanation_relpath(method, iid)
            files[(iid, method)] = (rel, self._explanation_bytes(ex))
            return rel

        units: list[tuple[str, list[str], list[dict[str, Any]] | None]] = []
        todo: list[tuple[Item, list[str]]] = []
        for index, item_id, methods_json in zip(batch["index"], batch["item_id"], batch["methods"], strict=True):
            methods = json.loads(str(methods_json))
            item = self.items[int(index)] if 0 <= int(index) < len(self.items) else None
            if item is None or item.id != str(item_id):
                msg = (f"load: the worker's copy of the dataset has no item {item_id!r} at index {index} "
                       "(is the dataset the same on every node?)")  # fmt: skip
                rows = [
                    {"item_id": str(item_id), "method": m, "object": -1, "level": PAIR,
                     "dataset": self.cfg.dataset_kind, "error": msg, "error_type": "DatasetError"}
                    for m in methods
                ]  # fmt: skip
                units.append((str(item_id), methods, rows))
            else:
                units.append((str(item_id), methods, None))
                todo.append((item, methods))
        done = iter(process_items(self.model, todo, self.cfg, sink))  # the batch's items explained together
        for item_id, methods, known in units:
            rows = known if known is not None else next(done)
            for r in rows:
                r["worker"] = self.tag
            for m in methods:  # one output record per unit: its rows and its file travel together
                rel, data = files.get((item_id, m), ("", b""))
                out["rows"].append(json.dumps([r for r in rows if r["method"] == m]))
                out["path"].append(rel)
                out["data"].append(data)
        return out


def run_ray(
    store: RunStore,
    model_spec: str,
    dataset: Dataset,
    work: Sequence[tuple[int, list[str]]],
    cfg: WorkConfig,
    *,
    shard_size: int = 16,
    device: str | None = None,
    concurrency: int | None = None,
    address: str | None = None,
    progress: bool | None = None,
    items_per_batch: int = 8,
) -> int:
    """Process ``work`` on Ray actors and write the results to ``store``. Returns units with errors.

    Uses the running Ray session if there is one, else ``ray.init(address)`` (``None``: ``RAY_ADDRESS`` or
    a new local instance).
    """
    from dualex.datasets.base import dataset_kinds

    if dataset.kind not in dataset_kinds():
        raise InputError(
            f"the ray engine re-opens the dataset in every worker, so it needs one given as KIND:PATH "
            f"({', '.join(dataset_kinds())}), not a {type(dataset).__name__} object"
        )
    try:
        import ray
    except ImportError:
        raise InputError("the ray engine needs Ray Data: pip install 'dualex[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))  # type: ignore[no-untyped-call]  # ray leaves it unannotated
    use_gpu = gpus > 0 and (device is None or str(device).startswith("cuda"))
    n_actors = concurrency or (gpus if use_gpu else 1)
    if n_actors < 1:
        raise InputError(f"concurrency must be >= 1, got {n_actors}")
    items = dataset.items()
    records = [{"index": i, "item_id": items[i].id, "methods": json.dumps(m)} for i, m in work]
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ds = ray.data.from_items(records, override_num_blocks=max(1, min(len(records), 4 * n_actors)))
    resources: dict[str, Any] = {"num_gpus": 1} if use_gpu else {"num_cpus": 1}
    results = ds.map_batches(
        EvalWorker,
        fn_constructor_kwargs={
            "model_spec": model_spec,
            "dataset": dataset.describe(),
            "cfg": cfg,
            "store_root": str(store.root),
            "device": None if use_gpu else (device or "cpu"),
        },
        batch_size=items_per_batch,
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        batch_format="pandas",
        **resources,
    )
    errors = 0
    total = sum(len(m) for _, m in work)
    with bar(total, f"evaluate (ray, {n_actors} actor{'s' * (n_actors > 1)})", progress, unit="unit",
             lines=True) as pbar:
        try:
            for batch in results.iter_batches(batch_size=shard_size, batch_format="pandas", prefetch_batches=1):
                rows: list[dict[str, Any]] = []
                for rows_json, rel, data in zip(batch["rows"], batch["path"], batch["data"], strict=True):
                    unit = json.loads(rows_json)
                    if rel and data is not None and len(data):
                        atomic_write_bytes(store.root / rel, bytes(data))
                    rows.extend(unit)
                    errors += sum(1 for r in unit if r.get("level") == PAIR and r.get("error"))
                store.write_shard(rows, worker="ray")
                pbar.update(len(batch["rows"]))
        except Exception as exc:  # Ray wraps worker failures (model not loadable, CUDA errors) in its own types
            if isinstance(exc, DualexError):
                raise
            first = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
            raise DualexError(
                f"the ray engine stopped ({type(exc).__name__}: {first[-1] if first else ''}); results written so far "
                "are kept, re-run the same command to resume"
            ) from None
    return errors
