"""The pipeline: every stage wired together, with shutdown and exact accounting.

    producers --submit()--> JobQueue(capacity) --> Dispatcher --> Worker 0..N-1 --> Collector
                            (backpressure)         (N at once)     (stages, retries)  (books)

    async with Pipeline(workers=4, capacity=10) as pipe:
        for job in jobs:
            await pipe.submit(job)       # waits while the queue is full
    print(pipe.report)                   # leaving the block drained everything

Without `async with` (a test that drives the clock by hand, say): `await pipe.start()`, then
`await pipe.shutdown()` - which is what entering and leaving the block do.

Shutdown runs in phases, each recorded in the trace as a PHASE event:

    closing    the queue refuses new jobs; producers waiting for space get PipelineClosedError
               (their jobs were never accepted, so nothing is lost); with cancel_queued=True
               the queued jobs end CANCELLED(never-started) right here
    draining   the dispatcher keeps starting queued jobs, workers finish theirs (retries too)
    deadline   only if `drain_timeout` passes first: the root token is cancelled - the
               dispatcher stops, workers cut the stage they are in - and every job left ends
               CANCELLED (never-started / interrupted / awaiting-retry)
    stopped    tasks ended, pools closed; the ShutdownReport is computed from the ledger

Who owns what: the Pipeline creates the root token, the queue, the ledger and every task,
and is the only one that cancels the root. Cancelling `pipe.token` yourself means "stop
now": a shutdown with no drain time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import math
import time
import warnings
import weakref
from collections.abc import AsyncIterable, Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar, overload

from jobq import validation as check
from jobq.accounting import IdSet, Ledger
from jobq.cancel import CancellationToken, wake
from jobq.clock import DEFAULT_DEADLINE, in_virtual_time, is_virtual, loop_clock
from jobq.collector import Collector
from jobq.dispatcher import Dispatcher
from jobq.errors import (
    DuplicateJobError,
    InvalidJobError,
    InvisibleCpuWarning,
    JobqError,
    PipelineClosedError,
    ReportNotReadyError,
)
from jobq.handles import JobHandle, ResultStream
from jobq.http import HttpClient, HttpLimits
from jobq.jobs import (
    AsyncIo,
    Blocking,
    Call,
    CancelReason,
    CpuBound,
    Delayed,
    Job,
    JobResult,
    JobType,
    ResultStatus,
)
from jobq.metrics import Metrics, MetricsAggregator
from jobq.offload import CpuOffload, ExecutorKind
from jobq.progress import make_progress
from jobq.queue import JobQueue
from jobq.retry import DeadLetterQueue, FailurePlan, RetryPolicy
from jobq.trace import EventKind, Trace
from jobq.work import CpuFunction, check_importable, cpu_work
from jobq.worker import Worker, WorkerServices

__all__ = ["Pipeline", "PipelineState", "PipelineStatistics", "RunResult", "ShutdownReport", "run"]

T = TypeVar("T")
_JOB_TYPES = (CpuBound, AsyncIo, Delayed, Call, Blocking)


class PipelineState(enum.StrEnum):
    """Where a pipeline is in its life: created -> running -> draining -> stopped.

    A str enum: `state is PipelineState.STOPPED` is the check to write, and it also equals its
    value (`state == "stopped"`), so code written against the plain strings keeps working."""

    CREATED = "created"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True)
class PipelineStatistics:
    """A snapshot of the pipeline at one instant; it does not change afterwards."""

    state: PipelineState
    workers: int
    capacity: int
    queued: int
    running: int
    submitted: int
    succeeded: int
    dead_lettered: int
    cancelled: int
    open: int  # accepted and not yet final
    producers_waiting: int

    def __repr__(self) -> str:
        # The state shows as its value, state='running' - what it equals (a str enum), and
        # what notebooks' stored outputs print - not as <PipelineState.RUNNING: 'running'>.
        fields = ", ".join(
            f"{f.name}={(self.state.value if f.name == 'state' else getattr(self, f.name))!r}"
            for f in dataclasses.fields(self))
        return f"PipelineStatistics({fields})"


@dataclass(frozen=True)
class ShutdownReport:
    """How every accepted job ended. `lost` comes from the ledger and must be 0."""

    submitted: int
    succeeded: int
    dead_lettered: int
    cancelled_never_started: int
    cancelled_interrupted: int
    cancelled_awaiting_retry: int
    lost: int
    drained: bool  # True if everything ended before the drain deadline
    phases: tuple[tuple[str, float], ...] = field(default=())
    # Jobs cut at the deadline whose work may still be running in a thread: a thread cannot
    # be stopped (a process can, and is). Their status is final; their thread ends by itself.
    still_running: tuple[int, ...] = ()
    # What went wrong with observers (a trace listener that raised, a trace file that could
    # not be written). They never cost a job its status; they are reported here.
    observer_errors: tuple[str, ...] = ()

    @property
    def cancelled(self) -> int:
        return (self.cancelled_never_started + self.cancelled_interrupted
                + self.cancelled_awaiting_retry)

    @property
    def ended(self) -> int:
        return self.succeeded + self.dead_lettered + self.cancelled

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("submitted", self.submitted),
            ("succeeded", self.succeeded),
            ("dead-lettered", self.dead_lettered),
            ("cancelled: never started", self.cancelled_never_started),
            ("cancelled: interrupted", self.cancelled_interrupted),
            ("cancelled: awaiting retry", self.cancelled_awaiting_retry),
            ("lost", self.lost),
        ]

    def __str__(self) -> str:
        return format_rows(self.rows())


def format_rows(rows: list[tuple[str, int]]) -> str:
    """A report's rows as a two-column table, labels left and counts right - how every
    report prints (this one, and the Redis producer's and worker's)."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {count:>8}" for name, count in rows)


