"""Your own work through jobq: an example module to copy.

The problem: real work comes in two shapes, and each needs a different place to run. Work
that *waits* (an HTTP request, a database query) should wait on the event loop, where a
thousand waits overlap. Work that *computes* holds the CPU, and on the loop it would freeze
everything else - it belongs in a process (or a thread). So each job says which it is:

    Call(fetch, 3)          await fetch(3) on the event loop        - an `async def`
    Blocking(crunch, 3)     crunch(3) in the pipeline's executor    - a plain `def`

and `jobs()` gives the run its jobs. From a terminal, in the directory that holds
`examples/`:

    python -m jobq run examples.my_jobs:jobs --workers 4

or from Python, with the same jobs:

    async with jobq.Pipeline(workers=4) as pipe:
        await pipe.submit_many(jobs())

The functions live at the top level of an importable module, not in `__main__` or a
notebook cell: a process pool sends `crunch` to its processes *by name*, and each of them
imports this module to find it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from jobq import Blocking, Call


async def fetch(item: int) -> str:
    """Stands in for an I/O call (an HTTP request, a query): it mostly waits."""
    await asyncio.sleep(0.05 + 0.01 * (item % 5))  # 50..90 ms, different for each item
    return f"item {item}"


def crunch(rounds: int) -> int:
    """Stands in for CPU work (parsing, resizing an image): it computes the whole time."""
    total = 0
    for i in range(rounds):
        total = (total * 31 + i) % 1_000_003
    return total


def jobs() -> Iterator[Call[str] | Blocking[int]]:
    """20 jobs, the same every run: every fourth one crunches, the others fetch.

    A generator: the pipeline takes one job at a time, as the queue has room, so a
    generator of a million jobs never holds a million jobs in memory.
    """
    for item in range(20):
        if item % 4 == 3:
            yield Blocking(crunch, 200_000)  # about 30 ms of pure-Python work
        else:
            yield Call(fetch, item)
