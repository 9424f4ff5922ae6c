"""Timing and peak-memory measurement, and the ``dualex bench`` subcommand.

Peak memory is the CUDA allocator's peak on GPU, and the growth of the process's peak resident set
size over the call on CPU (an upper-bound-free lower estimate: allocations freed before the call
started are not counted).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass
class Measurement:
    """Timing and peak memory of a measured callable (see `measure`).

    Attributes:
        seconds: Median wall-clock time of one call, in seconds.
        seconds_all: Wall-clock time of each measured call, in seconds (warm-up calls excluded).
        peak_bytes: Peak memory of the measured calls above the baseline, in bytes (see the module docstring).
        device: The device the calls ran on, as a string (e.g. ``"cpu"``, ``"cuda:0"``).
    """

    seconds: float  # median wall-clock time per call
    seconds_all: list[float]
    peak_bytes: int  # peak memory of one call (see module docstring)
    device: str

    @property
    def peak_gib(self) -> float:
        """Peak resident memory above the baseline, in GiB."""
        return self.peak_bytes / 2**30


def _rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _rss_now_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:  # pragma: no cover - non-Linux
        return _rss_peak_bytes()


def measure(fn: Callable[[], Any], *, device: torch.device, repeat: int = 3, warmup: int = 1) -> Measurement:
    """Run ``fn`` ``warmup + repeat`` times; median time and peak memory of the measured calls."""
    for _ in range(warmup):
        fn()
    times = []
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_now_bytes()
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = max(0, _rss_peak_bytes() - base)
    return Measurement(statistics.median(times), times, int(peak), str(device))


ORDER = 40  # position of these subcommands in ``dualex --help``


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` to ``sub``."""
    from dualex.cli.args import add_device, add_json, add_method, add_method_options, command

    p = command(sub, "bench", run_bench)
    p.add_argument("--model", default="shapes", help="model name, as for `dualex explain` (default: shapes)")
    add_method(p)
    p.add_argument("--caption", default="a red circle and a blue square", help="the caption to explain")
    p.add_argument("--image", default=None, help="image file (default: a seeded random 224×224 image)")
    p.add_argument("--repeat", type=int, default=3, help="measured calls (default: 3)")
    add_device(p)
    add_method_options(p, "method option KEY=VALUE (JSON values), e.g. -O n_steps=20", metavar="KEY=VALUE")
    add_json(p, "the measurement")


def run_bench(args: argparse.Namespace) -> int:
    """Time one explanation method on one model (time and peak memory).

    Explain one (image, caption) pair REPEAT times after one warm-up call and print the median wall-clock time per
    explanation and the peak memory of a call (CUDA allocator peak on GPU, growth of the resident set on CPU).
    """
    import numpy as np

    import dualex
    from dualex.errors import InputError
    from dualex.methods import check_method_options, explain_pair

    if args.repeat < 1:
        raise InputError(f"--repeat must be at least 1, got {args.repeat}")
    options = dict(args.option)
    check_method_options(args.method, options)
    model = dualex.load(args.model, device=args.device)
    image = args.image if args.image else np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    pair = model.prepare(image, args.caption)
    m = measure(lambda: explain_pair(model, pair, args.method, **options), device=model.device, repeat=args.repeat)
    if args.json:
        json.dump({"model": args.model, "method": args.method, **asdict(m)}, sys.stdout)
        print()
    else:
        print(f"{args.method} on {args.model} ({m.device}): {m.seconds:.3f} s per explanation, "
              f"peak {m.peak_gib:.2f} GiB")
    return 0
