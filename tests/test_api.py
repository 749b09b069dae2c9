"""The public face of jobq: what it exports - exactly, and each name used by some test - and
the shape of what a user writes against: start(), the report, statistics, the test kit."""

from __future__ import annotations

import ast
import asyncio
import types
from pathlib import Path

import pytest

import jobq
import jobq.testing
from jobq import (
    AccountingError,
    Delayed,
    Job,
    JobqError,
    JobResult,
    Pipeline,
    PipelineClosedError,
    PipelineState,
    ReportNotReadyError,
    ResultStatus,
    RunResult,
    ShutdownReport,
    Trace,
)
from jobq.accounting import Ledger
from jobq.testing import assert_each_job_ended_once, delayed_jobs, peak_concurrency
from jobq.trace import EventKind as K

from .helpers import emit_two_workers

# -- what is exported -----------------------------------------------------------------------

# The two tests below name every export; a name counts as tested only if another test uses it.
_PINNING_TESTS = ("test_all_is_every_public_name_exactly", "test_every_export_is_used_by_a_test")


def test_all_is_every_public_name_exactly() -> None:
    # As httpx's test_exported_members: nothing public that is not in __all__ (exported by
    # accident), nothing in __all__ that is not there. Submodules are not exports.
    public = sorted(name for name, value in vars(jobq).items()
                    if not name.startswith("_") and not isinstance(value, types.ModuleType))
    assert jobq.__all__ == public  # sorted, too
    # And the core does not go missing by accident (a name removed from both places).
    assert {"Pipeline", "Job", "CancellationToken", "run", "run_virtual", "in_virtual_time",
            "RetryPolicy", "DeadLetterQueue", "Trace", "TraceHeader", "UnguardedMainError",
            "ReportNotReadyError", "RunResult", "PipelineState"} <= set(jobq.__all__)
    assert sorted(jobq.testing.__all__) == jobq.testing.__all__
    assert all(hasattr(jobq.testing, name) for name in jobq.testing.__all__)


