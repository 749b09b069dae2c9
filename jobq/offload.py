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

Cancelling the asyncio future of executor work does not stop the work: a thread runs on, a
process runs on. So a job cut by the drain deadline while it runs in a process has that
process killed (its pool is rebuilt if more work comes); threads cannot be stopped at all,
so their job ids are kept in `still_running` for the report to name. And no process jobq
started outlives `close()`: we keep a list of every pool process and kill whatever has not
exited after a short grace period (ProcessPoolExecutor alone can leave one behind, and then
the interpreter hangs at exit joining it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.process import BaseProcess
from typing import Any, Literal, TypeVar

from jobq.errors import InvalidConfigError, JobFailedError, WorkerCrashedError
from jobq.work import CpuFunction, check_importable, check_main_guarded, cpu_work, crash_work

__all__ = ["CpuOffload", "ExecutorKind"]

ExecutorKind = Literal["process", "thread", "inline"]
T = TypeVar("T")

_log = logging.getLogger("jobq.offload")

_CONTEXT = multiprocessing.get_context("forkserver")

# How long close() lets pool processes exit on their own before it kills them.
_EXIT_GRACE_SECONDS = 2.0


def _process_pool(workers: int) -> ProcessPoolExecutor:
    check_main_guarded()  # an unguarded script would run again in every pool process
    # The fork server imports jobq once, and every worker process forked from it starts with
    # jobq imported: a new process (a first pool, a pool rebuilt after a crash, an isolated
    # retry) takes tens of milliseconds instead of a second of importing jobq again. Set here,
    # not at import, so that `import jobq` changes nothing in multiprocessing; it only takes
    # effect if the fork server is not running yet ("__main__" is the default we keep).
    _CONTEXT.set_forkserver_preload(["__main__", "jobq.work"])
    return ProcessPoolExecutor(workers, mp_context=_CONTEXT, initializer=_child_init)


def _child_init() -> None:
    """Runs first in every pool process."""
    # A terminal's Ctrl-C sends SIGINT to the whole process group, pool processes included.
    # They ignore it: the parent decides what an interrupt means (drain, then cancel), and a
    # KeyboardInterrupt inside a child would kill its job and break the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # If our program is killed (kill -9) it cannot clean up, and a pool process waiting for
    # work would wait forever: it holds a writing end of its own call queue, so it never sees
    # end-of-file, and the fork server - its parent - stays up as long as any of its children
    # do. What does notice is multiprocessing's "parent sentinel", a pipe whose other end only
    # our program holds: it reads as closed once our program is gone.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), name="jobq-orphan-watch",
                         daemon=True).start()


def _exit_with(parent: BaseProcess) -> None:
    parent.join()  # returns when the parent's sentinel closes
    os._exit(1)


def _call_in_child(function: Callable[..., Any], *args: Any) -> Any:
    """Run `function(*args)` in a pool process, and make sure its outcome can travel back.

    The pool pickles the return value or the exception and the parent unpickles it. If the
    *parent* cannot unpickle it (an exception class whose __init__ takes other arguments than
    it passes to Exception, say), the pool's result thread fails and declares the whole pool
    broken: every job on it dies. So we try the round trip here, where a failure concerns
    this job only, and send a plain JobFailedError instead of what cannot travel.
    """
    try:
        value = function(*args)
    except BaseException as exc:  # SystemExit too: the job's failure
        problem = _round_trip_problem(exc)
        if problem is None:
            raise
        raise JobFailedError(
            f"{type(exc).__name__}: {exc} (the original exception cannot be sent back from "
            f"the worker process: {problem})"
        ) from None
    if type(value) not in (int, float, str, bytes, bool, type(None)):
        problem = _round_trip_problem(value)
        if problem is not None:
            raise JobFailedError(
                f"the result {type(value).__name__} cannot be sent back from the worker "
                f"process: {problem}"
            )
    return value


