"""A worker slot: runs one job at a time, attempt by attempt, and reports how it ended.

The dispatcher owns N `Worker`s (the counterpart of tokio's spawned worker tasks, kept alive
instead of spawned per job: a task per job costs more than the job when jobs are small).
A worker waits for the dispatcher to hand it a job, runs it, delivers exactly one
`JobResult` to the collector, and then either takes the next queued job itself, in the same
step, keeping its slot (`Dispatcher.next_for`: no hand-over cost while work is waiting), or,
when nothing is queued, tells the dispatcher it is free again.

One job runs in stages, and cancellation is checked between them:

    attempt 1 -> [failed] -> backoff pause -> attempt 2 -> ... -> succeeded | dead-lettered
    Delayed:  sleep(delay) -> (token checked) -> execute

Cancellation. Each worker has a child token of the dispatcher's. When it is cancelled (the
drain deadline passed), the worker task is cancelled *at the await it is waiting on* - the
sleep, the request, the backoff pause - and reports the job CANCELLED with the stage it cut:
INTERRUPTED (an attempt was running) or AWAITING_RETRY (a backoff pause). A CancelledError
that did not come from our token (someone cancelled the whole pipeline task) still ends the
job once, and is then re-raised, never swallowed (Python 3.11's wait_for swallowed some -
cpython#86296 - so we do not use it). Exactly one place, the `except CancelledError` in
`Worker.run`, makes that decision; everything else the job's code raises - even SystemExit -
is a failed attempt.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobq.accounting import Ledger
from jobq.cancel import CancellationToken
from jobq.clock import loop_clock
from jobq.errors import InjectedFailure, JobTimeoutError
from jobq.http import HttpClient
from jobq.jobs import (
    AsyncIo,
    Blocking,
    Call,
    CancelReason,
    CpuBound,
    Delayed,
    Job,
    JobResult,
    ResultStatus,
)
from jobq.offload import CpuOffload
from jobq.retry import Attempt, DeadLetter, DeadLetterQueue, FailurePlan, RetryPolicy
from jobq.trace import EventKind, JobRecord, Trace
from jobq.work import cpu_work

__all__ = ["Worker", "WorkerServices"]

# Retries at INFO, dead letters at WARNING; jobq never configures handlers (the application
# decides where log records go).
_log = logging.getLogger("jobq.worker")


@dataclass(slots=True, kw_only=True)
class WorkerServices:
    """What every worker shares; the Pipeline builds one and hands it to all of them."""

    trace: Trace
    ledger: Ledger
    retry: RetryPolicy
    failures: FailurePlan
    offload: CpuOffload
    http: Callable[[], HttpClient]  # created on the first AsyncIo job, then shared
    cpu_cost: float | None  # virtual seconds per iteration: model CPU time, do not compute
    dead_letters: DeadLetterQueue
    deliver: Callable[[JobResult], None]  # hand the final result to the collector
    # Replayed dead letters go on counting attempts where they stopped (attempt 5, 6, ...),
    # so a trace and a FailurePlan tell a replay from a first run.
    earlier_attempts: dict[int, int]
    # The usual ending, without a JobResult: (record, worker, started_at, finished_at, value)
    # of a job that succeeded at its first attempt (see Collector.succeeded).
    succeeded: Callable[[JobRecord, int, float, float, Any], None]


class Worker:
    """Worker slot number `slot`. `assign()` gives it a job; `run()` is its task's body."""

    def __init__(
        self,
        slot: int,
        token: CancellationToken,
        services: WorkerServices,
        on_free: Callable[[int], None],
        next_for: Callable[[int, float], Job | None] = lambda slot, now: None,
    ) -> None:
        self.slot = slot
        self.token = token
        self._s = services
        self._time: Callable[[], float] = time.monotonic  # the loop's clock (set in run())
        self._on_free = on_free  # the slot is free: the dispatcher may hand us a job
        self._next_for = next_for  # the next queued job, for a worker that keeps its slot
        self._inbox: asyncio.Future[Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._cuts = 0  # task.cancel() calls of ours not yet taken back (see _cut)
        self._cut_asked = False  # cut_job() was called for the job in hand
        # The job in hand and how far it got - exactly what a cut has to report. Kept on the
        # worker (not in _run_job's locals) so that the one place that handles a cut, in
        # run(), can report it whichever await the cancellation landed on.
        self.job: Job | None = None
        self._rec: JobRecord | None = None  # its trace record (see jobq.trace)
        self._attempts: list[Attempt] = []
        self._first_start: float | None = None
        self._stage = CancelReason.NEVER_STARTED  # what a cut right now would be called

    def can_take(self) -> bool:
        """Is this worker's task alive and waiting for a job? (False once it was killed.)"""
        return self._inbox is not None and not self._inbox.done()

    def assign(self, job: Job) -> None:
        """Called by the dispatcher, only when this slot is free."""
        assert self._inbox is not None and not self._inbox.done(), "slot is not free"
        self._inbox.set_result(job)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._time = loop_clock(loop)
        self._task = asyncio.current_task()
        if self.token.cancelled:
            return  # cancelled before we began: _cut would cancel our own task on the way out
        remove = self.token.on_cancel(self._cut)
        try:
            inbox: asyncio.Future[Job] = loop.create_future()
            while True:
                if self.job is None:  # idle: the slot is free, wait for the dispatcher
                    if self._shutting_down():
                        return
                    inbox = self._inbox = loop.create_future()
                try:
                    if self.job is None:
                        self._take(await inbox)
                    # (A job taken while the token was being cancelled is reported by
                    # _run_job as CANCELLED(never-started) without starting.) It delivers
                    # the job's one result itself, with no await after it, and says when
                    # the job ended.
                    ended_at = await self._run_job()
                except asyncio.CancelledError:
                    # The ONE place that tells "we cut this job" from "someone cancelled us"
                    # (as asyncio.timeout's __aexit__ does for its own deadline). Either way
                    # the job in hand ends exactly once; only a foreign cancellation goes on.
                    if self.job is None and inbox.done() and not inbox.cancelled():
                        self._take(inbox.result())  # handed over in the step the cut came
                    ours = self._own_cancellation()
                    if self.job is not None:
                        self._end(self._cut_result())
                        if ours:  # the slot is free (killed from outside, it is gone)
                            self._on_free(self.slot)
                    if not ours:
                        raise
                    if self._shutting_down():
                        return  # our token: this worker takes no more jobs
                    continue  # only one job was cut (cut_job): take the next one
                # Keep the slot while jobs wait: take the next one now, in this same step -
                # no await between taking it and owning it (see Dispatcher.next_for). It is
                # still the instant the last job ended: its time is the hand-over's time.
                following = self._next_for(self.slot, ended_at)
                if following is None:
                    self._on_free(self.slot)  # nothing queued: back to the dispatcher
                else:
                    self._take(following)
        finally:
            remove()

    def _shutting_down(self) -> bool:
        # A method, not `self.token.cancelled` inline: the token changes under us while we
        # await, which a type checker's narrowing of the loop condition cannot know.
        return self.token.cancelled

    def _take(self, job: Job) -> None:
        self.job = job
        self._rec = self._s.trace.open[job.id]
        self._cut_asked = False
        self._attempts = []
        self._first_start = None
        self._stage = CancelReason.NEVER_STARTED

    def _cut(self) -> None:
        """Token callback: interrupt whatever this worker is awaiting right now."""
        if self._task is not None and not self._task.done():
            # Counted: a job cut by its handle and then by shutdown, in the same step, is two
            # cancellations of our task - both ours.
            self._cuts += 1
            self._task.cancel()

    def cut_job(self, job_id: int) -> bool:
        """Interrupt the job this worker runs if it is `job_id` (handle.cancel()); the worker
        goes on with the next job. The cut lands at the await the job is waiting on - still
        inside that job: nothing else can run on this worker before our task resumes."""
        if self.job is None or self.job.id != job_id or self._task is None:
            return False
        if self._cut_asked:
            return False  # asked already in this step: one cut, one True
        self._cut_asked = True
        self._cut()
        return True

    def _own_cancellation(self) -> bool:
        """Was the CancelledError we caught sent by us - our token, or cut_job() - and by
        nobody else?"""
        if not self._cuts:
            return False
        assert self._task is not None
        remaining = self._task.cancelling()
        for _ in range(self._cuts):
            # uncancel() returns how many cancellations remain: any left came from elsewhere.
            remaining = self._task.uncancel()
        self._cuts = 0
        return remaining == 0

    def _end(self, result: JobResult) -> float:
        """Deliver the job's one final result; the worker holds no job any more."""
        self.job = None
        self._s.deliver(result)
        return result.finished_at

    async def _run_job(self) -> float:
        """Run the job in hand, attempt by attempt, deliver its result and return when it
        ended. Every exception that the job's own code raises - BaseException included:
        SystemExit or KeyboardInterrupt from a work function is its failure, not an order to
        stop the program - is a failed attempt. Only a CancelledError goes up, to the cut
        handling in run()."""
        s = self._s
        job, rec, now = self.job, self._rec, self._time
        assert job is not None and rec is not None
        submitted_at = rec.t_enq
        before = s.earlier_attempts.pop(job.id, 0) if s.earlier_attempts else 0
        last = before + s.retry.max_retries + 1
        for number in range(before + 1, last + 1):
            # Between stages: a cancelled worker starts nothing new.
            if self.token.cancelled:
                return self._end(self._cut_result())
            # After a crash of the shared pool we cannot tell who killed it: every job that was
            # on it failed. Retry such a job on a process of its own, so that a job that keeps
            # crashing cannot take the innocent ones down with it again and again.
            isolated = bool(self._attempts) and (
                self._attempts[-1].error_type == "WorkerCrashedError")
            # A job that can be cut on its own - by its timeout - runs in a process of its
            # own too: stopping it must not stop anyone else's work.
            isolated = isolated or job.timeout is not None
            start = now()
            first_start = self._first_start = (
                start if self._first_start is None else self._first_start)
            self._stage = CancelReason.INTERRUPTED
            s.trace.started(rec, start, self.slot, number)
            try:
                if job.timeout is None:
                    value = await self._attempt(job, number, isolated)
                else:
                    value = await self._timed_attempt(job, number, isolated, job.timeout)
            except BaseException as exc:  # the job's failure, whatever it is - except:
                if isinstance(exc, asyncio.CancelledError) and self._task is not None and (
                    self._task.cancelling()
                ):
                    raise  # our task is being cancelled: run() decides by whom
                # (A CancelledError while nobody cancels our task was raised by the job's
                # own code - a thread's function, say: a failure like any other.)
                end = now()
                error = f"{type(exc).__name__}: {exc}"
                self._attempts.append(Attempt(number, start, end, error, type(exc).__name__))
                s.trace.job_event(rec, end, EventKind.ATTEMPT_FAILED, worker=self.slot,
                                  attempt=number, info=error)
                if number == last:
                    return self._end(self._dead_letter(job, submitted_at, first_start))
                self._stage = CancelReason.AWAITING_RETRY
                pause = s.retry.delay(number, job.id)
                _log.info("job %s (%s) attempt %d failed, retrying in %.3g s: %s",
                          job.id, job.kind, number, pause, error)
                s.trace.job_event(rec, end, EventKind.RETRY_SCHEDULED, worker=self.slot,
                                  attempt=number + 1, value=pause)
                await asyncio.sleep(pause)
            else:
                end = now()
                s.trace.succeeded(rec, end, self.slot, number)
                if not self._attempts:  # the usual case: no JobResult object (see Collector)
                    self.job = None
                    s.succeeded(rec, self.slot, first_start, end, value)
                    return end
                return self._end(JobResult(
                    job.id, end - first_start, ResultStatus.SUCCEEDED, kind=job.kind,
                    attempts=len(self._attempts) + 1, worker=self.slot,
                    submitted_at=submitted_at, started_at=first_start, finished_at=end,
                    value=value,
                ))
        raise AssertionError("unreachable: the loop returns on the last attempt")

    async def _timed_attempt(self, job: Job, number: int, isolated: bool,
                             limit: float) -> Any:
        """An attempt with the job's timeout: past it, the attempt is cut (asyncio.timeout
        cancels it, and turns only its *own* cancellation into TimeoutError) and fails with
        JobTimeoutError. A TimeoutError the job raised by itself stays the job's own error."""
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                return await self._attempt(job, number, isolated)
        except TimeoutError:
            if deadline.expired():
                raise JobTimeoutError(
                    f"attempt {number} of job {job.id} ran longer than its timeout of "
                    f"{limit:g} s"
                ) from None
            raise

    async def _attempt(self, job: Job, number: int, isolated: bool = False) -> Any:
        """One try at `job`. Returns the job's value; raises on failure.
        `isolated`: run executor work in a process of its own (see CpuOffload.run)."""
        s = self._s
        kind = job.job_type
        value: Any
        if isinstance(kind, Call):
            value = await kind.fn(*kind.args, **kind.kwargs)
        elif isinstance(kind, Blocking):
            # kwargs travel inside a partial: run_in_executor passes positional args only.
            function = functools.partial(kind.fn, **kind.kwargs) if kind.kwargs else kind.fn
            value = await s.offload.run(function, *kind.args, isolated=isolated,
                                        job_id=job.id)
        elif isinstance(kind, Delayed):
            if kind.delay:  # Delayed(0) does not wait at all (asyncio.sleep(0) would yield)
                await asyncio.sleep(kind.delay)
            value = len(job.payload)  # "execute": the work after the wait is trivial here
        elif isinstance(kind, CpuBound):
            if s.cpu_cost is not None:
                await asyncio.sleep(kind.iterations * s.cpu_cost)  # modelled, not computed
                value = cpu_work(min(kind.iterations, 64), job.payload)
            else:
                value = await s.offload.run_cpu(
                    kind.iterations, job.payload, crash=s.failures.crashes(job.id),
                    isolated=isolated, job_id=job.id,
                )
        else:
            assert isinstance(kind, AsyncIo)
            value = await s.http().fetch(kind.url)
        plan = s.failures
        # (Most runs have no failure plan: two attribute reads instead of a call per job.)
        if (plan.fail_first or plan.fail_rate) and plan.fails(job.id, number):
            raise InjectedFailure(f"the failure plan fails attempt {number} of job {job.id}")
        return value

    def _cut_result(self) -> JobResult:
        """The CANCELLED result of the job in hand, named after the stage it was cut in."""
        job, rec = self.job, self._rec
        assert job is not None and rec is not None
        reason, attempts = self._stage, len(self._attempts)
        if reason is CancelReason.INTERRUPTED:
            attempts += 1  # the attempt that was running counts
        error = self._attempts[-1].error if reason is CancelReason.AWAITING_RETRY else None
        now = asyncio.get_running_loop().time()
        started_at = self._first_start
        self._s.trace.job_event(rec, now, EventKind.CANCELLED, worker=self.slot,
                                attempt=attempts or None, info=reason.value)
        return JobResult(
            job.id, 0.0 if started_at is None else now - started_at, ResultStatus.CANCELLED,
            kind=job.kind, attempts=attempts, worker=self.slot,
            submitted_at=rec.t_enq, started_at=started_at, finished_at=now,
            error=error, cancel_reason=reason,
        )

    def _dead_letter(self, job: Job, submitted_at: float, started_at: float) -> JobResult:
        attempts = self._attempts
        last = attempts[-1]
        _log.warning("job %s (%s) dead-lettered after %d attempt(s); last error: %s",
                     job.id, job.kind, len(attempts), last.error)
        self._s.dead_letters.add(DeadLetter(job, tuple(attempts)))
        assert self._rec is not None
        self._s.trace.job_event(self._rec, last.ended_at, EventKind.DEAD_LETTERED,
                                worker=self.slot, attempt=last.number, info=last.error)
        return JobResult(
            job.id, last.ended_at - started_at, ResultStatus.DEAD_LETTERED, kind=job.kind,
            attempts=len(attempts), worker=self.slot, submitted_at=submitted_at,
            started_at=started_at, finished_at=last.ended_at, error=last.error,
        )

    def __repr__(self) -> str:
        doing = f"job={self.job.id}" if self.job else "idle"
        return f"<Worker {self.slot} {doing}>"