class _NamesUsed(ast.NodeVisitor):
    """Every identifier a module's code uses - names, attributes, imports - but not strings or
    comments, and not the pinning tests' own."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name not in _PINNING_TESTS:
            self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        self.names.add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.names.add(node.attr)
        self.generic_visit(node)

    def visit_alias(self, node: ast.alias) -> None:
        self.names.add(node.name.rpartition(".")[2])


def test_every_export_is_used_by_a_test() -> None:
    # Nothing exported and never tested: each public name of jobq (and of its test kit) is
    # used by the code of at least one test module.
    visitor = _NamesUsed()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    for module in (jobq, jobq.testing):
        untested = [name for name in module.__all__ if name not in visitor.names]
        assert untested == [], f"{module.__name__} exports names no test uses: {untested}"


# -- starting, and the report -----------------------------------------------------------------


@pytest.mark.virtual_time
async def test_start_starts_the_stages_once_and_a_stopped_pipeline_stays_stopped() -> None:
    def stages() -> list[str]:
        return sorted(t.get_name() for t in asyncio.all_tasks()
                      if t.get_name().startswith("jobq-") and not t.done())

    pipe = Pipeline(workers=2, executor="inline")
    assert pipe.statistics().state is PipelineState.CREATED and stages() == []
    assert await pipe.start() is pipe
    assert pipe.statistics().state is PipelineState.RUNNING
    assert stages() == ["jobq-dispatcher", "jobq-worker-0", "jobq-worker-1"]
    await pipe.start()  # idempotent: no second set of stages
    assert stages() == ["jobq-dispatcher", "jobq-worker-0", "jobq-worker-1"]
    pipe.submit_nowait(Job(1, b"", Delayed(1.0)))
    assert (await pipe.shutdown()).succeeded == 1
    await pipe.start()  # a stopped pipeline does not start again
    assert pipe.statistics().state is PipelineState.STOPPED and stages() == []
    with pytest.raises(PipelineClosedError):
        pipe.submit_nowait(Job(2, b"", Delayed(1.0)))


@pytest.mark.virtual_time
async def test_the_report_is_read_after_shutdown_and_a_named_error_before() -> None:
    pipe = Pipeline(workers=1, executor="inline")
    with pytest.raises(ReportNotReadyError, match="pipeline is created"):
        _ = pipe.report
    async with pipe:
        await pipe.submit(Job(1, b"", Delayed(1.0)))
        with pytest.raises(ReportNotReadyError, match=r"running.*await pipe\.shutdown\(\)"):
            _ = pipe.report
        stopping = asyncio.create_task(pipe.shutdown())
        await asyncio.sleep(0.5)
        with pytest.raises(ReportNotReadyError, match="draining"):
            _ = pipe.report
        assert (await stopping).succeeded == 1
    report: ShutdownReport = pipe.report  # a ShutdownReport, never None: no assert needed
    assert report is await pipe.shutdown()  # the same report, every time
    assert (report.submitted, report.succeeded, report.lost) == (1, 1, 0)
    assert issubclass(ReportNotReadyError, JobqError)
    # One name per count: a job is dead-lettered; "failed" is what an attempt does.
    assert not hasattr(report, "failed")


@pytest.mark.virtual_time
async def test_a_run_result_is_built_from_a_stopped_pipeline() -> None:
    async with Pipeline(workers=2, executor="inline") as pipe:
        await pipe.submit_many(delayed_jobs([1.0, 2.0]))
    result = RunResult.from_pipeline(pipe)
    assert result.report is pipe.report and result.trace is pipe.trace
    assert result.dead_letters is pipe.dead_letters and result.workers == 2
    assert result.metrics == pipe.metrics()
    assert all(isinstance(r, JobResult) for r in result.results) and len(result.results) == 2
    assert repr(result) == "<RunResult submitted=2 succeeded=2 dead_lettered=0 cancelled=0 lost=0>"
    with pytest.raises(ReportNotReadyError):
        RunResult.from_pipeline(Pipeline(executor="inline"))


def test_the_ledger_refuses_a_job_that_ends_twice() -> None:
    # AccountingError is the bug alarm behind "every job ends exactly once".
    ledger = Ledger()
    ledger.accept(1, 0.0)
    ledger.close(1, ResultStatus.SUCCEEDED, None)
    with pytest.raises(AccountingError, match="job 1 reported succeeded"):
        ledger.close(1, ResultStatus.SUCCEEDED, None)
    assert (ledger.accepted, ledger.ended, ledger.lost) == (1, 1, 0)


# -- the test kit (jobq.testing) --------------------------------------------------------------


def test_delayed_jobs_are_numbered_from_start_id() -> None:
    jobs = delayed_jobs([0.5, 2.0], start_id=10)
    assert [(j.id, j.job_type, j.payload) for j in jobs] == [
        (10, Delayed(0.5), b"payload"), (11, Delayed(2.0), b"payload")]
    assert delayed_jobs([1.0], payload=b"x")[0].payload == b"x"


def test_peak_concurrency_replays_the_trace_in_order() -> None:
    trace = Trace()
    emit_two_workers(trace)
    assert peak_concurrency(trace) == 2
    # A slot freed and taken again at the same instant is one at a time, not two.
    one_slot = Trace()
    for job in (1, 2):
        one_slot.emit(0.0, K.ENQUEUED, job, info="delay", value=job)
    one_slot.emit(0.0, K.STARTED, 1, worker=0, attempt=1)
    one_slot.emit(1.0, K.SUCCEEDED, 1, worker=0, attempt=1)
    one_slot.emit(1.0, K.STARTED, 2, worker=0, attempt=1)
    one_slot.emit(2.0, K.ATTEMPT_FAILED, 2, worker=0, attempt=1, info="boom")
    one_slot.emit(2.0, K.DEAD_LETTERED, 2, worker=0, attempt=1, info="boom")
    assert peak_concurrency(one_slot) == 1
    assert peak_concurrency(Trace()) == 0


def test_assert_each_job_ended_once_names_the_jobs_that_did_not() -> None:
    trace = Trace()
    for job in (1, 2, 3, 4):
        trace.emit(0.0, K.ENQUEUED, job, info="delay", value=job)
    trace.emit(1.0, K.SUCCEEDED, 1, worker=0, attempt=1)
    trace.emit(1.0, K.SUCCEEDED, 2, worker=1, attempt=1)
    trace.emit(2.0, K.CANCELLED, 2, info="interrupted")  # job 2 ends a second time
    trace.emit(2.0, K.SUCCEEDED, 9, worker=0, attempt=1)  # job 9 was never accepted
    with pytest.raises(AssertionError) as failed:
        assert_each_job_ended_once(trace)  # jobs 3 and 4 never end
    assert str(failed.value) == (
        "each accepted job must end exactly once; never ended: 3, 4; ended twice: 2; "
        "ended without being accepted: 9")

    complete = Trace()
    emit_two_workers(complete)
    assert_each_job_ended_once(complete)
    assert_each_job_ended_once(complete, accepted=[1, 2, 3, 4])
    with pytest.raises(AssertionError, match=r"expected but never accepted: 5$"):
        assert_each_job_ended_once(complete, accepted=[1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="keeps none"):
        assert_each_job_ended_once(Trace(keep=False))


@pytest.mark.virtual_time
async def test_assert_each_job_ended_once_checks_a_pipeline_and_its_report() -> None:
    pipe = Pipeline(workers=2, capacity=3, executor="inline")
    async with pipe:
        await pipe.submit_many(delayed_jobs([1.0] * 6))
        with pytest.raises(ReportNotReadyError):  # while it runs there is nothing to check
            assert_each_job_ended_once(pipe)
        await pipe.shutdown(drain_timeout=1.5)  # two succeed, the others are cancelled
    assert_each_job_ended_once(pipe, accepted=range(6))
    assert_each_job_ended_once(RunResult.from_pipeline(pipe))
    assert peak_concurrency(pipe.trace) == 2