class Pipeline:
    """Producer(s) -> bounded queue -> dispatcher -> N workers -> collector.

        async with Pipeline(workers=4, capacity=10) as pipe:
            await pipe.submit(Job(1, b"hi", Delayed(0.5)))
        assert pipe.report.lost == 0     # the report exists once the block is left

    Arguments (all keyword-only):
        workers, capacity   at most `workers` jobs run at once; at most `capacity` wait
        executor            "process" (default), "thread", "inline" or your own Executor:
                            where CpuBound work runs
        retry               RetryPolicy (default: 3 retries, 0.1 s doubling backoff)
        failures            FailurePlan: fail attempts on purpose (demos, tests)
        http                HttpLimits for AsyncIo jobs (timeouts, size cap)
        trace               True: keep every event; False: keep none (bounded memory);
                            or a Trace of your own (e.g. Trace(keep=False, path="run.jsonl"))
        keep_results        keep every JobResult in `results` (False for huge runs)
        progress, total     show a progress bar (None: on unless under pytest) out of `total`
        cpu_function        the function CpuBound jobs run: (iterations, payload) -> int
        cpu_cost            virtual seconds per iteration: *model* CpuBound work instead of
                            computing it (for simulations on the virtual clock)
        drain_timeout       the default for shutdown() and for leaving `async with`
    """

    def __init__(
        self,
        *,
        workers: int = 4,
        capacity: int = 10,
        executor: ExecutorKind | Executor = "process",
        retry: RetryPolicy | None = None,
        failures: FailurePlan | None = None,
        http: HttpLimits | None = None,
        trace: bool | Trace = True,
        keep_results: bool | int = True,
        progress: bool | None = False,
        total: int | None = None,
        cpu_function: CpuFunction = cpu_work,
        cpu_cost: float | None = None,
        drain_timeout: float | None = None,
    ) -> None:
        # Every setting is checked here, before anything is built (see jobq.validation): a
        # setting of the wrong type would otherwise fail much later, or quietly do the wrong
        # thing (`failures="x"` dead-letters every job, `drain_timeout=True` is one second).
        check.count("Pipeline.workers", workers)
        check.count("Pipeline.capacity", capacity)
        check.one_of("Pipeline.executor", executor, ("process", "thread", "inline"), Executor)
        check.instance("Pipeline.retry", retry, RetryPolicy, allow_none=True)
        check.instance("Pipeline.failures", failures, FailurePlan, allow_none=True)
        check.instance("Pipeline.http", http, HttpLimits, allow_none=True)
        check.instance("Pipeline.trace", trace, bool, Trace)
        if not isinstance(keep_results, bool):
            check.count("Pipeline.keep_results", keep_results, minimum=0)
        check.flag("Pipeline.progress", progress, allow_none=True)
        check.count("Pipeline.total", total, minimum=0, allow_none=True)
        check.function("Pipeline.cpu_function", cpu_function)
        check.seconds("Pipeline.cpu_cost", cpu_cost, allow_none=True)
        check.seconds("Pipeline.drain_timeout", drain_timeout, allow_none=True, allow_inf=True)
        self.workers = workers
        self.capacity = capacity
        self.drain_timeout = drain_timeout
        # Results streams (as_completed) whose reader lags hold producers back, like a full
        # queue: while there are streams, the queue asks `_streams_full` (see jobq.handles).
        self._streams: list[ResultStream] = []
        self._queue = JobQueue(capacity)
        # Handles, weakly: a handle nobody holds is collected, and nothing is kept for it
        # once its job ends. A plain dict of weak references (not a WeakValueDictionary, whose
        # Python-level callback runs for every handle that dies): the entry is removed when
        # the job ends, so it costs memory only while its job is queued or running.
        self._handles: dict[int, weakref.ref[JobHandle[Any]]] = {}
        self._next_id = 0  # where the search for a free id starts (ids are optional)
        self._own_trace = not isinstance(trace, Trace)
        self.trace = trace if isinstance(trace, Trace) else Trace(keep=trace)
        # Metrics are folded from the trace's rows of ended jobs (and its few other events).
        # A trace that keeps them has them all still at hand, so we fold them only when
        # metrics() is asked (from where the last call stopped): a run nobody asks about pays
        # nothing per job. A trace that keeps nothing (bounded memory) keeps them for us
        # until a batch is full; then we fold it and the trace drops it.
        self._metrics = MetricsAggregator()
        self._folded_rows = self._folded_extras = 0  # what metrics() has folded so far
        if not self.trace.keep:
            self.trace._fold_with(self._fold)
        self.ledger = Ledger()
        self.dead_letters = DeadLetterQueue()
        self._ids = IdSet()  # every id ever accepted: duplicates are refused
        self._earlier_attempts: dict[int, int] = {}  # replayed job id -> attempts so far
        self._total = total
        self._keep_results = keep_results
        self._progress_enabled = progress
        self._offload = CpuOffload(executor, max_workers=workers, function=cpu_function)
        self._http_limits = http or HttpLimits()
        self._http: HttpClient | None = None
        self._retry = retry or RetryPolicy()
        self._failures = failures or FailurePlan()
        self._seed = None if failures is None else failures.seed  # for the trace's header
        self._cpu_cost = cpu_cost
        self._time: Callable[[], float] = time.monotonic  # the loop's clock, once started
        self._cpu_warned = False  # InvisibleCpuWarning given (see _warn_if_cpu_is_invisible)
        # The token tree: root -> dispatcher -> each worker (see jobq.cancel).
        self.token = CancellationToken("root")
        self._dispatcher_token = self.token.child("dispatcher")
        self._state = PipelineState.CREATED
        self._tasks: list[asyncio.Task[None]] = []
        self._dispatcher: Dispatcher | None = None
        self._collector: Collector | None = None
        self._shutdown_task: asyncio.Task[ShutdownReport] | None = None
        # When the drain ends, in loop time (None: no limit). A later shutdown() call may
        # move it earlier, never later. The deadline is a timer, and "passed" means the timer
        # fired - never a comparison of loop times, which asyncio rounds to its clock
        # resolution (a drain that compared times could wake a hair early, again and again).
        self._deadline: float | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._deadline_passed = False
        self._drain_waker: asyncio.Future[None] | None = None  # wakes the drain
        self._report: ShutdownReport | None = None  # set once, when shutdown has finished
        self._phases: list[tuple[str, float]] = []
        # Cancelling the root yourself means "stop now" - from this moment on, even before
        # the pipeline starts (a signal handler may fire early): intake closes at once.
        self.token.on_cancel(self._root_cancelled)

    # -- starting ---------------------------------------------------------------------------
    async def start(self) -> Pipeline:
        """Start the stages: the dispatcher and the workers begin to wait for jobs.

        `async with pipe` does this on entry, and `submit` on the first job, so call it
        yourself only without `async with` - a test that steps a paused clock, say - and end
        with `await pipe.shutdown()`. Idempotent: a running pipeline stays as it is, and one
        that is shutting down or stopped does not start again. Returns the pipeline.
        """
        self._start()
        return self

    def _start(self) -> None:
        if self._state is not PipelineState.CREATED or self._queue.closed:
            return  # running already, or closed before it started: nothing to run
        loop = asyncio.get_running_loop()
        self.trace.attach(self)  # (raises if another running pipeline records into it)
        self._time = loop_clock(loop)
        # The trace describes its run (a trace file is then enough to plot it again).
        executor = self._offload.kind
        self.trace.describe(
            clock="virtual" if is_virtual() else "real", t0=loop.time(),
            workers=self.workers, capacity=self.capacity,
            executor=executor if isinstance(executor, str) else type(executor).__name__,
            seed=self._seed,
        )
        self._collector = Collector(
            self.ledger, make_progress(self._progress_enabled, self._total),
            keep_results=self._keep_results, handles=self._handles, streams=self._streams,
            dead_letters=self.dead_letters,
            # Our own kept trace has a row for each of our jobs, in the order they end: the
            # collector keeps results as those rows (see jobq.collector).
            rows=self.trace.rows if self._own_trace and self.trace.keep else None,
        )
        services = WorkerServices(
            trace=self.trace, ledger=self.ledger, retry=self._retry, failures=self._failures,
            offload=self._offload, http=self._http_client, cpu_cost=self._cpu_cost,
            dead_letters=self.dead_letters, deliver=self._collector.deliver,
            earlier_attempts=self._earlier_attempts, succeeded=self._collector.succeeded,
        )
        self._dispatcher = Dispatcher(self._queue, self._dispatcher_token, self.trace)
        for slot in range(self.workers):
            worker = Worker(slot, self._dispatcher_token.child(f"worker-{slot}"), services,
                            self._dispatcher.slot_freed, self._dispatcher.next_for)
            self._dispatcher.add_worker(worker)
            self._tasks.append(loop.create_task(worker.run(), name=f"jobq-worker-{slot}"))
        self._tasks.append(loop.create_task(self._dispatcher.run(), name="jobq-dispatcher"))
        for task in self._tasks:
            task.add_done_callback(self._stage_ended)
        self._state = PipelineState.RUNNING

    def _root_cancelled(self) -> None:
        """Token callback: "stop now". Closes intake in this very step; the rest of the
        shutdown needs a running loop, and a pipeline that never started has no rest."""
        self._queue.close()
        if self._state is PipelineState.RUNNING:
            self._begin_shutdown(0.0, cancel_queued=True)

    def _stage_ended(self, task: asyncio.Task[None]) -> None:
        # Stages end on their own only once the root is cancelled. One that ended before
        # (killed from outside jobq, or a bug) leaves work that nobody will do: stop now, so
        # that every job still gets its final status; shutdown() then raises about the stage.
        if task.cancelled() or task.exception() is not None:
            self.token.cancel()

    def _http_client(self) -> HttpClient:
        if self._http is None:
            self._http = HttpClient(self._http_limits)
        return self._http

    async def __aenter__(self) -> Pipeline:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None or issubclass(exc_type, Exception):
            # Leaving the block drains, also when the block raised an error: every job it
            # submitted was accepted - a promise - and ends as it would have (bounded by
            # `drain_timeout`); then the error goes on up. (concurrent.futures' `with` does
            # the same.)
            await self.shutdown()
        else:
            # Cancelled, KeyboardInterrupt, SystemExit: the caller asked to stop, not to wait.
            # Stop now - queued jobs never start, running ones are cut - and account for all.
            await self.shutdown(drain_timeout=0.0, cancel_queued=True)

    # -- submitting -------------------------------------------------------------------------
    def _admit(self, job: Job | JobType, timeout: float | None) -> Job:
        """Refuse what cannot be accepted, before anything is changed; return the Job to
        queue (a bare job type gets the next free id)."""
        if type(job) is Job and timeout is None:
            pass  # the usual case, checked first: a Job, as it is
        elif isinstance(job, _JOB_TYPES):
            job = Job(self._free_id(), b"", job, timeout)
        elif not isinstance(job, Job):
            raise InvalidJobError(
                f"submit() takes a Job or a job type (Call, Blocking, CpuBound, AsyncIo, "
                f"Delayed), got {type(job).__name__} {check.shown(job)}")
        elif timeout is not None:
            job = dataclasses.replace(job, timeout=timeout)  # checks it, as Job() does
        if self._queue.closed or self._state in (PipelineState.DRAINING, PipelineState.STOPPED):
            state = "stopping" if self._state is PipelineState.CREATED else self._state.value
            raise PipelineClosedError(f"the pipeline is {state}; job {job.id} was not accepted")
        kind = job.job_type
        if isinstance(kind, (Blocking, CpuBound)):  # (one test for the kinds that need none)
            if isinstance(kind, Blocking):
                if self._offload.uses_processes():
                    check_importable(kind.fn, what="Blocking.fn")
            elif not self._cpu_warned and self._cpu_cost is None:
                self._warn_if_cpu_is_invisible()
        if self._state is PipelineState.CREATED:
            self._start()  # (before the id is reserved: starting may refuse the trace)
        # Reserved now, so a concurrent duplicate is refused too (one lookup: add_new says
        # whether the id was free).
        if not self._ids.add_new(job.id):
            raise DuplicateJobError(f"Job.id {job.id} was already submitted to this pipeline")
        return job

    def _warn_if_cpu_is_invisible(self) -> None:
        # Real CPU work on the virtual clock runs *between* two virtual instants: the clock
        # does not move while the loop is busy, so such a job lasts 0 s in every plot and
        # metric - a learner sees an empty timeline and no error. Said once per pipeline.
        self._cpu_warned = True
        if is_virtual():
            warnings.warn(
                "CpuBound jobs on the virtual clock take no virtual time (the clock stands "
                "still while CPU work runs), so plots and metrics show them as 0 s long; "
                "pass Pipeline(cpu_cost=<virtual seconds per iteration>) to model their time",
                InvisibleCpuWarning, stacklevel=4)

    def _free_id(self) -> int:
        while self._next_id in self._ids:
            self._next_id += 1
        return self._next_id

    def _accepted(self, job: Job, depth: int) -> JobHandle[Any]:
        # Runs in the same step as the put: the dispatcher cannot see the job before this.
        # `depth`: how many jobs the queue holds now, this one included.
        now = self._time()
        self.ledger.accept(job.id, now)
        self.trace.enqueued(now, job.id, job.kind, depth)
        handle: JobHandle[Any] = JobHandle(job.id, self._cancel_job)
        self._handles[job.id] = weakref.ref(handle)
        return handle

    # `timeout` bounds each *attempt* of the job, not this call (hence the noqa): the name
    # users know from Celery's and arq's job options.
    @overload
    async def submit(self, job: Call[T] | Blocking[T], *,
                     timeout: float | None = None) -> JobHandle[T]: ...  # noqa: ASYNC109
    @overload
    async def submit(self, job: Job | CpuBound | AsyncIo | Delayed, *,
                     timeout: float | None = None) -> JobHandle[Any]: ...  # noqa: ASYNC109

    async def submit(self, job: Job | JobType, *,
                     timeout: float | None = None) -> JobHandle[Any]:  # noqa: ASYNC109
        """Submit `job`, waiting while the queue is full (this wait *is* backpressure), and
        return its handle: `await handle` gives the job's value (see jobq.handles).

        `job` is a Job, or just a job type - `Call(fn, x)`, `Blocking(fn, x)`, `Delayed(1)`...
        - which gets the next free id. `timeout`: seconds one attempt may take (overrides
        `Job.timeout`). Raises InvalidJobError / DuplicateJobError at once, and
        PipelineClosedError if shutdown begins - before or while we wait; then the job was
        not accepted.
        """
        job = self._admit(job, timeout)
        queue = self._queue
        depth = queue.offer(job)
        if depth:
            # The fast path: there was room, so the job is accepted now, in this step - no
            # coroutine to wait in, no future (a future is made only when the queue is full).
            return self._accepted(job, depth)
        # The queue is full: wait for room (this wait *is* backpressure), in the trace.
        self.trace.emit(self._time(), EventKind.PRODUCER_BLOCKED, job.id)
        try:
            await queue.put(job)
        except BaseException:
            self._ids.discard(job.id)  # never accepted: the id is free again
            raise
        finally:
            self.trace.emit(self._time(), EventKind.PRODUCER_RESUMED, job.id)
        return self._accepted(job, len(self._queue))

    @overload
    def submit_nowait(self, job: Call[T] | Blocking[T], *,
                      timeout: float | None = None) -> JobHandle[T]: ...
    @overload
    def submit_nowait(self, job: Job | CpuBound | AsyncIo | Delayed, *,
                      timeout: float | None = None) -> JobHandle[Any]: ...

    def submit_nowait(self, job: Job | JobType, *,
                      timeout: float | None = None) -> JobHandle[Any]:
        """Submit `job` or raise QueueFullError at once - the non-waiting twin of submit()."""
        job = self._admit(job, timeout)
        try:
            self._queue.put_nowait(job)
        except BaseException:
            self._ids.discard(job.id)
            raise
        return self._accepted(job, len(self._queue))

    async def submit_many(
        self, jobs: Iterable[Job | JobType] | AsyncIterable[Job | JobType]
    ) -> int:
        """Submit every job in order (each may wait). Returns how many were accepted.
        (No handles: use as_completed() to see their results.)"""
        count = 0
        if isinstance(jobs, AsyncIterable):
            async for job in jobs:
                await self.submit(job)
                count += 1
        else:
            for job in jobs:
                await self.submit(job)
                count += 1
        return count

    async def replay(self, job_ids: Iterable[int] | None = None) -> list[int]:
        """Take jobs out of the dead-letter queue and submit them again (same ids)."""
        letters = self.dead_letters.take(job_ids)
        replayed: list[int] = []
        try:
            for letter in letters:
                self._ids.discard(letter.job.id)  # its one final status was dead-lettered
                self._earlier_attempts[letter.job.id] = letter.attempts[-1].number
                await self.submit(letter.job)
                replayed.append(letter.job.id)
        finally:
            for letter in letters[len(replayed):]:  # not resubmitted: keep it dead-lettered
                self._ids.add(letter.job.id)
                self._earlier_attempts.pop(letter.job.id, None)
                self.dead_letters.add(letter)
        return replayed

    # -- watching ---------------------------------------------------------------------------
    @property
    def state(self) -> PipelineState:
        return self._state

    @property
    def report(self) -> ShutdownReport:
        """How every accepted job ended - once shutdown has finished (after `async with`, or
        `await pipe.shutdown()`, which returns the same report). Before that there is no
        report: reading it raises ReportNotReadyError, never returns None."""
        if self._report is None:
            raise ReportNotReadyError(
                f"the pipeline is {self._state.value}: its report exists once shutdown has "
                "finished (leave `async with`, or `await pipe.shutdown()`, which returns it)")
        return self._report

    @property
    def results(self) -> list[JobResult]:
        """The results kept (all, none, or the last N: see `keep_results`), in end order."""
        return [] if self._collector is None else self._collector.results

    def as_completed(self, *, maxsize: int | None = None) -> ResultStream:
        """Results as they complete, from now on, until the pipeline has stopped:

            async for result in pipe.as_completed():
                ...

        Bounded: at most `maxsize` results wait for the reader (default: capacity + workers);
        while it is full, `submit` waits - a slow reader slows the producers, never the
        workers. So read in another task than the one that submits, or after shutdown.
        Cancel-safe; `stream.close()` (or leaving `async for` by break, then close) stops it.
        """
        size = self.capacity + self.workers if maxsize is None else maxsize
        check.count("as_completed.maxsize", size)
        stream = ResultStream(size, self._queue.wake_producer, self._stream_closed)
        if self._state is PipelineState.STOPPED:
            stream._end()
        else:
            self._streams.append(stream)
            self._queue.hold_while(self._streams_full)
        return stream

    def _stream_closed(self, stream: ResultStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)
        if not self._streams:
            self._queue.hold_while(None)

    def _end_streams(self) -> None:
        """Every result has been delivered: readers finish what they hold, then stop."""
        streams = list(self._streams)
        self._streams.clear()  # in place: the collector holds this list
        self._queue.hold_while(None)
        for stream in streams:
            stream._end()

    def _streams_full(self) -> bool:
        return any(stream.full for stream in self._streams)

    def _handles_alive(self) -> int:
        """How many handles the pipeline still knows (for tests: it must not grow)."""
        return sum(1 for ref in self._handles.values() if ref() is not None)

    def _cancel_job(self, job_id: int) -> bool:
        """handle.cancel(): a queued job ends CANCELLED(never-started) now; a running one is
        cut by its worker (CANCELLED(interrupted)); the pipeline goes on."""
        if self._state not in (PipelineState.RUNNING, PipelineState.DRAINING):
            return False
        job = self._queue.remove(job_id)
        if job is not None:
            self._never_started(job, asyncio.get_running_loop().time(), len(self._queue))
            return True
        assert self._dispatcher is not None
        return any(worker.cut_job(job_id) for worker in self._dispatcher.workers)

    def statistics(self) -> PipelineStatistics:
        by = self.ledger.by_status
        return PipelineStatistics(
            state=self._state, workers=self.workers, capacity=self.capacity,
            queued=len(self._queue),
            running=0 if self._dispatcher is None else self._dispatcher.busy,
            submitted=self.ledger.accepted, succeeded=by[ResultStatus.SUCCEEDED],
            dead_lettered=by[ResultStatus.DEAD_LETTERED], cancelled=by[ResultStatus.CANCELLED],
            open=len(self.ledger.open), producers_waiting=self._queue.waiting_producers,
        )

    def metrics(self) -> Metrics:
        """Throughput, latency percentiles, queue depth, utilisation - from the trace."""
        self._fold()
        return self._metrics.snapshot(self.workers, self.trace.open.values())

    def _fold(self) -> None:
        """Fold what the trace has kept since the last fold into the metrics: its rows of
        ended jobs and its other events. A trace that keeps nothing (bounded memory) kept
        them only for us: it drops them now (and calls this when a batch is full)."""
        trace, extras = self.trace, self.trace.extras()
        self._metrics.fold_rows(trace.rows, self._folded_rows)
        for event in extras[self._folded_extras:]:
            self._metrics.feed(event)
        if trace.keep:
            self._folded_rows, self._folded_extras = len(trace.rows), len(extras)
        else:
            trace._drop()  # (and the marks stay at 0)

    async def wait_drained(self) -> None:
        """Wait until every job accepted so far has ended (more may be submitted later)."""
        if self._collector is not None:
            await self._collector.wait_drained()

    # -- shutting down ----------------------------------------------------------------------
    async def shutdown(
        self, *, drain_timeout: float | None = None, cancel_queued: bool = False
    ) -> ShutdownReport:
        """Stop accepting, drain, cut at the deadline, report. Safe to call more than once.

        drain_timeout: seconds to let queued and running jobs finish (None: the pipeline's
        `drain_timeout`, itself no limit unless set; math.inf: no limit). cancel_queued:
        end queued jobs at once as CANCELLED(never-started) instead of running them.

        A later call while the first is still draining can only make it stricter: a shorter
        drain_timeout (counted from the later call) moves the deadline earlier, and
        cancel_queued=True ends the queued jobs at once; a longer one changes nothing.
        Every call returns the same report.
        """
        # Checked before anything changes: a refused call leaves the pipeline as it was.
        check.seconds("Pipeline.shutdown(drain_timeout=...)", drain_timeout, allow_none=True,
                      allow_inf=True)
        check.flag("Pipeline.shutdown(cancel_queued=...)", cancel_queued)
        timeout = self.drain_timeout if drain_timeout is None else drain_timeout
        if timeout == math.inf:
            timeout = None
        shutting_down = self._begin_shutdown(timeout, cancel_queued)
        # shield: if our caller is cancelled (a second Ctrl-C), shutdown still completes.
        return await asyncio.shield(shutting_down)

    def _begin_shutdown(
        self, drain_timeout: float | None, cancel_queued: bool
    ) -> asyncio.Task[ShutdownReport]:
        """Close intake *now*, in the caller's step - so no submit can slip in between asking
        for shutdown and the shutdown task starting - and start the rest as a task (once).
        A later call may tighten the deadline or cancel the queue (see shutdown())."""
        loop = asyncio.get_running_loop()
        self._queue.close()
        if self._state is PipelineState.RUNNING:
            self._state = PipelineState.DRAINING
            self._phase("closing")
        if cancel_queued and self._state is PipelineState.DRAINING:
            self._cancel_queued()
        if drain_timeout is not None:
            self._tighten_deadline(loop, loop.time() + drain_timeout)
        if self._shutdown_task is None:
            self._shutdown_task = loop.create_task(self._shutdown(), name="jobq-shutdown")
        return self._shutdown_task

    def _tighten_deadline(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Move the drain deadline to `when` if that is earlier (never later)."""
        if self._deadline is not None and when >= self._deadline:
            return
        self._deadline = when
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        if when <= loop.time():  # drain_timeout=0: passed already, no timer to wait for
            self._deadline_reached()
        else:
            self._deadline_timer = loop.call_at(when, self._deadline_reached)

    def _deadline_reached(self) -> None:
        self._deadline_passed = True
        if self._drain_waker is not None:
            wake(self._drain_waker)

    def _phase(self, name: str) -> None:
        now = asyncio.get_running_loop().time()
        self._phases.append((name, now))
        self.trace.emit(now, EventKind.PHASE, info=name)

    def _cancel_queued(self) -> None:
        """End every job still in the queue as CANCELLED(never-started)."""
        assert self._collector is not None
        now = asyncio.get_running_loop().time()
        jobs = self._queue.drain_nowait()
        for left, job in enumerate(reversed(jobs)):
            self._never_started(job, now, len(jobs) - left - 1)

    def _never_started(self, job: Job, now: float, depth: int) -> None:
        """End a job taken out of the queue as CANCELLED(never-started)."""
        assert self._collector is not None
        self.trace.job_event(self.trace.open[job.id], now, EventKind.CANCELLED,
                             info=CancelReason.NEVER_STARTED.value, value=depth)
        self._collector.deliver(JobResult(
            job.id, 0.0, ResultStatus.CANCELLED, kind=job.kind,
            submitted_at=self.ledger.open[job.id], finished_at=now,
            cancel_reason=CancelReason.NEVER_STARTED,
        ))

    async def _shutdown(self) -> ShutdownReport:
        """The phases after "closing" (which _begin_shutdown has done)."""
        if self._state is PipelineState.CREATED:  # never started: nothing to drain
            self._state = PipelineState.STOPPED
            self._end_streams()
            self.trace.close()
            self._report = self._make_report(drained=True)
            return self._report
        assert self._collector is not None and self._dispatcher is not None
        self._phase("draining")
        drained = await self._drain()
        if not drained:
            self._phase("deadline")
        # Drained or not, cancel the tree: idle workers exit, busy ones cut their stage.
        self.token.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        self._cancel_queued()  # anything the stopped dispatcher left behind
        self._end_streams()
        await self._close_resources()
        self._phase("stopped")
        self._state = PipelineState.STOPPED
        self.trace.close()
        self.trace.detach(self)
        self._report = report = self._make_report(drained)
        for task, outcome in zip(self._tasks, results, strict=True):
            # A stage that crashed, or was killed from outside, is a bug: do not hide it.
            if isinstance(outcome, asyncio.CancelledError):
                raise JobqError(
                    f"the pipeline task {task.get_name()} was cancelled from outside jobq; "
                    "every job was still accounted for (see Pipeline.report)"
                )
            if isinstance(outcome, Exception):
                raise outcome
        return report

    async def _drain(self) -> bool:
        """Wait for every open job to end, for the root token, or for the deadline - which a
        later shutdown() call may move earlier while we wait."""
        assert self._collector is not None
        loop = asyncio.get_running_loop()
        while self.ledger.open and not self.token.cancelled and not self._deadline_passed:
            waker = self._drain_waker = loop.create_future()
            drained = asyncio.ensure_future(self._collector.wait_drained())
            stop = asyncio.ensure_future(self.token.wait_cancelled())
            try:
                await asyncio.wait({drained, stop, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (drained, stop, waker):
                    waiter.cancel()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        return not self.ledger.open

    async def _close_resources(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._offload.has_pool:
            # Waiting for pool processes to exit blocks (a few seconds at most: close() kills
            # what does not exit); do it off the loop.
            await asyncio.get_running_loop().run_in_executor(None, self._offload.close)
        assert self._collector is not None
        self._collector.progress.close()

    def _make_report(self, drained: bool) -> ShutdownReport:
        by, why = self.ledger.by_status, self.ledger.by_reason
        return ShutdownReport(
            submitted=self.ledger.accepted,
            succeeded=by[ResultStatus.SUCCEEDED],
            dead_lettered=by[ResultStatus.DEAD_LETTERED],
            cancelled_never_started=why[CancelReason.NEVER_STARTED],
            cancelled_interrupted=why[CancelReason.INTERRUPTED],
            cancelled_awaiting_retry=why[CancelReason.AWAITING_RETRY],
            lost=self.ledger.lost,
            drained=drained,
            phases=tuple(self._phases),
            still_running=tuple(sorted(self._offload.still_running)),
            observer_errors=tuple(self.trace.problems()),
        )

    def __repr__(self) -> str:
        queued = len(self._queue)
        running = 0 if self._dispatcher is None else self._dispatcher.busy
        return f"<Pipeline {self._state.value} queued={queued} running={running}>"


@dataclass(frozen=True)
class RunResult:
    """Everything one `jobq.run(...)` produced."""

    report: ShutdownReport
    results: list[JobResult]
    trace: Trace
    metrics: Metrics
    dead_letters: DeadLetterQueue
    workers: int

    @classmethod
    def from_pipeline(cls, pipe: Pipeline) -> RunResult:
        """Everything a stopped pipeline produced, as `jobq.run` returns it (raises
        ReportNotReadyError if its shutdown has not finished)."""
        return cls(pipe.report, pipe.results, pipe.trace, pipe.metrics(), pipe.dead_letters,
                   pipe.workers)
    def __repr__(self) -> str:
        r = self.report
        return (f"<RunResult submitted={r.submitted} succeeded={r.succeeded} "
                f"dead_lettered={r.dead_lettered} cancelled={r.cancelled} lost={r.lost}>")


async def run(
    jobs: Iterable[Job],
    *,
    producers: int = 1,
    virtual_time: bool = False,
    drain_timeout: float | None = None,
    deadline: float | None = DEFAULT_DEADLINE,
    **options: Any,
) -> RunResult:
    """Run `jobs` through a new Pipeline and return everything it produced - one call.

        result = await jobq.run(jobs, workers=4, virtual_time=True)

    producers: how many producer tasks share the jobs (round-robin); virtual_time: run on
    the virtual clock (in a worker thread when called from a running real loop, such as a
    notebook cell); deadline: with virtual_time, the virtual seconds after which the run is
    cut short with VirtualDeadlineExceeded (default 24 h; None: no deadline) - a run already
    on a virtual clock keeps the deadline it was started with. Other keyword arguments go
    to Pipeline.
    """
    check.count("jobq.run(producers=...)", producers)
    check.flag("jobq.run(virtual_time=...)", virtual_time)
    check.seconds("jobq.run(drain_timeout=...)", drain_timeout, allow_none=True, allow_inf=True)
    check.seconds("jobq.run(deadline=...)", deadline, allow_none=True)
    if virtual_time and not is_virtual():
        return await in_virtual_time(run(jobs, producers=producers, drain_timeout=drain_timeout,
                                         **options), deadline=deadline)
    job_list = list(jobs)
    options.setdefault("total", len(job_list))
    pipe = Pipeline(drain_timeout=drain_timeout, **options)
    async with pipe:
        if producers == 1:  # no task group: a bad job raises its own error, not a group
            await pipe.submit_many(job_list)
        else:
            async with asyncio.TaskGroup() as group:
                for p in range(producers):
                    group.create_task(pipe.submit_many(job_list[p::producers]))
    return RunResult.from_pipeline(pipe)