def _round_trip_problem(thing: object) -> str | None:
    try:
        pickle.loads(pickle.dumps(thing))
    except Exception as exc:  # any failure means it cannot travel
        return f"{type(exc).__name__}: {exc}"
    return None


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
        if self.uses_processes():
            check_importable(function)
        self._max_workers = max_workers
        self._pool: Executor | None = kind if isinstance(kind, Executor) else None
        self._owned = not isinstance(kind, Executor)
        self.rebuilds = 0
        # Every pool process we started and have not seen exit (pid -> process).
        self._children: dict[int, BaseProcess] = {}
        # Job ids whose work runs in a thread right now; a cut job stays here until its
        # thread finishes (threads cannot be stopped). Changed from pool threads: a set's
        # add/discard are atomic under the GIL.
        self._in_threads: set[int] = set()

    def uses_processes(self) -> bool:
        return self.kind == "process" or isinstance(self.kind, ProcessPoolExecutor)

    def _executor(self) -> Executor:
        if self._pool is None:
            if self.kind == "thread":
                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="jobq-cpu")
            else:
                workers = max(1, min(self._max_workers, os.cpu_count() or 1))
                self._pool = _process_pool(workers)
        return self._pool

    async def run_cpu(
        self, iterations: int, payload: bytes, *, crash: bool = False, isolated: bool = False,
        job_id: int = -1,
    ) -> int:
        """A CpuBound job: the pipeline's CPU work function (or, on the failure plan's crash
        list, one whose process dies)."""
        if crash and self.kind == "inline":
            raise WorkerCrashedError("inline CPU work cannot crash a process (no process)")
        function = crash_work if crash else self.function
        return await self.run(function, iterations, payload, isolated=isolated, job_id=job_id)

    async def run(
        self, function: Callable[..., T], *args: Any, isolated: bool = False, job_id: int = -1,
    ) -> T:
        """Run `function(*args)` off the loop and await its result. `isolated`: in a
        one-process pool of its own (with processes only), so that if it crashes it takes
        no other job down with it, and if it is cut, killing it kills nobody else's work."""
        if self.kind == "inline":
            return function(*args)  # blocks the loop: the lesson of notebook 3
        processes = self.uses_processes()
        alone = isolated and processes
        pool = _process_pool(1) if alone else self._executor()
        loop = asyncio.get_running_loop()
        try:
            # run_in_executor (not wrap_future(pool.submit(...))): a virtual clock sees it
            # and holds still until the work is done.
            if processes:
                future = loop.run_in_executor(pool, _call_in_child, function, *args)
                if alone or self._owned:  # a pool you passed in is yours: its processes too
                    self._track(pool)
            else:
                future = loop.run_in_executor(pool, self._in_thread, job_id, function, *args)
            result: T = await future
            return result
        except BrokenProcessPool:
            self._rebuild(pool)
            _log.warning("a worker process died; the process pool was rebuilt")
            raise WorkerCrashedError(
                "the worker process died while running this job (the pool was rebuilt)"
            ) from None
        except asyncio.CancelledError:
            # Cut (the drain deadline, a timeout, handle.cancel()): the work itself would run
            # on. A process can be stopped - kill the pool it runs in (a shared pool is
            # rebuilt on next use; jobs that shared it fail that attempt and are retried, each
            # in a process of its own). A thread cannot: its job id stays in `still_running`.
            if processes and (alone or pool is self._pool) and self._owned:
                self._kill(pool)
                if not alone:
                    self._pool = None
                    self.rebuilds += 1
                    _log.warning("a cut job's process was stopped; the process pool was "
                                 "rebuilt")
            raise
        finally:
            if alone:  # its one job has ended (or was cut): let the process go
                pool.shutdown(wait=False, cancel_futures=True)

    def _in_thread(self, job_id: int, function: Callable[..., T], *args: Any) -> T:
        self._in_threads.add(job_id)
        try:
            return function(*args)
        finally:
            self._in_threads.discard(job_id)

    @property
    def still_running(self) -> frozenset[int]:
        """Ids of jobs whose work is still running in a thread (after a cut: threads cannot
        be stopped; they end when the work returns)."""
        return frozenset(self._in_threads)

    def _track(self, pool: Executor) -> None:
        # ProcessPoolExecutor starts its processes on submit; remember each one, so that we
        # can make sure it is gone when we are done with it, whatever the pool did.
        processes: dict[int, BaseProcess] = getattr(pool, "_processes", None) or {}
        self._children.update(processes)

    def _kill(self, pool: Executor) -> None:
        # Read the processes first: shutdown() forgets them.
        processes: dict[int, BaseProcess] = dict(getattr(pool, "_processes", None) or {})
        self._children.update(processes)
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes.values():
            with contextlib.suppress(OSError, ValueError):  # already gone, or closed
                process.kill()

    def _rebuild(self, broken: Executor) -> None:
        # Several jobs on the broken pool fail at once; only the first one rebuilds it.
        if self._pool is broken and self._owned:
            self._track(broken)
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            self.rebuilds += 1

    @property
    def has_pool(self) -> bool:
        return (self._pool is not None and self._owned) or bool(self._children)

    def close(self) -> None:
        """Shut our own pool down (an Executor you passed in is yours to close), and make
        sure every process we started has exited. Blocks for at most a few seconds; threads
        still running a cut job are left to finish on their own (see `still_running`)."""
        pool, self._pool = self._pool, None
        if pool is not None and self._owned:
            self._track(pool)
            # wait=False: a thread running a cut job would make wait=True wait for it.
            pool.shutdown(wait=False, cancel_futures=True)
        self._reap()

    def _reap(self) -> None:
        """Wait a little for each pool process to exit, then kill what is left."""
        children, self._children = list(self._children.values()), {}
        for process in children:
            with contextlib.suppress(OSError, ValueError, AssertionError):
                process.join(_EXIT_GRACE_SECONDS)
                if process.is_alive():
                    process.kill()
                    process.join(_EXIT_GRACE_SECONDS)
