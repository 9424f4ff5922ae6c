"""The Ray engine: the local engine's work as a Ray Data pipeline whose workers write the results.

Pipeline (one Ray dataset, streamed):

1. **read** (CPU tasks, one per dataset part: a WebDataset shard, a Parquet row group, or the single
   part of a list reader): each task re-opens the dataset from its description, reads the footers of
   its part's result shards (`dualex.evaluation.resume`), and emits a record per item with units still
   to run (its caption, ground truth as JSON, and its image as encoded bytes, a path or pixels), then
   one count record for the part;
2. **decode** (CPU tasks): images become RGB pixels, ahead of the model stage;
3. **model** (`EvalWorker` actors, one model replica each: ``num_gpus_per_worker`` GPUs per actor when
   the cluster has GPUs, CPU actors otherwise): explains and scores a batch of items with the same
   `process_items` as the local engine, writes the explanation files and one atomic Parquet shard per
   part of the batch into the run directory (a file system every node mounts), and returns only counts.

The driver lists the dataset's parts and the result shard names, and keeps the manifest, the progress
and the summary; no item, row or explanation passes through it. A lost worker or node is survived by
Ray's task retries and actor restarts (``max_retries``): a retried batch rewrites its units in a new
shard, and the newest shard of a unit wins when results are read, so nothing is lost or counted twice.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dualex.datasets.base import Composite, Dataset, EncodedImage, Item, open_dataset
from dualex.datasets.records import item_annotations, item_from_annotations
from dualex.errors import DualexError, InputError
from dualex.evaluation.precision import parse_dtype
from dualex.evaluation.resume import PartScan, UnitCounts, done_units, latest_records, shard_index, shards_of
from dualex.evaluation.store import PAIR, RunStore
from dualex.evaluation.work import WorkConfig, process_items
from dualex.explanation import Explanation
from dualex.models.registry import load
from dualex.progress import bar

#: CPUs a read or decode task reserves, and a CPU model actor: on a node of one CPU, one model actor
#: and the read/decode stage share it (Ray's CPU counts are reservations, not limits).
READ_CPUS = 0.25
CPU_ACTOR_CPUS = 0.75


@dataclass
class RayOptions:
    """How the Ray engine uses the cluster.

    Attributes:
        address: Cluster address (None: ``RAY_ADDRESS``, else a new local Ray instance).
        concurrency: Model actors (default: one per ``num_gpus_per_worker`` GPUs, or 1 without GPUs).
        num_gpus_per_worker: GPUs reserved per model actor (fractions pack small models).
        max_retries: Retries of a lost task and restarts of a lost actor before the run stops.
        device: Model device (default: the actor's GPU when the cluster has GPUs, else CPU).
        dtype: Model dtype name (`dualex.evaluation.run.DTYPES`), None: as stored.
        connect_timeout: Seconds to wait for a cluster that accepts connections to complete Ray's
            handshake (an address where nothing listens is refused within 5 s).
        plugins: Modules every worker imports first (they register models, methods, readers).
    """

    address: str | None = None
    concurrency: int | None = None
    num_gpus_per_worker: float = 1.0
    max_retries: int = 3
    device: str | None = None
    dtype: str | None = None
    connect_timeout: float = 120.0  # generous: joining a healthy cluster on a loaded machine can take a while
    plugins: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- connecting
def _probe(address: str, timeout: float, where: str) -> None:
    """Refuse, in one line, an ``host:port`` address where nothing accepts a connection."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(f"the Ray address {address!r} ({where}) is not HOST:PORT, 'auto' or ray://HOST:PORT")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise InputError(
            f"no Ray cluster answers at {address} ({where}: {exc.strerror or exc}); start one (`ray start --head`), "
            "fix the address, or unset RAY_ADDRESS to run on a new local Ray instance"
        ) from None


