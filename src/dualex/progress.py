"""Progress bars that stay quiet where nobody watches (tests, pipes, CI logs).

Long runs (``dualex evaluate``) also report where a bar cannot be drawn: when stderr is not a terminal
(a log file, CI, ``nohup``), a bar made with ``lines=True`` prints one plain line at a steady interval
instead (``DUALEX_PROGRESS_INTERVAL`` seconds, default 30; first line after one interval), and a last
line when it closes, unless it finished before its first interval.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

DEFAULT_LINE_INTERVAL = 30.0
"""Seconds between progress lines when stderr is not a terminal."""


def progress_enabled(progress: bool | None) -> bool:
    """``None`` means: show a bar only on an interactive terminal and never under pytest."""
    if progress is not None:
        return bool(progress)
    if _quiet():
        return False
    return sys.stderr.isatty()


def _quiet() -> bool:
    return "PYTEST_CURRENT_TEST" in os.environ or os.environ.get("DUALEX_PROGRESS", "") == "0"


def line_interval() -> float:
    """``DUALEX_PROGRESS_INTERVAL`` (seconds ≥ 0), else `DEFAULT_LINE_INTERVAL`."""
    raw = os.environ.get("DUALEX_PROGRESS_INTERVAL", "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_LINE_INTERVAL
    return value if value >= 0 else DEFAULT_LINE_INTERVAL


class LineProgress:
    """A tqdm stand-in that prints ``desc: done/total unit (pct), rate, eta`` every ``interval`` seconds.

    Supports what the bars here are used for: ``update``, ``set_postfix``, ``close`` and ``with``.
    """

    def __init__(
            self,
            total: int | None,
            desc: str,
            *,
            unit: str = "it",
            interval: float = DEFAULT_LINE_INTERVAL,
            file: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n = 0
        self.postfix = ""
        self._file = file
        self._start = self._last = time.monotonic()
        self._printed = False

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps; print a line when ``interval`` seconds have passed since the last."""
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._print(now)

    def set_postfix(self, refresh: bool = True, **kw: Any) -> None:
        """Set the ``key=value`` text shown after the count in the next line (tqdm's ``set_postfix``)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        """Print the final line, if a line was printed before (once)."""
        if self._printed:
            self._print(time.monotonic(), final=True)
            self._printed = False

    def _print(self, now: float, *, final: bool = False) -> None:
        elapsed = now - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.3g} {self.unit}/s" if rate >= 0.1 else f"{rate * 3600:.3g} {self.unit}/h")
        parts.append(f"elapsed {_clock(elapsed)}")
        if self.total and rate > 0 and not final:
            parts.append(f"eta {_clock((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        print(f"{self.desc}: {', '.join(parts)}" + (" (done)" if final else ""), file=self._file or sys.stderr,
              flush=True)
        self._printed = True


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def bar(total: int | None, desc: str, progress: bool | None = None, *, lines: bool = False, **kw: Any) -> Any:
    """A tqdm bar, disabled according to `progress_enabled`.

    With ``lines=True`` and ``progress=None``, a stderr that is not a terminal gets a `LineProgress`
    (one line every `line_interval` seconds) instead of no report at all.
    """
    if lines and progress is None and not _quiet() and not sys.stderr.isatty():
        return LineProgress(total, desc, unit=str(kw.get("unit", "it")), interval=line_interval())
    return tqdm(total=total, desc=desc, disable=not progress_enabled(progress), leave=False, **kw)
