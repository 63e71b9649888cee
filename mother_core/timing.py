"""Wall-clock seconds per stage of a run: where the time of ``mother recover`` goes.

The stages are marked where they happen (``with stage("planning"): ...``) and cost nothing unless a
:class:`StageClock` is running (``mother recover --timings``, ``benchmarks/disk_speed.py``). The clock
lives in a context variable, so the engine's signatures stay as they are and two runs in two threads (the
app's sessions) each time their own stages.

Examples
--------
>>> from mother_core.timing import StageClock, stage
>>> with StageClock() as clock:
...     with stage("planning"):
...         pass
>>> list(clock.seconds)
['planning']
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Iterator

_CURRENT: ContextVar["StageClock | None"] = ContextVar("mother_stage_clock", default=None)


class StageClock:
    """Wall and CPU seconds per stage name, in the order the stages first ran (a stage run twice adds up).

    CPU seconds are the whole process's (every thread, user + system): on a shared machine other work
    stretches wall time but not them.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self._token: Token[StageClock | None] | None = None

    def __enter__(self) -> "StageClock":
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None

    def add(self, name: str, seconds: float, cpu_seconds: float = float("nan")) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + cpu_seconds

    def table(self) -> str:
        """The stages as aligned ``name  seconds s  (cpu seconds cpu)`` lines, with their total."""
        width = max([len(n) for n in self.seconds] + [5])
        rows = list(self.seconds.items()) + [("total", sum(self.seconds.values()))]
        cpu = dict(self.cpu_seconds, total=sum(self.cpu_seconds.values()))
        return "\n".join(f"{name:<{width}}  {s:8.3f} s  ({cpu.get(name, float('nan')):.3f} s cpu)" for name, s in rows)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage ``name`` of the running :class:`StageClock` (nothing when none runs)."""
    clock = _CURRENT.get()
    if clock is None:
        yield
        return
    began, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        clock.add(name, time.perf_counter() - began, time.process_time() - cpu)


def seconds_since_process_start() -> float | None:
    """Wall seconds since this process started (Linux ``/proc``; None elsewhere, and 10 ms resolution):
    the interpreter's start-up and imports, as seen from inside the run (its CPU seconds so far are
    ``time.process_time()``)."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            # Field 22, after the parenthesised command name (which may itself hold spaces).
            started_ticks = int(fh.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