def connect(address: str | None = None, *, timeout: float = 120.0) -> str:
    """Join the Ray cluster at ``address`` (or ``RAY_ADDRESS``), or start a local Ray instance.

    Without an address a new local instance is started (``address="local"``): a cluster address left in
    Ray's temporary directory by a cluster that died without ``ray stop`` is never tried. An address
    where nothing answers is refused within a few seconds; one that accepts connections but does not
    complete Ray's handshake within ``timeout`` seconds is refused too.

    Returns:
        What was joined (``"local"``, the address, or ``"running"`` for an initialised session).

    Raises:
        InputError: Ray is not installed, or the cluster does not answer.
    """
    try:
        import ray
    except ImportError:
        raise InputError("the ray engine needs Ray Data: pip install 'dualex[ray]'") from None
    if ray.is_initialized():
        return "running"
    kw: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    where = "--ray-address" if address else "RAY_ADDRESS"
    addr = (address or os.environ.get("RAY_ADDRESS") or "").strip()
    if not addr or addr == "local":
        ray.init(address="local", **kw)
        return "local"
    if addr == "auto":
        try:
            from ray._private.utils import read_ray_address

            found = read_ray_address(None)
        except Exception:
            found = None
        if not found:
            raise InputError(f"{where}=auto, but no Ray cluster was started on this machine (`ray start --head`)")
        addr, where = found, f"{where}=auto, found in Ray's temporary directory"
    if not addr.startswith("ray://"):
        _probe(addr, min(5.0, timeout), where)
    done = threading.Event()
    failed: list[BaseException] = []

    def watchdog() -> None:
        if not done.wait(timeout):
            print(f"dualex: the Ray cluster at {addr} ({where}) did not accept the connection within {timeout:.0f} s; "
                  "check that it runs and that this machine can reach it", flush=True)  # fmt: skip
            os._exit(2)  # ray.init cannot be interrupted from another thread

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        ray.init(address=addr, **kw)
    except Exception as exc:
        failed.append(exc)
    finally:
        done.set()
    if failed:
        first = [ln for ln in str(failed[0]).strip().splitlines() if ln.strip()]
        raise InputError(f"cannot join the Ray cluster at {addr} ({where}): {first[0] if first else failed[0]}")
    return addr


# ----------------------------------------------------------------------------------------- records


def _record(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"kind": "item", "part": "", "item_id": "", "methods": "[]", "caption": "", "ann": "{}",
                            "image_format": "none", "image": b"", "image_ref": "", "skipped": 0, "seen": 0,
                            "before": 0, "errors": 0}  # fmt: skip
    base.update(values)
    return base


def item_record(item: Item, part: str, methods: Sequence[str]) -> dict[str, Any]:
    """One item as a flat record (strings, bytes and ints only) for Ray Data."""
    img = item.image
    image: tuple[str, bytes, str] = ("none", b"", "")
    if isinstance(img, EncodedImage):
        image = ("encoded", img.data, img.name)
    elif isinstance(img, str | os.PathLike):
        image = ("path", b"", str(img))
    elif isinstance(img, Composite):
        image = ("composite", b"", json.dumps({"paths": img.paths, "rows": img.rows, "cols": img.cols,
                                                "cell": list(img.cell)}))  # fmt: skip
    ann = item_annotations(item)
    if _in_memory(img):
        try:  # an in-memory image (array, PIL) travels as pixels
            image = _pixels(item)
        except Exception as exc:  # the item's error row, as the local engine's load stage gives it
            image, ann["error"] = ("none", b"", ""), ann.get("error") or str(exc)
    return _record(part=part, item_id=item.id, methods=json.dumps(list(methods)), caption=item.caption or "",
                   ann=json.dumps(ann), image_format=image[0], image=image[1], image_ref=image[2])  # fmt: skip


def _in_memory(img: Any) -> bool:
    """Whether an item's image is an in-memory object (not None, bytes, a path or a grid of paths)."""
    return not (img is None or isinstance(img, EncodedImage | str | os.PathLike | Composite))


def _pixels(item: Item) -> tuple[str, bytes, str]:
    import numpy as np

    arr = np.ascontiguousarray(np.asarray(item.load_image(), dtype=np.uint8))
    return "pixels", arr.tobytes(), ",".join(str(s) for s in arr.shape)


