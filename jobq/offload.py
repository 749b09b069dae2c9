"""Getting CPU work off the event loop: the counterpart of tokio's spawn_blocking.

The problem: the event loop runs one callback at a time. A job that computes for 50 ms on the
loop freezes every other task for 50 ms - heartbeats, HTTP requests, the dispatcher. So CPU
work runs elsewhere and the loop only *awaits* its result:

    "process"  a ProcessPoolExecutor: real parallelism, one core per process (the default)
    "thread"   a ThreadPoolExecutor: keeps the loop free only while the work releases the GIL
               (C code such as hashlib or numpy does; a pure-Python loop mostly does not)
    "inline"   on the loop itself - the broken version, kept to show what goes wrong

Processes start with "forkserver": forking a process that runs threads (Jupyter's kernel,
our local HTTP server) is unsafe and deprecated from Python 3.12, and forkserver is the
default from 3.14 anyway - so what works here works there.

If a worker process dies (os._exit, a segfault, the OOM killer), the pool is "broken": every
job on it fails with BrokenProcessPool. We rebuild the pool and report a WorkerCrashedError
for the job, which is retried like any other failure - on a process of its own
(`isolated=True`), because the pool cannot tell us which job killed it: retried side by side
on the shared pool, the innocent jobs would die with the guilty one on every retry.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Literal

from jobq.errors import InvalidConfigError, WorkerCrashedError
from jobq.work import CpuFunction, check_importable, cpu_work, crash_work

__all__ = ["CpuOffload", "ExecutorKind"]

ExecutorKind = Literal["process", "thread", "inline"]

_CONTEXT = multiprocessing.get_context("forkserver")


def _process_pool(workers: int) -> ProcessPoolExecutor:
    # The fork server imports jobq once, and every worker process forked from it starts with
    # jobq imported: a new process (a first pool, a pool rebuilt after a crash, an isolated
    # retry) takes tens of milliseconds instead of a second of importing jobq again. Set here,
    # not at import, so that `import jobq` changes nothing in multiprocessing; it only takes
    # effect if the fork server is not running yet ("__main__" is the default we keep).
    _CONTEXT.set_forkserver_preload(["__main__", "jobq.work"])
    # A terminal's Ctrl-C sends SIGINT to the whole process group, pool processes included.
    # They ignore it: the parent decides what an interrupt means (drain, then cancel), and a
    # KeyboardInterrupt inside a child would kill its job and break the pool. (signal.signal
    # is a builtin, so the child can unpickle it as the initializer.)
    return ProcessPoolExecutor(workers, mp_context=_CONTEXT, initializer=signal.signal,
                               initargs=(signal.SIGINT, signal.SIG_IGN))


class CpuOffload:
    """Runs CPU work functions in the chosen kind of executor, created on first use."""

    def __init__(
        self,
        kind: ExecutorKind | Executor = "process",
        *,
        max_workers: int = 4,
        function: CpuFunction = cpu_work,
    ) -> None:
        if isinstance(kind, str) and kind not in ("process", "thread", "inline"):
            raise InvalidConfigError(
                f"executor must be 'process', 'thread', 'inline' or an Executor, got {kind!r}"
            )
        self.kind: ExecutorKind | Executor = kind
        self.function = function
        if self._uses_processes():
            check_importable(function)
        self._max_workers = max_workers
        self._pool: Executor | None = kind if isinstance(kind, Executor) else None
        self._owned = not isinstance(kind, Executor)
        self.rebuilds = 0

    def _uses_processes(self) -> bool:
        return self.kind == "process" or isinstance(self.kind, ProcessPoolExecutor)

    def _executor(self) -> Executor:
        if self._pool is None:
            if self.kind == "thread":
                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="jobq-cpu")
            else:
                workers = max(1, min(self._max_workers, os.cpu_count() or 1))
                self._pool = _process_pool(workers)
        return self._pool

    async def run(
        self, iterations: int, payload: bytes, *, crash: bool = False, isolated: bool = False
    ) -> int:
        """Run the work function off the loop. `isolated`: in a one-process pool of its own
        (with processes only), so that if it crashes it takes no other job down with it."""
        function = crash_work if crash else self.function
        if self.kind == "inline":
            if crash:
                raise WorkerCrashedError("inline CPU work cannot crash a process (no process)")
            return function(iterations, payload)  # blocks the loop: the lesson of notebook 3
        alone = isolated and self._uses_processes()
        pool = _process_pool(1) if alone else self._executor()
        loop = asyncio.get_running_loop()
        try:
            # run_in_executor (not wrap_future(pool.submit(...))): a virtual clock sees it
            # and holds still until the work is done.
            return await loop.run_in_executor(pool, function, iterations, payload)
        except BrokenProcessPool:
            self._rebuild(pool)
            raise WorkerCrashedError(
                "the worker process died while running this job (the pool was rebuilt)"
            ) from None
        finally:
            if alone:  # its one job has ended (or was cut): let the process go
                pool.shutdown(wait=False, cancel_futures=True)

    def _rebuild(self, broken: Executor) -> None:
        # Several jobs on the broken pool fail at once; only the first one rebuilds it.
        if self._pool is broken and self._owned:
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            self.rebuilds += 1

    @property
    def has_pool(self) -> bool:
        return self._pool is not None and self._owned

    def close(self) -> None:
        """Shut our own pool down (an Executor you passed in is yours to close)."""
        if self._pool is not None and self._owned:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
