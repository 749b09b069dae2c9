"""CPU work for notebook 08 ("Bring your own work"), in a module of its own.

The problem: a process pool does not send a *function* to its processes, it sends the
function's **name** - `own_work.count_primes`, pickled - and each process imports this module
to find it. A function defined in a notebook cell lives in the kernel's `__main__`, which a
pool process started with "forkserver" (jobq's choice, and Python 3.14's default on Linux)
or "spawn" cannot import. So `Blocking(...)` jobs that run in processes take their
functions from here:

    from own_work import count_primes
    handle = await pipe.submit(Blocking(count_primes, 20_000))

The notebook's directory is on the kernel's `sys.path` (it is the working directory), and
pool processes start with the same `sys.path`, so they find this file too.

Rules for a function a process pool can run: defined at the top level of a module (not
nested, not a lambda); arguments and result that pickle (numbers, strings, bytes, tuples,
lists, dicts of those); and no reliance on state of the parent process - a pool process is
another process: it sees neither the notebook's variables nor its open files.
"""

from __future__ import annotations

import os

__all__ = ["count_primes", "where_am_i"]


def count_primes(below: int) -> int:
    """How many primes are smaller than `below`? Trial division in pure Python: it holds the
    CPU (and the GIL) the whole time, the kind of work that belongs in a process."""
    if below < 0:
        raise ValueError(f"count_primes: below must be >= 0, got {below}")
    count = 0
    for n in range(2, below):
        d = 2
        while d * d <= n:
            if n % d == 0:
                break
            d += 1
        else:
            count += 1
    return count


def where_am_i() -> int:
    """The id of the process that runs this call - to see that a Blocking job ran elsewhere."""
    return os.getpid()