def record_image(rec: dict[str, Any]) -> Any:
    """The image of a record as an `Item` takes it (pixels as a uint8 array ``(H, W, 3)``)."""
    fmt, data, ref = rec["image_format"], rec["image"], rec["image_ref"]
    if fmt == "encoded":
        return EncodedImage(bytes(data), ref)
    if fmt == "path":
        return ref
    if fmt == "composite":
        d = json.loads(ref)
        return Composite(list(d["paths"]), int(d["rows"]), int(d["cols"]), (int(d["cell"][0]), int(d["cell"][1])))
    if fmt == "pixels":
        import numpy as np

        shape = tuple(int(s) for s in ref.split(","))
        return np.frombuffer(bytes(data), dtype=np.uint8).reshape(shape)
    return None


def record_item(rec: dict[str, Any]) -> Item:
    """The `Item` of an item record (as the reader built it, its image possibly decoded)."""
    ann = json.loads(rec["ann"])
    item = item_from_annotations(str(rec["item_id"]), record_image(rec), str(rec["caption"]), ann, str(rec["item_id"]))
    return item


# ----------------------------------------------------------------------------------------- stages
def _worker_setup(plugins: Sequence[str]) -> None:
    """Import the run's plugin modules in a Ray worker (they register models, methods, metrics, readers)."""
    from dualex.plugins import load_plugins

    load_plugins(list(plugins))  # also $DUALEX_PLUGINS and the dualex.plugins entry points of the worker


def _reopen(desc: dict[str, Any]) -> Dataset:
    path = desc.get("path") or ""
    opts = dict(desc.get("options") or {})
    return open_dataset(f"{desc['kind']}:{path}", **opts)


