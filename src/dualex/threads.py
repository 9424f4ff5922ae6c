"""CPU threads for dualex's torch work: a default that degrades gracefully on a shared machine.

Two OpenMP threads that spin-wait for each other on a loaded 2-core machine made one ij call 10×
slower (3.5 s instead of 0.32 s alone; one thread, or passive waiting: 1.2–1.3 s). dualex therefore

* asks the OpenMP runtime to let idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``), set when ``dualex``
  is imported before torch and the variable is unset (`passive_wait_policy`); and
* uses, in the ``dualex`` command (``--threads N``), the first of: ``--threads``, the environment
  variable ``DUALEX_THREADS``, ``OMP_NUM_THREADS``, else the CPUs that are idle now (usable CPUs minus
  the one-minute load average, at least 1). Importing dualex applies ``DUALEX_THREADS`` when it is set
  (so evaluation workers inherit the command's choice) and otherwise leaves torch's setting alone.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

ENV = "DUALEX_THREADS"


def passive_wait_policy() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set or torch is already loaded; True if it was set."""
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota if there is one."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _positive(value: str | None, source: str) -> int | None:
    if value is None or not value.strip():
        return None
    from dualex.errors import InputError

    try:
        n = int(value)
    except ValueError:
        raise InputError(f"{source} must be a positive integer, got {value!r}") from None
    if n < 1:
        raise InputError(f"{source} must be a positive integer, got {value!r}")
    return n


def default_threads() -> int:
    """``DUALEX_THREADS``, else ``OMP_NUM_THREADS``, else the idle CPUs (usable minus load, at least 1)."""
    for var in (ENV, "OMP_NUM_THREADS"):
        n = _positive(os.environ.get(var), var)
        if n is not None:
            return n
    cpus = usable_cpus()
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - non-Unix
        return cpus
    return max(1, min(cpus, cpus - round(load)))


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: `default_threads`) and export ``DUALEX_THREADS``.

    Returns:
        The number of threads set.
    """
    n = _positive(str(threads), "--threads") if threads is not None else default_threads()
    assert n is not None
    import torch

    torch.set_num_threads(n)
    os.environ[ENV] = str(n)
    return n


def apply_env() -> None:
    """Apply ``DUALEX_THREADS`` if it is set (called when dualex is imported)."""
    n = _positive(os.environ.get(ENV), ENV)
    if n is not None:
        import torch

        torch.set_num_threads(n)
