"""The resumable driver `evaluate`: run explanation methods over a dataset and keep results in a run directory.

`evaluate` checks the options, opens the dataset and the run store, and hands the dataset to an engine
(`engine_local` in this process, `engine_ray` on a Ray cluster). Engines read the dataset part by part
(`Dataset.plan`), skip the units already recorded in each part's shards (`dualex.evaluation.resume`),
and call `dualex.evaluation.work.process_items` on the rest; no list of the run's items or units is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualex.datasets.base import Dataset, open_dataset
from dualex.errors import InputError
from dualex.evaluation.precision import canonical_dtype, parse_dtype
from dualex.evaluation.store import RunStore
from dualex.evaluation.work import MetricOptions, WorkConfig
from dualex.models.base import DualEncoder

__all__ = ["MetricOptions", "RunResult", "evaluate"]

# ----------------------------------------------------------------------------------------- driver
@dataclass
class RunResult:
    """What `evaluate` did."""

    run_dir: Path
    units_total: int
    units_done_before: int
    units_run: int
    errors: int
    summary: str


def evaluate(
    model: str | DualEncoder,
    dataset: str | Dataset,
    methods: Sequence[str],
    out: str | Path,
    *,
    method_options: dict[str, dict[str, Any]] | None = None,
    metrics: MetricOptions | None = None,
    dataset_options: dict[str, Any] | None = None,
    limit: int | None = None,
    engine: str = "local",
    device: str | None = None,
    internal_batch_size: int = 64,
    batch_size: int = 8,
    shard_size: int = 16,
    flush_seconds: float = 60.0,
    retry_errors: bool = False,
    concurrency: int | None = None,
    ray_address: str | None = None,
    num_gpus_per_worker: float = 1.0,
    max_retries: int = 3,
    dtype: str | None = None,
    progress: bool | None = None,
    print_summary: bool = False,
    plugins: str | Sequence[str] | None = None,
) -> RunResult:
    """Run explanation methods over a dataset, score them, and keep everything in a run directory.

    Re-running with the same ``out`` resumes: units already recorded are skipped (see
    ``docs/run-format.md``). Killing the process at any moment loses at most the units of the shard
    being assembled.

    Args:
        model: A model name (``dualex.load``), ``py:module:function``, or a `DualEncoder` (local engine only).
        dataset: ``"KIND:PATH"`` (``coco``, ``flickr30k``, ``imagenet-grid``, ``shapes``, ``webdataset``,
            ``parquet``) or a `Dataset`.
        methods: Method names, e.g. ``["ij", "fixlip", "gradxinput"]``.
        out: The run directory.
        method_options: Per method, its options (``{"ij": {"n_steps": 10}}``).
        metrics: `MetricOptions` (default: all metrics, FIxLIP's settings).
        dataset_options: Reader options (``split=``, ``n=``, ...).
        limit: Use only the first ``limit`` items.
        engine: ``"local"`` (this process) or ``"ray"`` (Ray Data, one model replica per GPU actor).
        device: Where the model runs (default: CUDA if available).
        internal_batch_size: Masked pairs per forward pass in the metrics.
        batch_size: Items explained together by one call of each method (1: item by item). Larger
            batches amortise per-call overhead and fill a GPU; memory grows with it. Results do not
            depend on it (up to float rounding): sampled methods (with a ``seed``) always run per item.
        shard_size: Units per shard (a shard is also written after ``flush_seconds``).
        flush_seconds: Longest time results wait in memory before being written (local engine).
        retry_errors: Redo units whose pair row recorded an error.
        concurrency: Ray actors (default: one per GPU, or 1 on CPU).
        ray_address: Address of an existing Ray cluster (default: ``RAY_ADDRESS``, else a new local Ray).
        num_gpus_per_worker: GPUs per Ray model actor (a fraction such as 0.25 packs small models).
        max_retries: How often Ray re-runs the work of a lost worker or node (task retries, actor
            restarts) before the run stops; an item whose processing raises is an error row, never retried.
        dtype: Model parameter dtype (``float32``, ``bfloat16``/``bf16``, ``float16``/``fp16``; default:
            as stored). Part of the run's identity.
        progress: Show a progress bar (default: on a terminal only).
        print_summary: Print the summary tables at the end.
        plugins: Plugin modules to import first (`dualex.plugins.load_plugins`; also ``$DUALEX_PLUGINS``);
            workers import the same ones.

    Returns:
        `RunResult`.
    """
    from dualex.methods import check_method_options, get_method
    from dualex.plugins import load_plugins

    load_plugins(plugins)
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise InputError("name at least one method, e.g. methods=['ij']")
    for m in methods:
        get_method(m)
    method_options = {m: dict((method_options or {}).get(m, {})) for m in methods}  # others' are not used
    for m in methods:  # every option checked before anything is loaded or written
        check_method_options(m, method_options[m])
    metrics = metrics or MetricOptions()
    if engine not in ("local", "ray"):
        raise InputError(f"engine must be 'local' or 'ray', got {engine!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if shard_size < 1:
        raise InputError(f"shard_size must be >= 1, got {shard_size}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise InputError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    if not num_gpus_per_worker > 0:
        raise InputError(f"num_gpus_per_worker must be > 0, got {num_gpus_per_worker!r}")
    dtype = canonical_dtype(dtype)
    if isinstance(model, DualEncoder):
        if engine == "ray":
            raise InputError("the ray engine loads the model in each worker: pass a model name or 'py:module:function'")
        model_spec = model.name
    else:
        model_spec = str(model)
    opts = dict(dataset_options or {})
    if isinstance(dataset, Dataset):
        if opts:
            raise InputError("dataset_options apply to a 'KIND:PATH' dataset; pass them to the reader you built")
        ds = dataset
        if limit is not None and limit != ds.limit:
            ds.limit, ds._items = limit, None
    else:
        if limit is not None:
            opts["limit"] = limit
        ds = open_dataset(dataset, **opts)
    if engine == "ray":
        from dualex.datasets.base import dataset_kinds

        if ds.kind not in dataset_kinds():
            raise InputError(
                "the ray engine re-opens the dataset in every worker, so it needs one given as KIND:PATH "
                f"({', '.join(dataset_kinds())}), not a {type(ds).__name__} object"
            )
    from dualex.writable import check_writable

    out = _local_run_dir(out)
    check_writable(out, what="run directory", directory=True)
    store = RunStore(out)
    _standard_errors_off(store, methods, method_options)
    if store.exists() and "faith_design" not in store.read_manifest().get("options", {}):
        from dataclasses import replace as _replace

        metrics = _replace(metrics, faith_design="independent")  # a run from before the option: its design
    store.acquire()
    try:
        return _evaluate_locked(store, model, model_spec, ds, methods, method_options, metrics, engine=engine,
                                device=device, internal_batch_size=internal_batch_size, batch_size=batch_size,
                                shard_size=shard_size, flush_seconds=flush_seconds, retry_errors=retry_errors,
                                concurrency=concurrency, ray_address=ray_address,
                                num_gpus_per_worker=num_gpus_per_worker, max_retries=max_retries, dtype=dtype,
                                progress=progress, print_summary=print_summary)  # fmt: skip
    finally:
        store.release()


def _local_run_dir(out: str | Path) -> Path:
    """The run directory as a local path: ``file://`` URLs are paths; other URLs are refused in one line.

    Workers write into the run directory with atomic renames, so it must be a file system every node
    mounts at the same path (NFS, Lustre, a Kubernetes volume; object stores through a FUSE mount).
    """
    from dualex.datasets.sources import is_url

    text = str(out)
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    if is_url(text):
        raise InputError(
            f"the run directory {text} is a URL; dualex writes runs to a file system path that every worker mounts "
            "(NFS, a Kubernetes volume, or the bucket mounted with s3fs/gcsfuse); datasets may be URLs"
        )
    return Path(out)


def _standard_errors_off(store: RunStore, methods: list[str], method_options: dict[str, dict[str, Any]]) -> None:
    """Sampled methods skip their bootstrap standard errors and fit diagnostics in a run unless asked.

    The metrics never read standard errors or a method's own fit diagnostics (the run measures
    p-faithfulness itself, on coalitions of its own), and both cost up to as much as the explanation
    (bootstrap refits; FIxLIP's cross-fitted R², which refits the surrogate per fold), so a run sets
    ``n_boot=0`` and ``holdout=0`` (recorded in the manifest) for every method that has the option and
    was not given it; ``-O fixlip.n_boot=32`` stores the errors with each explanation, ``-O
    fixlip.holdout=1024`` a held-out check. The explanation and so every metric value are the same
    either way. A run directory written before a default keeps the setting it ran with.
    """
    import inspect

    from dualex.methods import get_method

    old = store.read_manifest().get("method_options", {}) if store.exists() else {}
    for m in methods:
        params = inspect.signature(get_method(m).fn).parameters
        for option in ("n_boot", "holdout"):
            if option in method_options[m] or option not in params:
                continue
            if m in old and option not in old[m]:
                continue  # resumed: the run so far used the method's own default
            method_options[m][option] = 0


def _evaluate_locked(
    store: RunStore,
    model: str | DualEncoder,
    model_spec: str,
    ds: Dataset,
    methods: list[str],
    method_options: dict[str, dict[str, Any]],
    metrics: MetricOptions,
    *,
    engine: str,
    device: str | None,
    internal_batch_size: int,
    batch_size: int,
    shard_size: int,
    flush_seconds: float,
    retry_errors: bool,
    concurrency: int | None,
    ray_address: str | None,
    num_gpus_per_worker: float,
    max_retries: int,
    dtype: str | None,
    progress: bool | None,
    print_summary: bool,
) -> RunResult:
    """`evaluate` after its checks, with the run directory's lock held."""
    from dualex.evaluation.summary import write_summary
    from dualex.models.registry import load, random_weights_seed

    seed = model.weights_seed if isinstance(model, DualEncoder) else random_weights_seed(model_spec)
    store.open(
        {
            "model": model_spec,
            **({"model_weights_seed": seed} if seed is not None else {}),
            "dataset": ds.describe(),
            "methods": methods,
            "method_options": method_options,
            "options": {**metrics.to_dict(), **({"dtype": dtype} if dtype else {})},
            "engine": engine,
        }
    )
    store.clean_tmp()
    from dualex.plugins import plugin_modules

    cfg = WorkConfig(methods, method_options, metrics, internal_batch_size, ds.kind, plugin_modules())
    torch_dtype = parse_dtype(dtype)
    if engine == "local":
        from dualex.evaluation.engine_local import run_local

        def loader() -> DualEncoder:
            return model if isinstance(model, DualEncoder) else load(model_spec, device=device, dtype=torch_dtype)

        counts = run_local(store, loader, ds, methods, cfg, shard_size=shard_size, flush_seconds=flush_seconds,
                           progress=progress, batch_size=batch_size, retry_errors=retry_errors)  # fmt: skip
    else:
        from dualex.evaluation.engine_ray import RayOptions, run_ray

        ray_opts = RayOptions(address=ray_address, concurrency=concurrency, num_gpus_per_worker=num_gpus_per_worker,
                              max_retries=max_retries, device=device, dtype=dtype,
                              plugins=list(cfg.plugins))  # fmt: skip
        counts = run_ray(store, model_spec, ds, methods, cfg, ray_opts, shard_size=shard_size,
                         batch_size=batch_size, progress=progress, retry_errors=retry_errors)  # fmt: skip
    text = write_summary(store)
    if print_summary:
        print(text)
    return RunResult(store.root, counts.seen, counts.skipped, counts.run, counts.errors, text)