def read_part(
    row: dict[str, Any], *, dataset: dict[str, Any], methods: list[str], store_root: str, retry_errors: bool,
    plugins: list[str],
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Read stage: the pending items of one part as records, then the part's count record.

    ``row`` names the part, its item limit (-1: none), the part's shards now (``shards``) and when the
    `evaluate` call began (``before``). The count record says how many of the part's units were done
    before the call (``before``), and how many recorded since then by an earlier attempt of this call
    have an error (``errors``), so that the driver's totals stay exact across pipeline restarts.
    """
    _worker_setup(plugins)
    ds = _reopen(dataset)
    part, limit = str(row["part"]), int(row["limit"])
    store = RunStore(store_root)
    now = latest_records(store, json.loads(row["shards"]))
    before_names = json.loads(row["before"])
    before = done_units(latest_records(store, before_names), retry_errors=retry_errors) if before_names else set()
    scan = PartScan(itertools.islice(ds.read_part(part), None if limit < 0 else limit), methods,
                    done_units(now, retry_errors=retry_errors), before=before, latest=now)  # fmt: skip
    for item, todo in scan:
        yield item_record(item, part, todo)
    yield _record(kind="count", part=part, skipped=scan.skipped, seen=scan.seen, before=scan.before_count,
                  errors=scan.earlier_errors)  # fmt: skip


def decode_batch(batch: Any) -> Any:
    """Decode stage: encoded images, paths and grids become pixels (a failure is left for the model stage,
    which then records the same error row as the local engine)."""
    fmts, images, refs = list(batch["image_format"]), list(batch["image"]), list(batch["image_ref"])
    for k, fmt in enumerate(fmts):
        if batch["kind"].iloc[k] != "item" or fmt not in ("encoded", "path", "composite"):
            continue
        rec = {"image_format": fmt, "image": images[k], "image_ref": refs[k]}
        try:
            fmts[k], images[k], refs[k] = _pixels(Item("", record_image(rec), ""))
        except Exception:
            continue
    out = batch.copy()
    out["image_format"], out["image"], out["image_ref"] = fmts, images, refs
    return out


class EvalWorker:
    """Model stage: one model replica on one actor; explains batches and writes their results itself.

    Args:
        model_spec: Model name for `dualex.load` (or ``py:module:function``).
        cfg: Method and metric options.
        store_root: The run directory (a path every node of the cluster reaches).
        device: Model device (default: the actor's GPU if it has one, else CPU).
        dtype: Model dtype name, or None.
        plugins: Modules to import first.
    """

    def __init__(
        self, model_spec: str, cfg: WorkConfig, store_root: str, device: str | None = None,
        dtype: str | None = None, plugins: Sequence[str] = (),
    ) -> None:  # fmt: skip
        import torch

        _worker_setup(plugins)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load(model_spec, device=device, dtype=parse_dtype(dtype))
        self.cfg = cfg
        self.store = RunStore(store_root)
        self.tag = f"ray-{socket.gethostname()[:8]}-{os.getpid()}"

    def _sink(self, method: str, item_id: str, ex: Explanation) -> str:
        ex.save(self.store.explanation_path(method, item_id))
        return self.store.explanation_relpath(method, item_id)

    def __call__(self, batch: Any) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"units": [], "errors": [], "skipped": [], "seen": [], "before": []}
        units: list[tuple[str, Item, list[str]]] = []
        for rec in batch.to_dict("records"):
            if rec["kind"] == "count":
                counts = {"units": 0, "errors": int(rec["errors"]), "skipped": int(rec["skipped"]),
                          "seen": int(rec["seen"]), "before": int(rec["before"])}
                for key, v in counts.items():
                    out[key].append(v)
                continue
            units.append((str(rec["part"]), record_item(rec), json.loads(str(rec["methods"]))))
        if units:
            results = process_items(self.model, [(it, m) for _, it, m in units], self.cfg, self._sink)
            by_part: dict[str, list[dict[str, Any]]] = {}
            n = errors = 0
            for (part, _, methods), rows in zip(units, results, strict=True):
                for r in rows:
                    r["worker"] = self.tag
                by_part.setdefault(part, []).extend(rows)
                n += len(methods)
                errors += sum(1 for r in rows if r.get("level") == PAIR and r.get("error"))
            for part, rows in by_part.items():  # a unit's rows are in one shard; one shard per part
                self.store.write_shard(rows, worker=self.tag, part=part)
            for key, v in (("units", n), ("errors", errors), ("skipped", 0), ("seen", 0), ("before", 0)):
                out[key].append(v)
        return out


# ----------------------------------------------------------------------------------------- driver
def run_ray(
    store: RunStore,
    model_spec: str,
    dataset: Dataset,
    methods: Sequence[str],
    cfg: WorkConfig,
    opts: RayOptions | None = None,
    *,
    shard_size: int = 16,
    batch_size: int = 8,
    progress: bool | None = None,
    retry_errors: bool = False,
) -> UnitCounts:
    """Run every pending unit of ``dataset`` on a Ray cluster; workers write into ``store``.

    Each model actor call explains ``min(batch_size, shard_size)`` items together and writes their
    rows as one shard per dataset part.

    Returns:
        `UnitCounts`.

    Raises:
        InputError: the dataset was not given as ``KIND:PATH``, options are invalid, or the cluster
            does not answer.
        DualexError: the pipeline stopped (a worker failed more than ``max_retries`` times, ...); results
            written so far are kept.
    """
    from dualex.datasets.base import dataset_kinds

    opts = opts or RayOptions()
    if dataset.kind not in dataset_kinds():
        raise InputError(
            f"the ray engine re-opens the dataset in every worker, so it needs one given as KIND:PATH "
            f"({', '.join(dataset_kinds())}), not a {type(dataset).__name__} object"
        )
    if opts.concurrency is not None and opts.concurrency < 1:
        raise InputError(f"concurrency must be >= 1, got {opts.concurrency}")
    connect(opts.address, timeout=opts.connect_timeout)
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0))  # type: ignore[no-untyped-call]  # ray leaves it unannotated
    use_gpu = gpus > 0 and (opts.device is None or str(opts.device).startswith("cuda"))
    n_actors = opts.concurrency or (max(1, int(gpus // opts.num_gpus_per_worker)) if use_gpu else 1)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False

    common: dict[str, Any] = {"dataset": dataset.describe(), "methods": list(methods), "store_root": str(store.root),
                              "retry_errors": retry_errors, "plugins": list(opts.plugins)}  # fmt: skip
    ctor = {"model_spec": model_spec, "cfg": cfg, "store_root": str(store.root),
            "device": None if use_gpu else (opts.device or "cpu"), "dtype": opts.dtype, "plugins": list(opts.plugins)}
    resources: dict[str, Any] = {"num_gpus": opts.num_gpus_per_worker} if use_gpu else {"num_cpus": CPU_ACTOR_CPUS}
    step = max(1, min(batch_size, shard_size))
    plan = dataset.plan()
    before = shard_index(store)
    counts = UnitCounts()
    desc = f"evaluate (ray, {n_actors} actor{'s' * (n_actors > 1)})"
    with bar(None, desc, progress, unit="unit", lines=True) as pbar:
        for attempt in range(opts.max_retries + 1):
            now = shard_index(store) if attempt else before
            parts = [{"part": p, "limit": -1 if n is None else n, "shards": json.dumps(shards_of(now, p)),
                      "before": json.dumps(shards_of(before, p))} for p, n in plan]  # fmt: skip
            readers = max(1, min(len(parts), 2 * n_actors))  # read/decode processes (each imports dualex and torch)
            pipeline = (
                ray.data.from_items(parts, override_num_blocks=max(1, len(parts)))
                .flat_map(functools.partial(read_part, **common), num_cpus=READ_CPUS, max_retries=opts.max_retries,
                          concurrency=readers)
                .map_batches(decode_batch, batch_format="pandas", batch_size=step, num_cpus=READ_CPUS,
                             max_retries=opts.max_retries, concurrency=readers)
                .map_batches(
                    EvalWorker,
                    fn_constructor_kwargs=ctor,
                    batch_size=step,
                    batch_format="pandas",
                    compute=ray.data.ActorPoolStrategy(size=n_actors),
                    max_restarts=0,  # a lost actor fails the attempt; the next one resumes on the nodes left
                    max_task_retries=0,
                    **resources,
                )
            )
            counts = UnitCounts()
            try:
                for batch in pipeline.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                    counts.seen += int(batch["seen"].sum())
                    counts.skipped += int(batch["before"].sum())
                    counts.errors += int(batch["errors"].sum())
                    pbar.update(int(batch["units"].sum()))
                    pbar.set_postfix(errors=counts.errors, refresh=False)
                counts.run = counts.seen - counts.skipped
                return counts
            except Exception as exc:  # Ray wraps worker failures (model not loadable, CUDA errors) in its own types
                if isinstance(exc, DualexError):
                    raise
                first = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
                what = f"{type(exc).__name__}: {first[-1] if first else ''}"
                if not _lost_worker(exc) or attempt == opts.max_retries:
                    raise DualexError(
                        f"the ray engine stopped ({what}); results written so far are kept, re-run the same command "
                        "to resume"
                    ) from None
                n_actors = _fitting_actors(n_actors, use_gpu, opts.num_gpus_per_worker)
                note = (f"dualex: a Ray worker or node was lost ({type(exc).__name__}); resuming the remaining units "
                        f"with {n_actors} actor(s) (retry {attempt + 1} of {opts.max_retries})")  # fmt: skip
                print(note, file=sys.stderr, flush=True)
    raise AssertionError("unreachable")  # pragma: no cover


def _lost_worker(exc: BaseException) -> bool:
    """Whether ``exc`` means a worker process or node was lost (not an error of the work itself)."""
    import ray.exceptions as rx

    lost = (rx.RayActorError, rx.ActorUnavailableError, rx.NodeDiedError, rx.WorkerCrashedError, rx.ObjectLostError,
            rx.OwnerDiedError, rx.RaySystemError)  # fmt: skip
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:  # Ray Data may wrap the error
        if isinstance(e, lost):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _fitting_actors(wanted: int, use_gpu: bool, gpus_per_actor: float, wait: float = 30.0) -> int:
    """Model actors the nodes still alive can hold (at most ``wanted``), once Ray has noticed a lost node."""
    import time

    import ray

    deadline = time.monotonic() + wait
    fit = wanted
    while True:
        alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
        cpus = sum(float(n.get("Resources", {}).get("CPU", 0)) for n in alive)
        gpus = sum(float(n.get("Resources", {}).get("GPU", 0)) for n in alive)
        if use_gpu:
            fit = int(gpus // gpus_per_actor)
        else:
            fit = sum(int(float(n.get("Resources", {}).get("CPU", 0)) // (CPU_ACTOR_CPUS + READ_CPUS)) for n in alive)
        if fit < wanted or time.monotonic() > deadline or cpus <= 0:
            return max(1, min(wanted, fit))
        time.sleep(1.0)
