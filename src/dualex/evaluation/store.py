"""The run directory: where `dualex evaluate` keeps its results, and how a run resumes.

Layout (see ``docs/run-format.md`` for the full contract)::

    RUN_DIR/
      manifest.json                      what was run: model, dataset, methods, options, dualex version
      .lock                              held while a run writes here (PID, host, start time)
      shards/part-<ns>-<worker>-<rand>.parquet   result rows, written atomically (tmp + os.replace)
      explanations/<method>/<item>.safetensors   one `Explanation.save` file per (item, method)
      summary/overall.csv, per_class.csv, errors.csv, summary.md   tables (rewritten after every run)

A *unit* of work is one (item, method). All rows of a unit (one pair-level row plus one row per
ground-truth object) are written in the same shard, and a shard only appears under its final name once
it is complete, so a unit is either fully recorded or not at all. Resuming = reading the unit keys of
all shards and skipping them. If a unit occurs in several shards (it was retried), the newest shard
wins; `read_rows` returns each unit once.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dualex.errors import InputError

RUN_FORMAT = "dualex.run"
RUN_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
# Error stages that mean the run directory could not be written (not the item's fault).
IO_ERROR_STAGES = ("save:",)
SHARD_DIR = "shards"
EXPLANATION_DIR = "explanations"
SUMMARY_DIR = "summary"
SHARD_GLOB = "part-*.parquet"

PAIR = "pair"
OBJECT = "object"


def _base_fields() -> list[tuple[str, Any]]:
    """The columns every shard has, with their pyarrow types (metric columns come after them)."""
    import pyarrow as pa

    return [
        ("item_id", pa.string()),
        ("method", pa.string()),
        ("object", pa.int32()),
        ("level", pa.string()),
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("image_id", pa.string()),
        ("caption", pa.string()),
        ("class_name", pa.string()),
        ("phrase", pa.string()),
        ("span_start", pa.int32()),
        ("span_end", pa.int32()),
        ("boxes", pa.list_(pa.list_(pa.float32()))),
        ("n_tokens", pa.int32()),
        ("n_patches", pa.int32()),
        ("units", pa.string()),  # of the explanation's terms (cosine or score); null before 0.3
        ("score", pa.float64()),  # the model's own score of the pair
        ("cosine", pa.float64()),
        ("seconds", pa.float64()),  # wall time of the explanation
        ("seconds_load", pa.float64()),  # the item's load + prepare, shared by the methods run for it together
        ("seconds_save", pa.float64()),  # writing the explanation file
        ("explanation", pa.string()),
        ("error", pa.string()),
        ("error_type", pa.string()),
        ("worker", pa.string()),
    ]


#: The columns every shard has, in order. Metric columns follow, named by what the metrics return.
BASE_COLUMNS: tuple[str, ...] = (
    "item_id", "method", "object", "level", "dataset", "split", "image_id", "caption", "class_name", "phrase",
    "span_start", "span_end", "boxes", "n_tokens", "n_patches", "units", "score", "cosine", "seconds",
    "seconds_load", "seconds_save", "explanation", "error", "error_type", "worker",
)  # fmt: skip
#: Base columns that are measurements (averaged by the summary and `dualex compare` like metric columns).
MEASURED_COLUMNS = ("score", "cosine", "seconds")
#: Prefix of stage timings (``seconds_load``, ``seconds_<metric>``): recorded, not summarised.
TIMING_PREFIX = "seconds_"
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def value_columns(df: Any) -> list[str]:
    """The numeric measurement columns of result rows: metric columns, then score, cosine and seconds.

    Every numeric column that is not a base column of the shard schema and not a stage timing
    (``seconds_*``) is a metric column; the summary and `dualex compare` aggregate exactly these.
    """
    import pandas as pd

    def numeric(c: str) -> bool:
        col = df[c]
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            return False
        return bool(col.notna().any())

    metric = [c for c in df.columns if c not in BASE_COLUMNS and not str(c).startswith(TIMING_PREFIX)]
    return [c for c in [*metric, *MEASURED_COLUMNS] if c in df.columns and numeric(c)]


def _value_kind(value: Any) -> str | None:
    """``"number"``, ``"text"`` or ``"numbers"`` (a 1-D sequence of numbers); None for a null."""
    import numbers

    if value is None:
        return None
    if isinstance(value, (numbers.Number,)) or (hasattr(value, "ndim") and getattr(value, "ndim", 1) == 0):
        return "number"
    if isinstance(value, str):
        return "text"
    seq = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(seq, (list, tuple)) and all(isinstance(v, numbers.Number) for v in seq):
        return "numbers"
    raise InputError(f"unsupported value {value!r:.60} ({type(value).__name__}); metric values are numbers, "
                     "strings or 1-D sequences of numbers")  # fmt: skip


def _clean(kind: str | None, value: Any) -> Any:
    if kind == "number":
        v = float(value)
        return v if v == v else None  # NaN -> null
    if kind == "numbers":
        return [float(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
    return value


def _arrow_type(kind: str | None) -> Any:
    import pyarrow as pa

    return {"number": pa.float64(), "text": pa.string(), "numbers": pa.list_(pa.float32()), None: pa.null()}[kind]


def shard_table(rows: Sequence[Mapping[str, Any]]) -> Any:
    """Result rows as one pyarrow table: the base columns, then one column per other name in the rows.

    The type of a metric column comes from its values: numbers (and booleans) are float64 with NaN
    stored as null, strings are strings, 1-D sequences of numbers are list<float32>; a column with only
    nulls has the null type (it takes the other shards' type when runs are read).

    Raises:
        InputError: a column name is not ``[a-z0-9_]``, or a column holds values of different kinds.
    """
    import pyarrow as pa

    base = _base_fields()
    kinds: dict[str, str | None] = {}
    for r in rows:
        for key, value in r.items():
            if key in BASE_COLUMNS:
                continue
            if not isinstance(key, str) or not _NAME.match(key):
                raise InputError(f"result column {key!r} is not a valid name ([a-z0-9_])")
            kind = _value_kind(value)
            old = kinds.setdefault(key, kind)
            if old is None:
                kinds[key] = kind
            elif kind is not None and kind != old:
                raise InputError(f"result column {key!r} holds {old} in one row and {kind} in another")
    data: dict[str, list[Any]] = {}
    for name, typ in base:
        vals = [r.get(name) for r in rows]
        if pa.types.is_floating(typ):
            vals = [_clean("number", v) if v is not None else None for v in vals]
        data[name] = vals
    for name, kind in kinds.items():
        data[name] = [_clean(kind, r.get(name)) if r.get(name) is not None else None for r in rows]
    schema = pa.schema([*base, *((n, _arrow_type(k)) for n, k in kinds.items())])
    return pa.Table.from_pydict(data, schema=schema)


PART_KEY = b"dualex:part"
UNITS_KEY = b"dualex:units"


def part_tag(part: str) -> str:
    """The tag of a dataset part in shard names: ``p`` and 10 hex digits of its SHA-1."""
    return "p" + hashlib.sha1(part.encode("utf-8")).hexdigest()[:10]


def footer_metadata(part: str, rows: Sequence[Mapping[str, Any]]) -> dict[bytes, bytes]:
    """The footer key-value metadata of a shard of ``part`` holding ``rows`` (its unit keys, in order)."""
    units: dict[tuple[str, str], str | None] = {}
    for r in rows:
        key = (str(r["item_id"]), str(r["method"]))
        units.setdefault(key, None)
        if r.get("level") == PAIR and r.get("error") is not None:
            units[key] = str(r["error"])
    return {
        PART_KEY: part.encode("utf-8"),
        UNITS_KEY: json.dumps([[i, m, e] for (i, m), e in units.items()]).encode("utf-8"),
    }


def safe_name(item_id: str) -> str:
    """A file-name-safe, collision-free version of an item id (used for explanation files)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id).strip("._") or "item"
    if clean != item_id or len(clean) > 120:
        clean = f"{clean[:100]}-{hashlib.sha1(item_id.encode()).hexdigest()[:10]}"
    return clean


