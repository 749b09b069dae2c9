"""One record per job (jobq.trace.JobRecord / JobRows): the events, metrics and results that a
pipeline keeps as rows must be exactly what building every Event as it happened gives.

The reference is a trace with a listener: a listener must see each event at once, so such a
trace builds every Event the old way. The same run without a listener keeps rows and rebuilds
its events when asked - the two must agree to the last field, in the same order, for a run
that has every kind of life: simple jobs, retries, dead letters, producers that wait, and
jobs cut by a drain deadline while queued, running and waiting out a backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

import jobq
from jobq import Event, FailurePlan, Job, Pipeline, RetryPolicy, Trace
from jobq.metrics import metrics_from_trace
from jobq.testing import assert_each_job_ended_once
from jobq.trace import EventKind


def _fields(events: list[Event]) -> list[tuple[Any, ...]]:
    return [dataclasses.astuple(e) for e in events]


async def _mixed_run(trace: Trace | bool = True, *, listen: bool = False,
                     ids: range = range(60), keep_results: bool = True) -> Pipeline:
    """Every kind of life in one run (see the module docstring), on the virtual clock."""
    seen: list[Event] = []
    pipe = Pipeline(workers=3, capacity=4, executor="inline", trace=trace,
                    keep_results=keep_results,
                    failures=FailurePlan(fail_first={ids[2]: 1, ids[7]: 9, ids[-4]: 9}),
                    retry=RetryPolicy(max_retries=3, base_delay=0.5))
    if listen:
        pipe.trace.subscribe(seen.append)
    async with pipe:
        for n, job_id in enumerate(ids):
            await pipe.submit(Job(job_id, b"x" * n, jobq.Delayed(0.25 * (n % 5))))
        # The drain deadline passes while jobs are queued and running (and the job that
        # fails at ids[-4] may be waiting out a backoff).
        await pipe.shutdown(drain_timeout=0.3)
    report = pipe.report
    assert report.lost == 0 and report.cancelled_never_started > 0
    assert report.cancelled_interrupted > 0 and report.dead_lettered > 0
    if listen:
        assert _fields(seen) == _fields(pipe.trace.events)  # the listener saw them all
    return pipe


def _mixed(trace: Trace | bool = True, **options: Any) -> Pipeline:
    """_mixed_run on a virtual clock of its own (each run starts at t=0)."""
    return jobq.run_virtual(_mixed_run(trace, **options))


def test_events_rebuilt_from_rows_are_the_events_built_as_they_happened() -> None:
    eager = _mixed(listen=True)
    rows = _mixed()
    assert len(rows.trace.rows) > 0 and not rows.trace.open  # every job ended as a row
    assert _fields(rows.trace.events) == _fields(eager.trace.events)
    kinds = {e.kind for e in rows.trace.events}
    assert {EventKind.PRODUCER_BLOCKED, EventKind.RETRY_SCHEDULED, EventKind.DEAD_LETTERED,
            EventKind.CANCELLED, EventKind.PHASE} <= kinds


def test_metrics_folded_from_rows_equal_metrics_fed_every_event() -> None:
    pipe = _mixed()
    # Exactly equal, not approximately: the row fold makes the same float sums, in the same
    # order, as feeding the events one by one.
    assert pipe.metrics() == metrics_from_trace(pipe.trace.events, workers=3)
    eager = _mixed(listen=True)
    assert pipe.metrics() == eager.metrics()


def test_bounded_metrics_folded_in_batches_equal_the_kept_run() -> None:
    kept = _mixed(ids=range(9000))
    bounded = _mixed(False, keep_results=False, ids=range(9000))
    assert bounded.trace.events == [] and len(bounded.trace.rows) < 4096  # folded, dropped
    assert bounded.metrics() == kept.metrics()


@pytest.mark.virtual_time
async def test_results_rebuilt_from_rows_are_the_results_delivered() -> None:
    delivered: list[jobq.JobResult] = []
    pipe = Pipeline(workers=3, capacity=4, executor="inline",
                    failures=FailurePlan(fail_first={5: 1, 9: 9}),
                    retry=RetryPolicy(max_retries=2, base_delay=0.5))
    async with pipe:
        stream = pipe.as_completed()  # streams get JobResult objects built at delivery

        async def read() -> None:
            async for result in stream:
                delivered.append(result)

        reader = asyncio.create_task(read())
        for n in range(30):
            await pipe.submit(Job(n, b"y" * n, jobq.Delayed(0.1 * (n % 4))))
    await reader
    rebuilt = pipe.results
    assert rebuilt == delivered  # every field but the value (JobResult compares without it)
    assert [r.value for r in rebuilt] == [r.value for r in delivered]
    assert {r.status for r in rebuilt} == {jobq.ResultStatus.SUCCEEDED,
                                           jobq.ResultStatus.DEAD_LETTERED}


@pytest.mark.virtual_time
async def test_ids_too_big_for_a_row_keep_their_events() -> None:
    # A row packs ids in 64 bits; bigger ids (uuid-like ints) and negative ones still work.
    ids = [2**70 + n for n in range(10)] + [-(2**63) - n for n in range(5)] + [7]
    result = await jobq.run([Job(i, b"", jobq.Delayed(0.5)) for i in ids], workers=2)
    assert result.report.succeeded == len(ids)
    assert sorted(r.job_id for r in result.results) == sorted(ids)
    ended = [e.job for e in result.trace.events if e.kind is EventKind.SUCCEEDED]
    assert sorted(ended) == sorted(ids)  # type: ignore[type-var]
    assert_each_job_ended_once(result)


@pytest.mark.virtual_time
async def test_a_listener_subscribed_mid_run_sees_every_later_event() -> None:
    seen: list[Event] = []
    async with Pipeline(workers=2, capacity=3, executor="inline") as pipe:
        for n in range(6):
            await pipe.submit(Job(n, b"", jobq.Delayed(1.0)))
        await asyncio.sleep(1.5)  # some ended, some running, some queued
        first = pipe.trace._seq
        pipe.trace.subscribe(seen.append)
        for n in range(6, 9):
            await pipe.submit(Job(n, b"", jobq.Delayed(1.0)))
    later = [e for e in pipe.trace.events if e.seq >= first]
    assert _fields(seen) == _fields(later) and len(seen) > 10


@pytest.mark.virtual_time
async def test_one_trace_records_one_running_pipeline_at_a_time() -> None:
    # Open jobs' records are found by job id: two running pipelines writing one trace would
    # share job 0's record, and a job could lose its ending. The second one is refused.
    shared = Trace()
    async with Pipeline(workers=1, executor="inline", trace=shared) as first:
        await first.submit(Job(0, b"", jobq.Delayed(1.0)))
        second = Pipeline(workers=1, executor="inline", trace=shared)
        with pytest.raises(jobq.InvalidConfigError, match="another pipeline"):
            await second.submit(Job(0, b"", jobq.Delayed(1.0)))
        await second.shutdown()
    # One after the other may share it: the first has stopped.
    async with Pipeline(workers=1, executor="inline", trace=shared) as third:
        await third.submit(Job(0, b"", jobq.Delayed(1.0)))
    assert first.report.succeeded == third.report.succeeded == 1
    assert second.report.submitted == 0
    assert [e.job for e in shared.events if e.kind is EventKind.SUCCEEDED] == [0, 0]


@pytest.mark.virtual_time
async def test_replacing_the_events_keeps_a_pipelines_results_and_waits_for_it_to_stop() -> None:
    pipe = Pipeline(workers=2, executor="inline")
    async with pipe:
        await pipe.submit(Job(0, b"abc", jobq.Delayed(1.0)))
        with pytest.raises(jobq.InvalidConfigError, match="while a pipeline records"):
            pipe.trace.events = []
    shifted = [dataclasses.replace(e, t=e.t + 1.0) for e in pipe.trace.events]
    pipe.trace.events = shifted  # stopped: allowed (plots of an edited trace do this)
    assert _fields(pipe.trace.events) == _fields(shifted)
    # The results (read here for the first time) still come from the run's own rows.
    assert [(r.job_id, r.value, r.finished_at - r.started_at) for r in pipe.results] == [
        (0, 3, 1.0)]
