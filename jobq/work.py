"""The CPU work a CpuBound job does, and the check that keeps process pools honest.

`cpu_work` is pure Python on purpose: it holds the GIL the whole time, so it shows exactly
what the series teaches - run inline it freezes the event loop, in a thread pool it still
competes for the GIL, in a process pool it runs in parallel on another core.

It lives in this importable module because a process pool sends the *name* of the function
to the child process, which imports it. A function defined in a notebook lives in
`__main__` of the kernel, which a child started by "spawn" or "forkserver" cannot import.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from jobq.errors import NotImportableError

__all__ = ["CpuFunction", "check_importable", "cpu_work"]

# A CPU work function: (iterations, payload) -> a checksum.
CpuFunction = Callable[[int, bytes], int]

_FNV_OFFSET = 2166136261
_FNV_PRIME = 16777619


def cpu_work(iterations: int, payload: bytes) -> int:
    """Mix the payload `iterations` times (FNV-1a style); about 0.1 us... 0.2 us per round."""
    data = payload or b"\0"
    size = len(data)
    h = _FNV_OFFSET ^ size
    for i in range(iterations):
        h = ((h ^ data[i % size]) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def crash_work(iterations: int, payload: bytes) -> int:
    """What a CpuBound job on the failure plan's `crash` list runs: its process dies."""
    os._exit(70)


def check_importable(function: Callable[..., object]) -> None:
    """Refuse, with an explanation, a function a child process could not import."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", repr(function))
    if module in (None, "__main__") or "<lambda>" in qualname or "<locals>" in qualname:
        where = "a lambda" if "<lambda>" in qualname else (
            "a nested function" if "<locals>" in qualname else f"module {module!r}"
        )
        raise NotImportableError(
            f"cpu_function {qualname!r} is defined in {where}, which a process-pool worker "
            "cannot import (it receives the function by name). Move it into a .py module "
            "next to the notebook and import it from there, or use executor='thread'."
        )
