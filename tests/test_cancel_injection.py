"""Cancellation injected at every scheduling step: nothing lost, nothing twice.

How steps are counted: every task step, future callback and `call_soon` of the loop goes
through `loop.call_soon` (timers that fire are moved to the ready queue and wake their
futures, whose callbacks go through it too). We wrap the running loop's `call_soon` and, right
after the k-th call, schedule the injected cancellation - so for k = 1, 2, 3, ... the
cancellation lands between every pair of consecutive steps of the run, on virtual time.

What is cancelled, and what jobq must do (the decision these tests pin down):

* the **root token** (`pipe.token.cancel()`): "stop now" - a shutdown with no drain time.
  Every accepted job ends exactly once: succeeded before the cut, or CANCELLED with the stage
  it was in. `shutdown()` returns the report normally.
* a **stage task killed from outside** (`task.cancel()` on the dispatcher's or a worker's task
  - a bug-like event: nothing in jobq does that): the pipeline notices at once and shuts down
  as if the root had been cancelled (so nothing waits forever on a stage that is gone). The
  job a killed worker was running is reported CANCELLED(interrupted) by that worker before its
  task ends; a job the dispatcher took for a worker that had just died goes back to the head
  of the queue. So the report still accounts for every accepted job (`lost == 0`) - and then
  `shutdown()` (and leaving `async with`) raises `JobqError` naming the stage, because a stage
  that died is a bug that must not be hidden behind a clean-looking report.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import jobq
from jobq import (
    CpuBound,
    Delayed,
    FailurePlan,
    Job,
    JobqError,
    Pipeline,
    PipelineClosedError,
    ResultStatus,
    RetryPolicy,
)
from jobq.cancel import CancellationToken, TokenCancelled
from jobq.queue import JobQueue
from jobq.testing import assert_each_job_ended_once, peak_concurrency
from jobq.trace import EventKind


def inject_after_step(k: int, action: Callable[[], None]) -> Callable[[], int]:
    """Run `action` as its own callback right after the k-th `call_soon` of the running loop.

    Returns a function that tells how many steps were counted so far (to know when k has
    passed the end of the run)."""
    loop = asyncio.get_running_loop()
    original = loop.call_soon
    count = 0

    def call_soon(callback: Callable[..., object], *args: Any,
                  context: Any = None) -> asyncio.Handle:
        nonlocal count
        count += 1
        handle = original(callback, *args, context=context)
        if count == k:
            original(action)
        return handle

    loop.call_soon = call_soon  # type: ignore[method-assign]
    return lambda: count


def _jobs() -> list[Job]:
    """A small mix: delays, modelled CPU work, one job that fails and retries."""
    rng = random.Random(5)
    jobs: list[Job] = []
    for i in range(9):
        if i % 3 == 2:
            jobs.append(Job(i, b"cpu", CpuBound(rng.randrange(0, 400))))
        else:
            jobs.append(Job(i, b"d", Delayed(rng.choice([0.0, 0.25, 0.5, 1.0]))))
    return jobs


def _stage_task(name: str) -> asyncio.Task[Any]:
    return next(t for t in asyncio.all_tasks() if t.get_name() == name)


async def _scenario(k: int, target: str) -> tuple[int, bool]:
    """Run the small pipeline, cancel `target` after step k. Returns (steps counted, hit)."""
    pipe = Pipeline(workers=2, capacity=3, executor="inline", cpu_cost=0.002,
                    failures=FailurePlan(fail_first={1: 1, 4: 5}),
                    retry=RetryPolicy(max_retries=2, base_delay=0.2))
    hit = False

    def inject() -> None:
        nonlocal hit
        if pipe.state is jobq.PipelineState.STOPPED or pipe.token.cancelled:
            return  # already stopping now, or over: nothing left to inject into
        if target == "root":
            pipe.token.cancel()
            hit = True
        else:
            task = _stage_task(target)
            if not task.done():  # the dispatcher ends on its own once drained
                task.cancel()
                hit = True

    steps = inject_after_step(k, inject)
    accepted: list[int] = []
    refused: list[int] = []
    raised: BaseException | None = None

    async def producer(jobs: list[Job]) -> None:
        for job in jobs:
            try:
                await pipe.submit(job)
            except PipelineClosedError:
                refused.append(job.id)
            else:
                accepted.append(job.id)

    jobs = _jobs()
    try:
        async with pipe:
            await asyncio.gather(producer(jobs[0::2]), producer(jobs[1::2]))
    except JobqError as exc:
        raised = exc
    report = pipe.report
    # Exact accounting, whatever was cancelled and whenever.
    assert report.lost == 0
    assert sorted(accepted + refused) == [j.id for j in jobs]
    assert_each_job_ended_once(pipe, accepted=accepted)
    assert sorted(r.job_id for r in pipe.results) == sorted(accepted)
    assert report.submitted == len(accepted) == report.ended
    assert peak_concurrency(pipe.trace) <= 2
    stats = pipe.statistics()
    assert (stats.open, stats.queued, stats.state) == (0, 0, jobq.PipelineState.STOPPED)
    if target == "root" or not hit:
        assert raised is None, f"k={k}: {raised!r}"
    else:
        assert raised is not None and target in str(raised), f"k={k}: {raised!r}"
    return steps(), hit


@pytest.mark.parametrize("target", ["root", "jobq-dispatcher", "jobq-worker-0", "jobq-worker-1"])
def test_cancel_at_every_step_loses_nothing(target: str) -> None:
    k = 1
    hits = 0
    while True:
        steps, hit = jobq.run_virtual(_scenario(k, target), deadline=600)
        hits += hit
        if k > steps:
            break
        k += 1
    # The run has a good number of steps to cut into (50 on Python 3.13, more on 3.11).
    assert k > 40
    assert hits >= k // 2  # most injection points landed while the pipeline worked


def test_a_stage_killed_from_outside_is_reported_not_hidden() -> None:
    """A worker task cancelled mid-job: its job ends CANCELLED(interrupted), the others are
    accounted for, and leaving the block raises JobqError naming the stage."""

    async def main() -> None:
        pipe = Pipeline(workers=2, capacity=10, executor="inline")
        with pytest.raises(JobqError, match="jobq-worker-0"):
            async with pipe:
                for i in range(6):
                    await pipe.submit(Job(i, b"", Delayed(1.0)))
                await asyncio.sleep(0.5)
                _stage_task("jobq-worker-0").cancel()
                await asyncio.sleep(0)
        report = pipe.report
        assert report.lost == 0 and report.submitted == 6
        assert report.cancelled_interrupted == 2  # the killed worker's job, and the other's
        assert report.cancelled_never_started == 4
        assert pipe.token.cancelled

    jobq.run_virtual(main(), deadline=60)


def test_a_killed_dispatcher_does_not_leave_shutdown_waiting_forever() -> None:
    async def main() -> None:
        pipe = Pipeline(workers=1, capacity=10, executor="inline")
        with pytest.raises(JobqError, match="jobq-dispatcher"):
            async with pipe:
                for i in range(4):
                    await pipe.submit(Job(i, b"", Delayed(1.0)))
                await asyncio.sleep(0.5)
                _stage_task("jobq-dispatcher").cancel()
        report = pipe.report
        assert report.lost == 0
        assert (report.cancelled_interrupted, report.cancelled_never_started) == (1, 3)

    jobq.run_virtual(main(), deadline=60)  # before the fix: VirtualDeadlineExceeded


def test_an_idle_worker_killed_just_before_a_hand_over_loses_no_job() -> None:
    """The worker dies in the same step the dispatcher is given a job for its slot."""

    async def main() -> None:
        pipe = Pipeline(workers=1, capacity=10, executor="inline")
        with pytest.raises(JobqError, match="jobq-worker-0"):
            async with pipe:
                await asyncio.sleep(0)  # worker idle, dispatcher waiting for a job
                _stage_task("jobq-worker-0").cancel()
                pipe.submit_nowait(Job(1, b"", Delayed(1.0)))
                await asyncio.sleep(0)
        report = pipe.report
        assert report.lost == 0
        assert report.cancelled_never_started == 1

    jobq.run_virtual(main(), deadline=60)


# -- CancellationToken.race on its own -----------------------------------------------------


def test_race_gives_the_step_or_raises_token_cancelled_and_leaves_other_cancels_alone() -> None:
    # race() is the one place that decides whether a cancellation was the token's (then
    # TokenCancelled) or somebody else's (then it propagates as CancelledError).
    async def main() -> None:
        loop = asyncio.get_running_loop()
        token = CancellationToken("worker-3")
        assert await token.race(asyncio.sleep(1, result="done")) == "done"
        loop.call_later(1.5, token.cancel)
        with pytest.raises(TokenCancelled, match="worker-3"):
            await token.race(asyncio.sleep(10))
        assert loop.time() == 2.5  # cut when the token was cancelled, not after 10 s
        # Cancelled already: the step never starts (and is closed: no "never awaited").
        with pytest.raises(TokenCancelled):
            await token.race(asyncio.sleep(10))
        # The caller's own task cancelled: that is not the token's, and is not turned into
        # TokenCancelled - even when the token is cancelled in the same step.
        other = CancellationToken()
        racer = asyncio.create_task(other.race(asyncio.sleep(10)))
        await asyncio.sleep(1)
        racer.cancel()
        other.cancel()
        with pytest.raises(asyncio.CancelledError):
            await racer

    jobq.run_virtual(main())


# -- JobQueue.get(token) on its own --------------------------------------------------------


async def _getters_cancelled_at_every_step(k: int, getters: int) -> tuple[int, bool]:
    queue = JobQueue(capacity=2)
    token = CancellationToken()
    got: list[int] = []
    tasks: list[asyncio.Task[None]] = []

    async def getter() -> None:
        while (job := await queue.get(token)) is not None:
            got.append(job.id)
            await asyncio.sleep(0)

    def cancel_one() -> None:
        alive = [t for t in tasks if not t.done()]
        if alive:
            alive[0].cancel()
            tasks.append(asyncio.get_running_loop().create_task(getter()))  # a replacement

    steps = inject_after_step(k, cancel_one)
    tasks.extend(asyncio.get_running_loop().create_task(getter()) for _ in range(getters))
    total = 12
    for i in range(total):
        await queue.put(Job(i, b"", Delayed(0)))
        if i % 3 == 0:
            await asyncio.sleep(0)
    # Every put item must come out: the getters (and their replacements) are still there.
    for _ in range(500):  # (virtual) time enough for every getter to run many times
        if len(got) == total:
            break
        await asyncio.sleep(0.01)
    token.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(got) == list(range(total)), f"k={k}: {sorted(got)}"
    assert len(queue) == 0
    return steps(), bool(tasks)


@pytest.mark.parametrize("getters", [1, 2, 3])
def test_queue_get_is_cancel_safe_at_every_step(getters: int) -> None:
    """Cancel a getter at every step while items are put: count in == count out, and no
    getter sleeps while an item waits (a woken-then-cancelled getter passes the wake-up on)."""
    k = 1
    while True:
        steps, _ = jobq.run_virtual(_getters_cancelled_at_every_step(k, getters), deadline=60)
        if k > steps:
            break
        k += 1
    assert k > 20


def test_queue_getter_woken_and_cancelled_in_the_same_step_passes_the_wake_up_on() -> None:
    async def main() -> None:
        queue = JobQueue(capacity=5)
        token = CancellationToken()
        first = asyncio.create_task(queue.get(token))
        second = asyncio.create_task(queue.get(token))
        await asyncio.sleep(0)  # both wait
        queue.put_nowait(Job(1, b"", Delayed(0)))  # wakes `first` ...
        first.cancel()  # ... which is cancelled before it runs
        async with asyncio.timeout(1):  # before the fix: `second` slept with an item waiting
            job = await second
        assert job is not None and job.id == 1
        with pytest.raises(asyncio.CancelledError):
            await first

    jobq.run_virtual(main())


def test_results_match_the_report_after_a_root_cancel_mid_retry() -> None:
    async def main() -> None:
        pipe = Pipeline(workers=2, executor="inline", failures=FailurePlan(fail_first={0: 9}),
                        retry=RetryPolicy(max_retries=3, base_delay=1.0))
        async with pipe:
            await pipe.submit(Job(0, b"", Delayed(0.5)))
            await pipe.submit(Job(1, b"", Delayed(5.0)))
            await asyncio.sleep(1.0)  # job 0 waits out its first backoff
            pipe.token.cancel()
        by = Counter(r.cancel_reason for r in pipe.results if r.status is ResultStatus.CANCELLED)
        assert by[jobq.CancelReason.AWAITING_RETRY] == pipe.report.cancelled_awaiting_retry == 1
        assert by[jobq.CancelReason.INTERRUPTED] == pipe.report.cancelled_interrupted == 1
        assert [e.kind for e in pipe.trace.for_job(0)][-1] is EventKind.CANCELLED

    jobq.run_virtual(main())


def test_root_cancel_in_the_step_a_job_is_handed_over_loses_nothing() -> None:
    """Regression: the dispatcher hands a job to an idle worker and, before the worker's task
    runs, the root is cancelled. The worker used to take the cancellation for "idle" and
    return - the job was in nobody's hands (lost), and shutdown waited for it forever."""

    async def main() -> None:
        pipe = Pipeline(workers=1, capacity=5, executor="inline")
        async with pipe:
            await asyncio.sleep(0)  # the worker and the dispatcher wait
            pipe.submit_nowait(Job(1, b"", Delayed(1.0)))
            await asyncio.sleep(0)  # the dispatcher hands job 1 over; the worker has not run
            assert pipe.statistics().running == 1 and pipe.trace.of_kind(EventKind.DISPATCHED)
            assert not pipe.trace.of_kind(EventKind.STARTED)
            pipe.token.cancel()
        report = pipe.report
        assert report.lost == 0
        assert report.cancelled_never_started == 1
        assert [e.kind for e in pipe.trace.for_job(1)][-1] is EventKind.CANCELLED

    jobq.run_virtual(main(), deadline=60)  # before the fix: VirtualDeadlineExceeded