def now_iso() -> str:
    """The current UTC time as ISO 8601 with seconds (manifest and lock times)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


class RunStore:
    """One run directory: manifest, shards, explanation files, summaries.

    Args:
        root: The run directory (created if missing).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ paths
    @property
    def manifest_path(self) -> Path:
        """``RUN_DIR/manifest.json``."""
        return self.root / MANIFEST

    @property
    def shard_dir(self) -> Path:
        """``RUN_DIR/shards``."""
        return self.root / SHARD_DIR

    @property
    def summary_dir(self) -> Path:
        """``RUN_DIR/summary``."""
        return self.root / SUMMARY_DIR

    def explanation_relpath(self, method: str, item_id: str) -> str:
        """Path of the explanation file of (item, method), relative to the run directory (POSIX)."""
        return f"{EXPLANATION_DIR}/{safe_name(method)}/{safe_name(item_id)}.safetensors"

    def explanation_path(self, method: str, item_id: str) -> Path:
        """Absolute path of the explanation file of (item, method) (`explanation_relpath` under the run)."""
        return self.root / self.explanation_relpath(method, item_id)

    # ------------------------------------------------------------------ lock
    @property
    def lock_path(self) -> Path:
        """``RUN_DIR/.lock``."""
        return self.root / LOCK

    def acquire(self) -> None:
        """Take the run directory's lock (``RUN_DIR/.lock``: holder's PID, host and start time).

        A lock left by a process of this host that no longer runs (killed) is taken over.

        Raises:
            InputError: another run holds the lock (naming its PID and host), or the folder cannot be written.
        """
        import socket

        self.root.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso()}
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read_lock()
                if holder.get("host") == me["host"] and not _pid_alive(holder.get("pid")):
                    self.lock_path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise InputError(
                    f"{self.root} is in use by another dualex evaluate (pid {holder.get('pid', '?')} on host "
                    f"{holder.get('host', '?')}, since {holder.get('started', '?')}); wait for it to finish, or "
                    f"delete {self.lock_path} if that process is gone"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return
        raise InputError(f"cannot take the lock {self.lock_path}; delete it if no run is using {self.root}")

    def release(self) -> None:
        """Give the lock back (only if this process holds it).

        A lock that cannot be removed (the folder became read-only) is left: it names this process, so
        the next run on this host takes it over once this process has ended. Never raises, so the error
        that stopped a run is the one the user sees.
        """
        if self._read_lock().get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                self.lock_path.unlink(missing_ok=True)

    def _read_lock(self) -> dict[str, Any]:
        try:
            d = json.loads(self.lock_path.read_text())
            return d if isinstance(d, dict) else {}
        except (OSError, ValueError):
            return {}

    # ------------------------------------------------------------------ manifest
    def exists(self) -> bool:
        """Whether the directory holds a run (has a manifest)."""
        return self.manifest_path.exists()

    def read_manifest(self) -> dict[str, Any]:
        """The stored manifest, checked (raises `InputError` for a missing, invalid or newer one)."""
        if not self.manifest_path.exists():
            raise InputError(f"{self.root} is not a dualex run directory (no {MANIFEST})")
        try:
            m: dict[str, Any] = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{self.manifest_path} is not valid JSON ({exc})") from None
        if m.get("format") != RUN_FORMAT:
            raise InputError(f"{self.manifest_path} is not a dualex run manifest")
        if int(m.get("version", 0)) > RUN_FORMAT_VERSION:
            raise InputError(f"run format version {m['version']} is newer than this dualex ({RUN_FORMAT_VERSION})")
        return m

    def open(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create the run, or check that an existing one is the same run (for resuming).

        ``manifest`` holds ``model``, ``dataset`` (dict with ``kind``, ``path``, ``options``), ``methods``
        (list of names), ``method_options`` (per method) and ``options`` (run options that change results,
        e.g. metric settings). New methods may be added to an existing run; everything else must match.

        Returns:
            The manifest as stored.

        Raises:
            InputError: the directory holds a different run.
        """
        from dualex import __version__

        new = {
            "format": RUN_FORMAT,
            "version": RUN_FORMAT_VERSION,
            "dualex_version": __version__,
            "created": now_iso(),
            **{k: _plain(v) for k, v in manifest.items()},
        }
        if not self.exists():
            if self.root.exists() and any(p.name != LOCK for p in self.root.iterdir()):
                stray = [p.name for p in self.root.iterdir() if p.name != LOCK][:5]
                raise InputError(
                    f"{self.root} exists and is not empty ({', '.join(stray)}...) but has no {MANIFEST}; "
                    "choose a new --out directory"
                )
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.manifest_path, json.dumps(new, indent=2, sort_keys=True))
            return new
        old = self.read_manifest()
        for key in ("model", "dataset", "options"):
            if old.get(key) != new.get(key):
                raise InputError(
                    f"{self.root} holds a run with {key} {json.dumps(old.get(key))}, not {json.dumps(new.get(key))}; "
                    "resume it with the same settings or choose a new --out directory"
                )
        old_opts = old.get("method_options", {})
        for meth, opts in new.get("method_options", {}).items():
            if meth in old_opts and old_opts[meth] != opts:
                raise InputError(
                    f"{self.root} ran method {meth!r} with options {json.dumps(old_opts[meth])}, not "
                    f"{json.dumps(opts)}; choose a new --out directory to change them"
                )
        merged = dict(old)
        merged["methods"] = list(dict.fromkeys([*old.get("methods", []), *new.get("methods", [])]))
        merged["method_options"] = {**old_opts, **new.get("method_options", {})}
        merged.setdefault("resumed", []).append({"at": now_iso(), "dualex_version": __version__})
        atomic_write_text(self.manifest_path, json.dumps(merged, indent=2, sort_keys=True))
        return merged

    # ------------------------------------------------------------------ shards
    def shards(self) -> list[Path]:
        """Complete shards, oldest first (names start with a nanosecond timestamp)."""
        if not self.shard_dir.exists():
            return []
        return sorted(self.shard_dir.glob(SHARD_GLOB))

    def clean_tmp(self) -> int:
        """Remove temporary files a killed run left behind. Returns how many were removed."""
        n = 0
        for d in (self.shard_dir, self.root / EXPLANATION_DIR):
            if d.exists():
                for p in d.rglob(".tmp-*"):
                    p.unlink(missing_ok=True)
                    n += 1
                for p in d.rglob("*.safetensors.tmp"):
                    p.unlink(missing_ok=True)
                    n += 1
        return n

    def write_shard(
        self, rows: Sequence[Mapping[str, Any]], *, worker: str = "local", part: str | None = None
    ) -> Path | None:
        """Write rows as one new shard, atomically. Rows of a unit must all be in the same call.

        Args:
            rows: Result rows (every row of each unit they hold).
            worker: Who wrote them (a column, and part of the shard's name).
            part: The dataset part the rows come from (`dualex.datasets.Dataset.parts`): its tag goes
                into the shard's name and the part and the shard's unit keys into its Parquet footer,
                so that resuming a part reads only its own shards' footers
                (`dualex.evaluation.resume`).

        Returns:
            The shard path, or None when ``rows`` is empty.
        """
        if not rows:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return self._write_shard(rows, worker, pa, pq, part)
        except OSError as exc:
            raise InputError(
                f"cannot write results to {self.shard_dir} ({exc.strerror or exc}); fix that and run the same "
                "command again: recorded units are kept, the others are redone"
            ) from None

    def _write_shard(
        self, rows: Sequence[Mapping[str, Any]], worker: str, pa: Any, pq: Any, part: str | None = None
    ) -> Path:
        recs = [{**r, "worker": r.get("worker") or worker} for r in rows]
        table = shard_table(recs)
        tag = re.sub(r"[^A-Za-z0-9]+", "", worker)[:16] or "w"
        if part is None:
            name = f"part-{time.time_ns():020d}-{tag}-{uuid.uuid4().hex[:6]}.parquet"
        else:
            name = f"part-{time.time_ns():020d}-{tag}-{part_tag(part)}-{uuid.uuid4().hex[:6]}.parquet"
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **footer_metadata(part, recs)})
        final = self.shard_dir / name
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.shard_dir / f".tmp-{name}"
        try:
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        return final

    def _read_shard(self, path: Path, columns: Sequence[str] | None) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            if not columns:
                return pq.read_table(path)
            present = set(pq.read_schema(path).names)
            table = pq.read_table(path, columns=[c for c in columns if c in present])
            types = dict(_base_fields())
            for c in columns:  # columns added to the format later, or a metric not in this shard: null
                if c not in present:
                    table = table.append_column(c, pa.nulls(table.num_rows, types.get(c, pa.null())))
            return table
        except Exception as exc:  # a damaged shard: its units are redone
            warnings.warn(f"ignoring unreadable shard {path.name} ({exc}); its items will be recomputed", stacklevel=3)
            return None

    def iter_tables(self, columns: Sequence[str] | None = None) -> Iterable[tuple[Path, Any]]:
        """``(path, pyarrow table)`` of every readable shard, oldest first (``columns``: those to read)."""
        for p in self.shards():
            t = self._read_shard(p, columns)
            if t is not None:
                yield p, t

    def done_keys(self, *, retry_errors: bool = False) -> set[tuple[str, str]]:
        """(item_id, method) units already recorded.

        Units whose newest pair row records an I/O error of the run directory (stage ``save``: the
        explanation file could not be written) are never counted as done: they are not the item's
        fault. With ``retry_errors`` units whose newest record has any pair-level error are not
        counted as done either.
        """
        latest: dict[tuple[str, str], str | None] = {}  # unit -> pair-level error of its newest shard
        for _, t in self.iter_tables(["item_id", "method", "level", "error"]):
            d = t.to_pydict()
            failed: dict[tuple[str, str], str | None] = {}
            for item, meth, level, err in zip(d["item_id"], d["method"], d["level"], d["error"], strict=True):
                key = (item, meth)
                failed.setdefault(key, None)
                if level == PAIR and err is not None:
                    failed[key] = err
            latest.update(failed)
        return {k for k, err in latest.items() if not (err is not None and (retry_errors or is_io_error(err)))}

    def read_rows(self, columns: Sequence[str] | None = None) -> Any:
        """All result rows as a pandas DataFrame, each unit once (from its newest shard).

        Args:
            columns: Columns to read (``item_id`` and ``method`` are always read).
        """
        import pandas as pd
        import pyarrow as pa

        cols = None if columns is None else list(dict.fromkeys(["item_id", "method", *columns]))
        tables = []
        for i, (_, t) in enumerate(self.iter_tables(cols)):
            tables.append(t.append_column("_shard", pa.array([i] * t.num_rows, pa.int64())))
        if not tables:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in (cols or BASE_COLUMNS)})
        try:  # shards may differ in metric columns: missing ones are null, null-typed ones take the others' type
            df = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InputError(f"the shards of {self.root} disagree on a column's type ({exc})") from None
        newest = df.groupby(["item_id", "method"], sort=False)["_shard"].transform("max")
        df = df[df["_shard"] == newest].drop(columns="_shard").reset_index(drop=True)
        return df


def is_io_error(error: str) -> bool:
    """Whether a row's ``error`` is a failure to write into the run directory (retried on every resume)."""
    return error.startswith(IO_ERROR_STAGES)


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def read_run(run_dir: str | Path, columns: Sequence[str] | None = None) -> Any:
    """Result rows of a run directory as a pandas DataFrame (one row per item × method × object).

    Pair-level rows have ``level == "pair"`` and ``object == -1``; object rows have ``level == "object"``.
    """
    store = RunStore(run_dir)
    store.read_manifest()
    return store.read_rows(columns)


def load_explanation(run_dir: str | Path, row: Mapping[str, Any]) -> Any:
    """The `Explanation` a result row points to (its ``explanation`` column)."""
    from dualex.explanation import Explanation

    rel = row.get("explanation")
    if not rel:
        raise InputError(f"row ({row.get('item_id')}, {row.get('method')}) has no explanation file")
    return Explanation.load(Path(run_dir) / rel)


def _plain(x: Any) -> Any:
    """JSON round-trip form (tuples -> lists) so that manifests compare equal after reading back."""
    return json.loads(json.dumps(x, default=str))
