"""Your own work through the pipeline: async functions (Call), blocking functions (Blocking),
handles, results as they complete, per-job timeouts, values, bounded retention, logging.

Timing claims run on the virtual clock (exact), real processes only where the point is a
process (pickling, killing a timed-out job)."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from pathlib import Path

import pytest

import jobq
from jobq import (
    AsyncIo,
    Blocking,
    Call,
    CancelReason,
    Delayed,
    FailurePlan,
    InvalidJobError,
    Job,
    JobCancelledError,
    JobDeadLetteredError,
    JobHandle,
    JobTimeoutError,
    Pipeline,
    ResultNotReadyError,
    ResultStatus,
    RetryPolicy,
)
from jobq.testing import LocalServer
from jobq.trace import EventKind

from . import workfns
from .helpers import wait_for_file, wait_gone

NO_RETRY = RetryPolicy(max_retries=0)


async def double(x: int, *, plus: int = 0) -> int:
    await asyncio.sleep(1.0)
    return 2 * x + plus


async def fail_twice(key: list[int]) -> str:
    key.append(1)
    if len(key) <= 2:
        raise ConnectionError(f"try {len(key)} failed")
    return "third time lucky"


async def forever() -> None:
    await asyncio.sleep(math.inf)


def plain(x: int) -> int:
    return x + 1


# -- async functions on the loop -----------------------------------------------------------------


@pytest.mark.virtual_time
async def test_an_async_function_runs_on_the_loop_and_its_value_comes_back() -> None:
    async with Pipeline(workers=2, executor="inline") as pipe:
        first = await pipe.submit(Call(double, 20, plus=2))
        second = await pipe.submit(Call(double, 1))
        assert await first == 42 and await second == 2
    assert asyncio.get_running_loop().time() == 1.0  # both ran at once
    assert {r.kind for r in pipe.results} == {"double"}  # named after the function
    assert pipe.metrics().by_kind == {"double": 2}


@pytest.mark.virtual_time
async def test_an_async_function_is_retried_like_any_job() -> None:
    tries: list[int] = []
    async with Pipeline(workers=1, executor="inline",
                        retry=RetryPolicy(max_retries=3, base_delay=0.5)) as pipe:
        handle = await pipe.submit(Call(fail_twice, tries))
        assert await handle == "third time lucky"
    failed = pipe.trace.of_kind(EventKind.ATTEMPT_FAILED)
    assert [e.info for e in failed] == ["ConnectionError: try 1 failed",
                                       "ConnectionError: try 2 failed"]
    assert asyncio.get_running_loop().time() == 1.5  # backoff 0.5 then 1.0


@pytest.mark.virtual_time
async def test_an_async_function_is_cut_at_the_drain_deadline() -> None:
    pipe = Pipeline(workers=1, executor="inline", drain_timeout=2.0)
    async with pipe:
        handle = await pipe.submit(Call(forever))
    with pytest.raises(JobCancelledError) as caught:
        await handle
    assert caught.value.reason is CancelReason.INTERRUPTED
    assert pipe.report.cancelled_interrupted == 1


# -- blocking functions in the executor ----------------------------------------------------------


@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
def test_a_blocking_function_runs_in_the_executor_with_args_and_kwargs(executor: str) -> None:
    async def main() -> list[object]:
        async with Pipeline(workers=2, executor=executor) as pipe:  # type: ignore[arg-type]
            handles = [await pipe.submit(Blocking(workfns.power, base, exponent=3))
                       for base in range(4)]
            return [await h for h in handles]

    assert asyncio.run(main()) == [0, 1, 8, 27]


def test_unpicklable_arguments_and_results_fail_the_attempt_not_the_pool() -> None:
    async def main() -> tuple[list[ResultStatus | None], list[str], int]:
        pipe = Pipeline(workers=2, executor="process", retry=NO_RETRY)
        async with pipe:
            bad_arg = await pipe.submit(Blocking(workfns.power, lambda: 1))
            bad_result = await pipe.submit(Blocking(workfns.unpicklable_result))
            good = await pipe.submit(Blocking(workfns.power, 3, exponent=2))
        assert await good == 9
        errors = [letter.last_error or "" for letter in pipe.dead_letters]
        return [bad_arg.status, bad_result.status], errors, pipe._offload.rebuilds

    statuses, errors, rebuilds = asyncio.run(main())
    assert statuses == [ResultStatus.DEAD_LETTERED] * 2
    # The pickling error names the lambda (PicklingError on 3.11, AttributeError on 3.13).
    assert any("<lambda>" in e for e in errors), errors
    assert any("cannot be sent back" in e for e in errors), errors
    assert rebuilds == 0


def test_a_function_a_process_cannot_import_is_refused_at_submit() -> None:
    def nested(x: int) -> int:
        return x

    async def main() -> None:
        async with Pipeline(executor="process") as pipe:
            with pytest.raises(jobq.NotImportableError, match="nested"):
                await pipe.submit(Blocking(nested, 1))
            with pytest.raises(jobq.NotImportableError, match="lambda"):
                await pipe.submit(Blocking(lambda: 1))
        assert pipe.report.submitted == 0

    asyncio.run(main())


# -- bad input ----------------------------------------------------------------------------------


def test_bad_functions_are_refused_with_what_to_write_instead() -> None:
    with pytest.raises(InvalidJobError, match=r"Call.fn must be a function, got int 3"):
        Call(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidJobError, match=r"plain function plain.*Blocking\(plain"):
        Call(plain, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidJobError, match=r"async function double.*Call\(double"):
        Blocking(double, 1)
    with pytest.raises(InvalidJobError, match=r"coroutine object double.*not Call\(double\("):
        Call(double(1))  # type: ignore[arg-type]
    for timeout in (0, -1, math.nan, "5", True):
        with pytest.raises(InvalidJobError, match=r"Job\.timeout"):
            Job(1, b"", Call(double, 1), timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(InvalidJobError, match="wrap your function"):
        Job(1, b"", double)  # type: ignore[arg-type]


@pytest.mark.virtual_time
async def test_submit_refuses_a_timeout_that_is_not_a_positive_number() -> None:
    async with Pipeline(executor="inline") as pipe:
        with pytest.raises(InvalidJobError, match="timeout"):
            await pipe.submit(Call(double, 1), timeout=-2)
    assert pipe.report.submitted == 0


# -- ids ---------------------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_ids_are_optional_and_never_collide_with_explicit_ones() -> None:
    async with Pipeline(workers=2, executor="inline") as pipe:
        explicit = await pipe.submit(Job(1, b"", Delayed(1)))
        auto = [await pipe.submit(Delayed(1)) for _ in range(3)]
        with pytest.raises(jobq.DuplicateJobError):
            await pipe.submit(Job(auto[0].job_id, b"", Delayed(1)))
    ids = [explicit.job_id] + [h.job_id for h in auto]
    assert explicit.job_id == 1 and len(set(ids)) == 4
    assert pipe.report.succeeded == 4


# -- handles -----------------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_a_handle_reports_status_result_and_errors() -> None:
    async with Pipeline(workers=1, executor="inline", retry=RetryPolicy(max_retries=1),
                        failures=FailurePlan(fail_first={2: 5})) as pipe:
        ok = await pipe.submit(Job(1, b"four", Delayed(1)))
        bad = await pipe.submit(Job(2, b"", Delayed(1)))
        assert ok.status is None and not ok.done()
        with pytest.raises(ResultNotReadyError):
            ok.result()
        assert await ok == 4  # a Delayed job's value is its payload's length
        assert ok.result() == 4 and ok.status is ResultStatus.SUCCEEDED
        with pytest.raises(JobDeadLetteredError) as caught:
            await bad
    letter = caught.value.dead_letter
    assert letter is not None and [a.number for a in letter.attempts] == [1, 2]
    result = await bad.wait()  # wait() gives the JobResult and never raises
    assert result.status is ResultStatus.DEAD_LETTERED and repr(bad) == (
        "<JobHandle job=2 dead-lettered>")


@pytest.mark.virtual_time
async def test_cancelling_a_queued_job_means_it_never_starts() -> None:
    async with Pipeline(workers=1, capacity=5, executor="inline") as pipe:
        running = await pipe.submit(Job(1, b"", Delayed(10)))
        queued = await pipe.submit(Job(2, b"", Delayed(10)))
        after = await pipe.submit(Job(3, b"", Delayed(10)))
        await asyncio.sleep(1)
        assert queued.cancel() is True
        assert queued.cancel() is False  # once is enough
        with pytest.raises(JobCancelledError) as caught:
            await queued
        assert caught.value.reason is CancelReason.NEVER_STARTED
    assert await running is not None and await after is not None
    assert asyncio.get_running_loop().time() == 20.0  # job 2 never took its 10 s
    report = pipe.report
    assert (report.succeeded, report.cancelled_never_started, report.lost) == (2, 1, 0)
    assert [e.kind for e in pipe.trace.for_job(2)] == [EventKind.ENQUEUED, EventKind.CANCELLED]


@pytest.mark.virtual_time
async def test_cancelling_a_running_job_interrupts_it_and_the_worker_goes_on() -> None:
    async with Pipeline(workers=1, capacity=5, executor="inline") as pipe:
        long = await pipe.submit(Call(forever))
        nxt = await pipe.submit(Call(double, 5))
        await asyncio.sleep(3)
        assert long.cancel()
        assert not long.cancel()  # one cut, one True (it was True again before it landed)
        with pytest.raises(JobCancelledError) as caught:
            await long
        assert caught.value.reason is CancelReason.INTERRUPTED
        assert await nxt == 10
    assert asyncio.get_running_loop().time() == 4.0  # cut at 3, then 1 s of `double`
    assert pipe.report.cancelled_interrupted == 1


def test_cancelling_a_job_running_in_a_process_stops_the_process(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    async def main() -> tuple[int, ResultStatus | None]:
        async with Pipeline(workers=2, executor="process") as pipe:
            handle = await pipe.submit(Blocking(workfns.sleeper, 6000, str(pidfile).encode()))
            await asyncio.to_thread(wait_for_file, pidfile)
            handle.cancel()
            with pytest.raises(JobCancelledError):
                await handle
            ok = await pipe.submit(Blocking(workfns.power, 2, exponent=5))
            assert await ok == 32  # the pool works again
        return int(pidfile.read_text()), handle.status

    pid, status = asyncio.run(main())
    assert status is ResultStatus.CANCELLED
    assert wait_gone(pid)


@pytest.mark.virtual_time
async def test_a_handle_nobody_holds_costs_nothing_after_its_job_ends() -> None:
    async with Pipeline(workers=4, executor="inline") as pipe:
        for _ in range(100):
            await pipe.submit(Delayed(1))  # the handle is dropped at once
        kept = await pipe.submit(Delayed(1))
        await pipe.wait_drained()
        gc.collect()
        assert pipe._handles_alive() <= 1  # only the one this test holds
        assert await kept == 0


# -- results as they complete --------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_as_completed_yields_in_end_order_while_producers_submit() -> None:
    pipe = Pipeline(workers=3, capacity=2, executor="inline")
    seen: list[tuple[int, float, float]] = []

    async def read() -> None:
        async for result in pipe.as_completed():
            seen.append((result.job_id, result.finished_at, asyncio.get_running_loop().time()))

    async with pipe:
        reader = asyncio.create_task(read())
        for i, delay in enumerate([3, 1, 2, 5, 3]):
            await pipe.submit(Job(i, b"", Delayed(delay)))
    await reader  # ends by itself once the pipeline has stopped
    assert [job for job, _, _ in seen] == [1, 2, 0, 4, 3]  # 4 starts at 2, ends at 5
    assert all(ended == read_at for _, ended, read_at in seen)  # read the moment it ended


@pytest.mark.virtual_time
async def test_as_completed_is_bounded_a_slow_reader_holds_the_producer_back() -> None:
    pipe = Pipeline(workers=4, capacity=4, executor="inline")
    async with pipe:
        stream = pipe.as_completed(maxsize=2)
        producer = asyncio.create_task(pipe.submit_many(
            [Job(i, b"", Delayed(0.1)) for i in range(10)]))
        await asyncio.sleep(5)  # nobody reads: the stream fills, then the producer waits
        assert not producer.done()
        assert len(pipe.results) <= 2 + 4 + 4  # stream + running + queued, not all 10
        got = [r.job_id async for r in _take(stream, 10)]
        await producer
    assert sorted(got) == list(range(10))


async def _take(stream: jobq.ResultStream, n: int):  # type: ignore[no-untyped-def]
    for _ in range(n):
        yield await anext(stream)


@pytest.mark.virtual_time
async def test_as_completed_is_cancel_safe() -> None:
    pipe = Pipeline(workers=1, executor="inline")
    async with pipe:
        stream = pipe.as_completed()
        await pipe.submit(Job(1, b"", Delayed(2)))
        waiting = asyncio.create_task(anext(stream))
        await asyncio.sleep(1)
        waiting.cancel()  # cancelled while it waits: it had taken nothing
        with pytest.raises(asyncio.CancelledError):
            await waiting
        result = await anext(stream)
        assert result.job_id == 1
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


# -- per-job timeout ---------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_a_timeout_cuts_the_attempt_and_it_is_retried() -> None:
    async with Pipeline(workers=1, executor="inline",
                        retry=RetryPolicy(max_retries=2, base_delay=1.0)) as pipe:
        handle = await pipe.submit(Call(forever), timeout=3)
        with pytest.raises(JobDeadLetteredError) as caught:
            await handle
    letter = caught.value.dead_letter
    assert letter is not None
    assert [a.error_type for a in letter.attempts] == ["JobTimeoutError"] * 3
    assert [(a.started_at, a.ended_at) for a in letter.attempts] == [
        (0.0, 3.0), (4.0, 7.0), (9.0, 12.0)]
    assert "timeout of 3" in (letter.last_error or "")
    assert issubclass(JobTimeoutError, jobq.JobFailedError)


@pytest.mark.virtual_time
async def test_a_timeout_error_raised_by_the_job_itself_is_not_our_timeout() -> None:
    async def own_timeout() -> None:
        raise TimeoutError("my own")

    async with Pipeline(executor="inline", retry=NO_RETRY) as pipe:
        handle = await pipe.submit(Call(own_timeout), timeout=10)
        with pytest.raises(JobDeadLetteredError, match="TimeoutError: my own"):
            await handle


def test_a_timed_out_job_in_a_process_has_its_process_stopped(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    async def main() -> int:
        async with Pipeline(workers=2, executor="process", retry=NO_RETRY) as pipe:
            handle = await pipe.submit(Blocking(workfns.sleeper, 6000, str(pidfile).encode()),
                                       timeout=1.0)
            with pytest.raises(JobDeadLetteredError, match="JobTimeoutError"):
                await handle
        return int(pidfile.read_text())

    began = time.monotonic()
    pid = asyncio.run(main())
    assert time.monotonic() - began < 30  # not the job's 600 s
    assert wait_gone(pid)


# -- values, retention, logging ----------------------------------------------------------------


def test_an_io_job_returns_the_response() -> None:
    async def main() -> jobq.FetchResult:
        with LocalServer() as server:
            async with Pipeline(executor="inline") as pipe:
                handle = await pipe.submit(AsyncIo(server.url("/big/10")))
                return await handle  # type: ignore[no-any-return]

    response = asyncio.run(main())
    assert response.status == 200 and response.body == b"x" * 10
    assert "content-length" in {k.lower() for k in response.headers}


@pytest.mark.virtual_time
async def test_keep_results_n_keeps_the_last_n() -> None:
    async with Pipeline(workers=1, executor="inline", keep_results=3) as pipe:
        handles = [await pipe.submit(Job(i, b"", Delayed(1))) for i in range(10)]
    assert [r.job_id for r in pipe.results] == [7, 8, 9]
    assert all(h.done() for h in handles)  # handles got their results all the same


@pytest.mark.virtual_time
async def test_logging_says_retries_at_info_and_dead_letters_at_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="jobq"):
        async with Pipeline(executor="inline", retry=RetryPolicy(max_retries=1),
                            failures=FailurePlan(fail_first={1: 9})) as pipe:
            await pipe.submit(Job(1, b"", Delayed(1)))
    levels = [(r.levelname, r.name) for r in caplog.records]
    assert ("INFO", "jobq.worker") in levels and ("WARNING", "jobq.worker") in levels
    # jobq configures no output of its own: only the library convention, a NullHandler.
    assert all(type(h) is logging.NullHandler for h in logging.getLogger("jobq").handlers)


def test_typed_handles_need_no_casts() -> None:
    # mypy --strict on a user program that uses handles (run here so the claim is checked).
    import subprocess
    import sys
    program = Path(__file__).with_name("typed_user_program.py")
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", str(program)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_handle_is_exported() -> None:
    assert JobHandle.__name__ == "JobHandle"


@pytest.mark.virtual_time
async def test_a_handle_cancel_and_a_shutdown_in_the_same_step_are_both_ours() -> None:
    # Found by the drills: two cancellations of the worker's task in one step (the handle's
    # cut, then shutdown's) were taken for one of ours and one from outside.
    pipe = Pipeline(workers=1, executor="inline")
    await pipe.start()
    handle = await pipe.submit(Call(forever))
    await asyncio.sleep(1)
    handle.cancel()
    pipe.token.cancel()  # "stop now", before the worker has run again
    report = await pipe.shutdown()  # raised JobqError ("cancelled from outside") before
    assert (report.cancelled_interrupted, report.lost) == (1, 0)
