"""Dataset-scale evaluation: run methods over a dataset, score them, keep results in a run directory.

* `dualex.evaluation.store`: the run-directory format (manifest, Parquet shards, explanation files).
* `dualex.evaluation.run`: `evaluate(...)`, the resumable driver behind ``dualex evaluate``.
* `dualex.evaluation.work`: `process_item`, the per-item work the engines (`engine_local`, `engine_ray`) run.
* `dualex.evaluation.summary`: overall and per-class tables.
"""

from __future__ import annotations

from dualex.evaluation.store import RunStore, load_explanation, read_run

__all__ = ["RunStore", "load_explanation", "read_run"]
