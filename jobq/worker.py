"""A worker slot: runs one job at a time, attempt by attempt, and reports how it ended.

The dispatcher owns N `Worker`s (the counterpart of tokio's spawned worker tasks, kept alive
instead of spawned per job: a task per job costs more than the job when jobs are small).
A worker waits for the dispatcher to hand it a job, runs it, delivers exactly one
`JobResult` to the collector, and tells the dispatcher it is free again.

One job runs in stages, and cancellation is checked between them:

    attempt 1 -> [failed] -> backoff pause -> attempt 2 -> ... -> succeeded | dead-lettered
    Delayed:  sleep(delay) -> (token checked) -> execute

Cancellation. Each worker has a child token of the dispatcher's. When it is cancelled (the
drain deadline passed), the worker task is cancelled *at the await it is waiting on* - the
sleep, the request, the backoff pause - and reports the job CANCELLED with the stage it cut:
INTERRUPTED (an attempt was running) or AWAITING_RETRY (a backoff pause). A CancelledError
that did not come from our token (someone cancelled the whole pipeline task) is re-raised,
never swallowed (Python 3.11's wait_for swallowed some - cpython#86296 - so we do not use it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from jobq.accounting import Ledger
from jobq.cancel import CancellationToken
from jobq.errors import InjectedFailure
from jobq.http import HttpClient
from jobq.jobs import AsyncIo, CancelReason, CpuBound, Delayed, Job, JobResult, ResultStatus
from jobq.offload import CpuOffload
from jobq.retry import Attempt, DeadLetter, DeadLetterQueue, FailurePlan, RetryPolicy
from jobq.trace import EventKind, Trace
from jobq.work import cpu_work

__all__ = ["Worker", "WorkerServices"]


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


class Worker:
    """Worker slot number `slot`. `assign()` gives it a job; `run()` is its task's body."""

    def __init__(
        self,
        slot: int,
        token: CancellationToken,
        services: WorkerServices,
        on_free: Callable[[int], None],
    ) -> None:
        self.slot = slot
        self.token = token
        self._s = services
        self._on_free = on_free
        self._inbox: asyncio.Future[Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._cut_by_token = False
        self.job: Job | None = None  # the job it is running, for statistics and repr

    def can_take(self) -> bool:
        """Is this worker's task alive and waiting for a job? (False once it was killed.)"""
        return self._inbox is not None and not self._inbox.done()

    def assign(self, job: Job) -> None:
        """Called by the dispatcher, only when this slot is free."""
        assert self._inbox is not None and not self._inbox.done(), "slot is not free"
        self._inbox.set_result(job)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        if self.token.cancelled:
            return  # cancelled before we began: _cut would cancel our own task on the way out
        remove = self.token.on_cancel(self._cut)
        try:
            while not self.token.cancelled:
                self._inbox = loop.create_future()
                try:
                    job = await self._inbox
                except asyncio.CancelledError:
                    # The dispatcher may have handed us a job in the very step the
                    # cancellation arrived: then the job is ours and must still end once.
                    handed = self._inbox.done() and not self._inbox.cancelled()
                    if not self._own_cancellation():
                        if handed:  # killed from outside: report the job, then die
                            job = self._inbox.result()
                            self._s.deliver(self._cancelled(
                                job, self._s.ledger.open[job.id], None, 0,
                                CancelReason.NEVER_STARTED))
                        raise
                    if not handed:
                        return  # idle when the token was cancelled: nothing to report
                    job = self._inbox.result()  # _run_job sees the token: never-started
                self.job = job
                self._s.deliver(await self._run_job(job))
                self.job = None
                self._on_free(self.slot)
        finally:
            remove()

    def _cut(self) -> None:
        """Token callback: interrupt whatever this worker is awaiting right now."""
        if self._task is not None and not self._task.done():
            self._cut_by_token = True
            self._task.cancel()

    def _own_cancellation(self) -> bool:
        """Was the CancelledError we caught sent by our token (and by nobody else)?"""
        if not self._cut_by_token:
            return False
        self._cut_by_token = False
        assert self._task is not None
        # uncancel() returns how many cancellations remain: any left came from elsewhere.
        return self._task.uncancel() == 0

    async def _run_job(self, job: Job) -> JobResult:
        s = self._s
        loop = asyncio.get_running_loop()
        submitted_at = s.ledger.open[job.id]
        attempts: list[Attempt] = []
        first_start: float | None = None
        before = s.earlier_attempts.pop(job.id, 0)
        last = before + s.retry.max_attempts
        for number in range(before + 1, last + 1):
            # Between stages: a cancelled worker starts nothing new.
            if self.token.cancelled:
                if first_start is None:
                    return self._cancelled(job, submitted_at, None, 0, CancelReason.NEVER_STARTED)
                return self._cancelled(job, submitted_at, first_start, len(attempts),
                                       CancelReason.AWAITING_RETRY, attempts[-1].error)
            # After a crash of the shared pool we cannot tell who killed it: every job that was
            # on it failed. Retry such a job on a process of its own, so that a job that keeps
            # crashing cannot take the innocent ones down with it again and again.
            isolated = bool(attempts) and attempts[-1].error_type == "WorkerCrashedError"
            start = loop.time()
            first_start = start if first_start is None else first_start
            s.trace.emit(start, EventKind.STARTED, job.id, self.slot, number)
            try:
                value = await self._attempt(job, number, isolated)
            except asyncio.CancelledError:
                ours = self._own_cancellation()
                result = self._cancelled(
                    job, submitted_at, first_start, len(attempts) + 1, CancelReason.INTERRUPTED
                )
                if not ours:  # killed from outside: the job still ends once, then we die
                    s.deliver(result)
                    raise
                return result
            except Exception as exc:  # any failure of the job's own code is a failed attempt
                end = loop.time()
                error = f"{type(exc).__name__}: {exc}"
                attempts.append(Attempt(number, start, end, error, type(exc).__name__))
                s.trace.emit(end, EventKind.ATTEMPT_FAILED, job.id, self.slot, number, error)
                if number == last:
                    return self._dead_letter(job, submitted_at, first_start, attempts)
                pause = s.retry.delay(number, job.id)
                s.trace.emit(end, EventKind.RETRY_SCHEDULED, job.id, self.slot, number + 1,
                             None, pause)
                try:
                    await asyncio.sleep(pause)
                except asyncio.CancelledError:
                    ours = self._own_cancellation()
                    result = self._cancelled(
                        job, submitted_at, first_start, len(attempts),
                        CancelReason.AWAITING_RETRY, error,
                    )
                    if not ours:  # killed from outside: the job still ends once, then we die
                        s.deliver(result)
                        raise
                    return result
            else:
                end = loop.time()
                s.trace.emit(end, EventKind.SUCCEEDED, job.id, self.slot, number)
                return JobResult(
                    job.id, end - first_start, ResultStatus.SUCCEEDED, kind=job.kind,
                    attempts=len(attempts) + 1, worker=self.slot, submitted_at=submitted_at,
                    started_at=first_start, finished_at=end, value=value,
                )
        raise AssertionError("unreachable: the loop returns on the last attempt")

    async def _attempt(self, job: Job, number: int, isolated: bool = False) -> int:
        """One try at `job`. Returns a small integer result; raises on failure.
        `isolated`: run CpuBound work in a process of its own (see CpuOffload.run)."""
        s = self._s
        kind = job.job_type
        if isinstance(kind, Delayed):
            await asyncio.sleep(kind.delay)
            value = len(job.payload)  # "execute": the work after the wait is trivial here
        elif isinstance(kind, CpuBound):
            if s.cpu_cost is not None:
                await asyncio.sleep(kind.iterations * s.cpu_cost)  # modelled, not computed
                value = cpu_work(min(kind.iterations, 64), job.payload)
            else:
                value = await s.offload.run(
                    kind.iterations, job.payload, crash=s.failures.crashes(job.id),
                    isolated=isolated,
                )
        else:
            assert isinstance(kind, AsyncIo)
            value = (await s.http().fetch(kind.url)).status
        if s.failures.fails(job.id, number):
            raise InjectedFailure(f"the failure plan fails attempt {number} of job {job.id}")
        return value

    def _cancelled(
        self,
        job: Job,
        submitted_at: float,
        started_at: float | None,
        attempts: int,
        reason: CancelReason,
        error: str | None = None,
    ) -> JobResult:
        now = asyncio.get_running_loop().time()
        self._s.trace.emit(now, EventKind.CANCELLED, job.id, self.slot, attempts or None,
                           reason.value)
        return JobResult(
            job.id, 0.0 if started_at is None else now - started_at, ResultStatus.CANCELLED,
            kind=job.kind, attempts=attempts, worker=self.slot, submitted_at=submitted_at,
            started_at=started_at, finished_at=now, error=error, cancel_reason=reason,
        )

    def _dead_letter(
        self, job: Job, submitted_at: float, started_at: float, attempts: list[Attempt]
    ) -> JobResult:
        last = attempts[-1]
        self._s.dead_letters.add(DeadLetter(job, tuple(attempts)))
        self._s.trace.emit(last.ended_at, EventKind.DEAD_LETTERED, job.id, self.slot,
                           last.number, last.error)
        return JobResult(
            job.id, last.ended_at - started_at, ResultStatus.DEAD_LETTERED, kind=job.kind,
            attempts=len(attempts), worker=self.slot, submitted_at=submitted_at,
            started_at=started_at, finished_at=last.ended_at, error=last.error,
        )

    def __repr__(self) -> str:
        doing = f"job={self.job.id}" if self.job else "idle"
        return f"<Worker {self.slot} {doing}>"
