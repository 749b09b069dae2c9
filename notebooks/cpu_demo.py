"""Work functions for notebook 03 ("CPU-bound work"), in a module of their own.

The problem: a process pool sends a function to its processes by **name** (this module's
name and the function's, pickled), and each process imports this module to find it. A
function defined in a notebook cell lives in the kernel's `__main__`, which a pool process
started with "forkserver" (jobq's choice) cannot import - see `own_work.py` for the long
story. So the work that notebook 03 runs in processes is defined here, and the notebook
imports it:

    from cpu_demo import busy, is_gone

`busy` is one piece of CPU work that leaves evidence on disk: a file with the pid of the
process that runs it (written first) and a file that says it finished (written last). A
deadline that really stopped the work leaves the first file and never the second.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["FINISHED", "PID", "busy", "is_gone"]

PID = "pid"  # busy() writes the id of its process here, first
FINISHED = "finished"  # ... and this, last - only if nobody stopped it


def busy(seconds: float, folder: str) -> int:
    """Compute for `seconds` of real time in pure Python (holding the GIL, like any
    CPU-bound job), leaving `folder/pid` at the start and `folder/finished` at the end.
    Returns how many rounds of arithmetic it did."""
    if seconds < 0:
        raise ValueError(f"busy: seconds must be >= 0, got {seconds}")
    where = Path(folder)
    (where / PID).write_text(str(os.getpid()))
    end = time.perf_counter() + seconds
    rounds = 0
    while time.perf_counter() < end:
        rounds += sum(i * i for i in range(1_000)) > 0  # a little pure-Python work per look
    (where / FINISHED).write_text(str(rounds))
    return rounds


def is_gone(pid: int) -> bool:
    """Has process `pid` exited? (A zombie that nobody has reaped yet counts as gone: it
    runs no code.) Reads /proc, so Linux only."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status
