"""The pipeline's guarantees: the seed's three tests, shutdown, accounting, bad input."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

import jobq
from jobq import (
    AsyncIo,
    CancelReason,
    CpuBound,
    Delayed,
    DuplicateJobError,
    FailurePlan,
    InvalidConfigError,
    InvalidJobError,
    Job,
    Pipeline,
    PipelineClosedError,
    QueueFullError,
    ResultStatus,
    RetryPolicy,
    VirtualClock,
)
from jobq.testing import LocalServer, assert_each_job_ended_once, delayed_jobs, peak_concurrency
from jobq.trace import EventKind

# -- the seed's three tests --------------------------------------------------------------


@pytest.mark.virtual_time
async def test_backpressure() -> None:
    """Slow workers, fast producer: the producer waits once `capacity` jobs wait."""
    loop = asyncio.get_running_loop()
    pipe = Pipeline(workers=2, capacity=10, executor="inline")
    submitted_at: list[float] = []
    async with pipe:
        for job in delayed_jobs([1.0] * 40):
            if pipe.statistics().queued == 10:
                # The queue is full: the non-waiting twin refuses, the waiting one waits.
                with pytest.raises(QueueFullError, match="capacity"):
                    pipe.submit_nowait(Job(1000 + job.id, b"", Delayed(0)))
            await pipe.submit(job)
            submitted_at.append(loop.time())
            assert pipe.statistics().queued <= 10
    # 2 start at once and 10 wait: the first 12 submits are instant, the 13th waits 1 s.
    assert submitted_at[:12] == [0.0] * 12
    assert submitted_at[12] == 1.0
    # From then on the producer moves at the workers' pace: 2 jobs per virtual second.
    assert submitted_at[-1] == 14.0
    blocked = pipe.trace.of_kind(EventKind.PRODUCER_BLOCKED)
    assert 14 <= len(blocked) <= 40 - 12  # about one wait per virtual second, for 14 s
    assert max(e.value for e in pipe.trace.of_kind(EventKind.ENQUEUED) if e.value) == 10
    assert pipe.report.succeeded == 40 and pipe.report.lost == 0


@pytest.mark.virtual_time(auto_advance=False)
async def test_graceful_shutdown(virtual_clock: VirtualClock) -> None:
    """Paused clock: submit, cancel the root token, advance time; every job ended once."""
    delays = [0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0] * 3
    pipe = Pipeline(workers=4, capacity=30, executor="inline")
    await pipe.start()  # no `async with`: this test stops the pipeline itself
    for job in delayed_jobs(delays):
        pipe.submit_nowait(job)
    await virtual_clock.advance(2.0)  # step time by hand, like tokio's advance()
    done_by_then = pipe.statistics().succeeded
    assert done_by_then > 0
    pipe.token.cancel()  # "stop now"
    await virtual_clock.advance(1.0)
    report = await pipe.shutdown()
    assert report.lost == 0
    assert report.submitted == len(delays) == report.succeeded + report.cancelled
    assert report.succeeded == done_by_then  # nothing finished after the cancel
    assert report.cancelled_interrupted == 4  # the four running jobs were cut
    assert report.cancelled_never_started == len(delays) - done_by_then - 4
    assert_each_job_ended_once(pipe, accepted=range(len(delays)))
    assert all(r.finished_at == 2.0 for r in pipe.results if r.status is ResultStatus.CANCELLED)


@pytest.mark.virtual_time
async def test_worker_pool_concurrency() -> None:
    """Submit N jobs; at most W run at once, and W do."""
    rng = random.Random(7)
    for workers in (1, 3, 8):
        result = await jobq.run(
            delayed_jobs([rng.uniform(0.1, 2.0) for _ in range(60)]),
            workers=workers, capacity=5, executor="inline", producers=3,
        )
        assert peak_concurrency(result.trace) == workers
        assert result.report.succeeded == 60


# -- graceful shutdown in phases ----------------------------------------------------------


@pytest.mark.virtual_time
async def test_shutdown_drains_queued_and_running_jobs() -> None:
    pipe = Pipeline(workers=2, capacity=10, executor="inline")
    async with pipe:
        await pipe.submit_many(delayed_jobs([3.0] * 10))
    assert pipe.report.succeeded == 10 and pipe.report.drained
    assert [name for name, _ in pipe.report.phases] == ["closing", "draining", "stopped"]
    assert asyncio.get_running_loop().time() == 15.0  # 10 jobs x 3 s / 2 workers


@pytest.mark.virtual_time
async def test_shutdown_deadline_cuts_what_is_left() -> None:
    pipe = Pipeline(workers=2, capacity=10, executor="inline")
    async with pipe:
        await pipe.submit_many(delayed_jobs([4.0] * 6))
        report = await pipe.shutdown(drain_timeout=5.0)
    # t=4: jobs 0,1 done, 2,3 start; t=5 deadline: 2,3 interrupted, 4,5 never started.
    assert (report.succeeded, report.cancelled_interrupted, report.cancelled_never_started) == (
        2, 2, 2)
    assert dict(report.phases)["deadline"] == 5.0
    assert not report.drained and report.lost == 0


@pytest.mark.virtual_time
async def test_cancel_queued_ends_waiting_jobs_at_once() -> None:
    pipe = Pipeline(workers=1, capacity=10, executor="inline")
    async with pipe:
        await pipe.submit_many(delayed_jobs([1.0] * 5))
        await asyncio.sleep(0)  # let the dispatcher start job 0
        report = await pipe.shutdown(cancel_queued=True)
    assert (report.succeeded, report.cancelled_never_started) == (1, 4)
    reasons = {r.job_id: r.cancel_reason for r in pipe.results}
    assert reasons[0] is None and reasons[4] is CancelReason.NEVER_STARTED


@pytest.mark.virtual_time
async def test_producer_waiting_at_shutdown_gets_a_clear_error_and_nothing_is_lost() -> None:
    pipe = Pipeline(workers=1, capacity=1, executor="inline")
    await pipe.start()
    await pipe.submit(Job(1, b"", Delayed(10)))
    await pipe.submit(Job(2, b"", Delayed(10)))  # job 1 runs, job 2 waits in the queue
    blocked = asyncio.create_task(pipe.submit(Job(3, b"", Delayed(10))))
    await asyncio.sleep(1)
    assert pipe.statistics().producers_waiting == 1
    shutdown = asyncio.create_task(pipe.shutdown(drain_timeout=None))
    with pytest.raises(PipelineClosedError):
        await blocked
    report = await shutdown
    assert report.submitted == 2 and report.succeeded == 2 and report.lost == 0
    with pytest.raises(PipelineClosedError, match="stopped"):
        await pipe.submit(Job(4, b"", Delayed(0)))


@pytest.mark.virtual_time
async def test_retry_wait_at_deadline_is_reported_with_its_reason() -> None:
    pipe = Pipeline(workers=1, executor="inline", failures=FailurePlan(fail_first={0: 9}),
                    retry=RetryPolicy(max_retries=3, base_delay=10.0))
    async with pipe:
        await pipe.submit(Job(0, b"", Delayed(1.0)))
        report = await pipe.shutdown(drain_timeout=5.0)
    assert report.cancelled_awaiting_retry == 1 and report.lost == 0
    (result,) = pipe.results
    assert result.attempts == 1 and result.error is not None


# -- retries and dead letters ---------------------------------------------------------------


@pytest.mark.virtual_time
async def test_retries_back_off_exponentially_then_dead_letter() -> None:
    policy = RetryPolicy(max_retries=3, base_delay=0.5, factor=2.0)
    result = await jobq.run(
        delayed_jobs([1.0, 1.0]), workers=2, executor="inline", retry=policy,
        failures=FailurePlan(fail_first={0: 2, 1: 10}),
    )
    starts = {j: [e.t for e in result.trace.for_job(j) if e.kind is EventKind.STARTED]
              for j in (0, 1)}
    # attempt, 0.5 s pause, attempt, 1 s pause, attempt (job 0 succeeds on its third)
    assert starts[0] == [0.0, 1.5, 3.5]
    assert starts[1] == [0.0, 1.5, 3.5, 6.5]  # ... 2 s pause, fourth and last attempt
    assert result.report.succeeded == 1 and result.report.dead_lettered == 1
    assert isinstance(result.dead_letters, jobq.DeadLetterQueue)
    letter = result.dead_letters.get(1)
    assert isinstance(letter, jobq.DeadLetter) and len(letter.attempts) == 4
    assert all(isinstance(a, jobq.Attempt) for a in letter.attempts)
    assert all(a.error_type == jobq.InjectedFailure.__name__ for a in letter.attempts)
    assert [a.started_at for a in letter.attempts] == starts[1]


@pytest.mark.virtual_time
async def test_dead_letters_can_be_replayed() -> None:
    plan = FailurePlan(fail_first={5: 4})  # four failures: all of the first run's attempts
    async with Pipeline(workers=2, executor="inline", failures=plan,
                        retry=RetryPolicy(base_delay=0.1)) as pipe:
        await pipe.submit_many(delayed_jobs([0.2] * 8))
        await pipe.wait_drained()
        assert pipe.dead_letters.ids() == [5]
        assert await pipe.replay() == [5]  # attempt 5 onwards succeeds
        await pipe.wait_drained()
    assert pipe.report.submitted == 9 and pipe.report.succeeded == 8
    assert pipe.report.dead_lettered == 1 and len(pipe.dead_letters) == 0
    replayed = pipe.trace.for_job(5)
    assert [e.attempt for e in replayed if e.kind is EventKind.STARTED] == [1, 2, 3, 4, 5]
    assert_each_job_ended_once(pipe)  # job 5 was accepted twice, and ended once each time


# -- the three job types ----------------------------------------------------------------------


def test_cpu_jobs_in_processes_threads_and_inline_compute_the_same() -> None:
    jobs = [Job(i, bytes([i]) * 7, CpuBound(20_000 + i)) for i in range(6)]
    expected = {job.id: jobq.cpu_work(20_000 + job.id, job.payload) for job in jobs}
    for executor in ("process", "thread", "inline"):
        result = asyncio.run(jobq.run(jobs, workers=3, executor=executor))
        assert {r.job_id: r.value for r in result.results} == expected, executor


def test_a_crashing_worker_process_is_retried_then_dead_lettered() -> None:
    jobs = [Job(i, b"x", CpuBound(1000)) for i in range(6)]
    result = asyncio.run(jobq.run(
        jobs, workers=2, executor="process", failures=FailurePlan(crash={3}),
        retry=RetryPolicy(max_retries=1, base_delay=0.01),
    ))
    assert result.report.dead_lettered == 1 and result.report.lost == 0
    assert jobq.WorkerCrashedError.__name__ in (result.dead_letters.get(3).last_error or "")
    assert result.report.succeeded == 5


def notebook_function(iterations: int, payload: bytes) -> int:
    return iterations


def test_process_pool_refuses_a_function_it_cannot_import() -> None:
    with pytest.raises(jobq.NotImportableError, match="cannot import"):
        Pipeline(cpu_function=lambda n, p: n)
    notebook_function.__module__ = "__main__"  # as if defined in a notebook cell
    with pytest.raises(jobq.NotImportableError, match="executor='thread'"):
        Pipeline(cpu_function=notebook_function)
    Pipeline(cpu_function=notebook_function, executor="thread")  # threads import nothing


@pytest.mark.virtual_time
async def test_io_job_on_virtual_time_waits_for_the_real_server() -> None:
    """The clock must not jump during a real request (0.2 s server, 5 s client timeout)."""
    with LocalServer(latency=0.2) as server:
        result = await jobq.run(
            [Job(1, b"", AsyncIo(server.url("/ok"))),
             Job(2, b"", AsyncIo(server.url("/status/503")))],
            workers=2, http=jobq.HttpLimits(read_timeout=5.0),
            retry=RetryPolicy(max_retries=0),
        )
    ok = next(r for r in result.results if r.job_id == 1)
    assert ok.status is ResultStatus.SUCCEEDED and ok.value.status == 200
    assert 0.15 < ok.duration < 5.0  # real seconds passed on the virtual clock, no timeout
    assert "503" in (result.dead_letters.get(2).last_error or "")


def test_an_hour_of_delays_takes_well_under_a_second() -> None:
    rng = random.Random(1)
    jobs = delayed_jobs([rng.uniform(0, 60) for _ in range(600)])  # 5 h of sleeping, 4 workers

    async def main() -> jobq.RunResult:
        return await jobq.run(jobs, workers=4, executor="inline")

    began = time.perf_counter()
    first = jobq.run_virtual(main())
    wall = time.perf_counter() - began
    second = jobq.run_virtual(main())
    assert first.report.succeeded == 600
    assert first.metrics.elapsed > 3600  # more than an hour of virtual time ...
    assert wall < 5.0  # ... in (much) less than a few seconds; bench/ measures it exactly
    assert [e.t for e in first.trace] == [e.t for e in second.trace]  # same run, same times


# -- bad input is refused, and what was accepted still finishes -------------------------------


@pytest.mark.virtual_time
async def test_bad_submits_are_refused_and_accepted_jobs_still_finish() -> None:
    async with Pipeline(workers=2, executor="inline") as pipe:
        await pipe.submit(Job(1, b"", Delayed(0.5)))
        with pytest.raises(DuplicateJobError, match=r"Job\.id 1"):
            await pipe.submit(Job(1, b"", Delayed(0.5)))
        with pytest.raises(InvalidJobError, match="takes a Job"):
            await pipe.submit("not a job")  # type: ignore[arg-type]
        await pipe.submit(Job(2, b"", Delayed(0.5)))
    assert pipe.report.succeeded == 2


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Delayed(-1.0), "Delayed.delay"),
        (lambda: Delayed(float("nan")), "Delayed.delay"),
        (lambda: CpuBound(-5), "CpuBound.iterations"),
        (lambda: CpuBound(1.5), "CpuBound.iterations"),  # type: ignore[arg-type]
        (lambda: AsyncIo("ftp://example.org/x"), "AsyncIo.url"),
        (lambda: AsyncIo("http://[::1"), "AsyncIo.url"),
        (lambda: Job(1, "text", Delayed(1)), "Job.payload"),  # type: ignore[arg-type]
        (lambda: Pipeline(capacity=0), "capacity"),
        (lambda: Pipeline(workers=0), "workers"),
        (lambda: RetryPolicy(max_retries=-1), "RetryPolicy.max_retries"),
        (lambda: RetryPolicy(jitter=2.0), "RetryPolicy.jitter"),
    ],
)
def test_bad_input_names_the_field(make: object, field: str) -> None:
    with pytest.raises((InvalidJobError, InvalidConfigError), match=field.replace(".", r"\.")):
        make()  # type: ignore[operator]


@pytest.mark.virtual_time
async def test_statistics_and_repr_show_the_state() -> None:
    pipe = Pipeline(workers=2, capacity=5, executor="inline")
    assert repr(pipe) == "<Pipeline created queued=0 running=0>"
    async with pipe:
        for job in delayed_jobs([1.0] * 5):
            pipe.submit_nowait(job)
        await asyncio.sleep(0)
        stats = pipe.statistics()
        assert (stats.running, stats.queued, stats.open) == (2, 3, 5)
        # The enum (a str enum: it equals its value, and shows as it - notebooks print it).
        assert stats.state == "running"
        assert stats.state is jobq.PipelineState.RUNNING
        assert repr(stats) == (
            "PipelineStatistics(state='running', workers=2, capacity=5, queued=3, running=2, "
            "submitted=5, succeeded=0, dead_lettered=0, cancelled=0, open=5, "
            "producers_waiting=0)")
        assert repr(pipe) == "<Pipeline running queued=3 running=2>"
    assert pipe.statistics().state is jobq.PipelineState.STOPPED
    assert repr(pipe) == "<Pipeline stopped queued=0 running=0>"


@pytest.mark.virtual_time
async def test_an_error_in_the_block_drains_what_was_accepted_then_raises() -> None:
    # Accepted jobs are a promise: an error in the producer's code does not break it. The
    # block drains as it would on a normal exit, then the error goes on up.
    pipe = Pipeline(workers=1, capacity=5, executor="inline")
    with pytest.raises(ZeroDivisionError):
        async with pipe:
            for job in delayed_jobs([1.0] * 4):
                await pipe.submit(job)
            await asyncio.sleep(0.5)
            1 / 0  # noqa: B018
    assert (pipe.report.succeeded, pipe.report.cancelled, pipe.report.lost) == (4, 0, 0)
    assert asyncio.get_running_loop().time() == 4.0  # it waited for the four jobs


@pytest.mark.virtual_time
async def test_a_cancelled_block_stops_now_and_accounts_for_every_job() -> None:
    # Cancelled (Ctrl-C in asyncio.run, a task cancelled): the caller asked to stop, not to
    # wait - the running job is cut, the queued ones never start.
    pipe = Pipeline(workers=1, capacity=5, executor="inline")

    async def producer() -> None:
        async with pipe:
            for job in delayed_jobs([1.0] * 4):
                await pipe.submit(job)
            await asyncio.sleep(3600)

    task = asyncio.create_task(producer())
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (pipe.report.cancelled_interrupted, pipe.report.cancelled_never_started) == (1, 3)
    assert pipe.report.lost == 0
    assert asyncio.get_running_loop().time() == 0.5

