"""jobq - an asyncio job queue with backpressure, a concurrency limit, retries, metrics and
graceful shutdown, built step by step in the notebooks next to it.

A map of the package, one line per module, in pipeline order:

    jobs.py        Job, CpuBound / AsyncIo / Delayed, Call / Blocking (your own functions),
                   JobResult, ResultStatus - the data
    handles.py     JobHandle (what submit returns), ResultStream (as_completed)
    queue.py       JobQueue: the bounded queue where producers wait (backpressure)
    dispatcher.py  Dispatcher: at most N jobs at once; the cancel-safe receive
    worker.py      Worker: one job in stages, retries, cancellation between stages
    offload.py     CpuOffload: CPU work in processes / threads / inline (spawn_blocking)
    work.py        cpu_work: the pure-Python work function, importable by child processes
    http.py        HttpClient: the real HTTP request of AsyncIo jobs (aiohttp)
    collector.py   Collector: receives results, keeps the books, reports progress
    accounting.py  Ledger, IdSet: every accepted job ends exactly once
    cancel.py      CancellationToken: root -> dispatcher -> workers
    pipeline.py    Pipeline, run(): the stages wired together; shutdown in phases
    retry.py       RetryPolicy, FailurePlan, DeadLetterQueue
    trace.py       Trace, Event, TraceHeader: one record of everything that happened (a
                   compact JobRecord / JobRows per job; the Events rebuilt when read)
    metrics.py     Metrics: throughput, latency percentiles, queue depth, utilisation
    clock.py       the virtual clock: run_virtual, in_virtual_time, advance
    plotting.py    every plot (the only module that imports matplotlib)
    progress.py    the progress bar (tqdm)
    testing.py     LocalServer: a real HTTP server on 127.0.0.1 for tests and demos; the
                   test kit (delayed_jobs, assert_each_job_ended_once, peak_concurrency)
    redis_*.py     more than one machine: RedisPipeline, RedisWorker (+ broker.py, wire.py)
    cli.py         `python -m jobq run ...` (a seeded mix, or `module:function` of yours)
    errors.py      every error jobq raises, as one tree
    validation.py  the checks of every setting (one per kind: count, seconds, flag, ...)

What is simplified for teaching: one process runs the queue (no persistence, no
distribution); a job's payload is opaque bytes; CpuBound work is a stand-in loop.
"""

import logging as _logging

from jobq.broker import BrokerAuthError, BrokerError, BrokerUnavailableError
from jobq.cancel import CancellationToken, TokenCancelled
from jobq.clock import (
    VirtualClock,
    VirtualTimeLoop,
    current_clock,
    in_virtual_time,
    is_virtual,
    real_work,
    run_virtual,
)
from jobq.errors import (
    AccountingError,
    DuplicateJobError,
    HttpConnectError,
    HttpError,
    HttpStatusError,
    HttpTimeoutError,
    InjectedFailure,
    InvalidConfigError,
    InvalidJobError,
    InvisibleCpuWarning,
    JobCancelledError,
    JobDeadLetteredError,
    JobFailedError,
    JobqError,
    JobTimeoutError,
    NotImportableError,
    PipelineClosedError,
    QueueFullError,
    ReportNotReadyError,
    ResponseTooLargeError,
    ResultNotReadyError,
    UnguardedMainError,
    VirtualDeadlineExceeded,
    WorkerCrashedError,
)
from jobq.handles import JobHandle, ResultStream
from jobq.http import FetchResult, HttpClient, HttpLimits
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
from jobq.metrics import Metrics, metrics_from_trace
from jobq.pipeline import (
    Pipeline,
    PipelineState,
    PipelineStatistics,
    RunResult,
    ShutdownReport,
    run,
)
from jobq.redis_producer import (
    MergedTrace,
    RedisPipeline,
    RedisShutdownReport,
    merged_trace,
    read_dead_letters,
)
from jobq.redis_worker import RedisWorker, WorkerReport
from jobq.retry import Attempt, DeadLetter, DeadLetterQueue, FailurePlan, RetryPolicy
from jobq.trace import Event, EventKind, Trace, TraceHeader
from jobq.wire import EntryTooLargeError, WireError
from jobq.work import cpu_work

__version__ = "0.1.0"

# jobq logs under "jobq" (retries at INFO; dead letters, pool rebuilds, failing observers at
# WARNING or above) and leaves the output to the application: the library convention is a
# NullHandler, so that nothing is printed unless the application configures logging (without
# it, Python would print WARNING records to stderr by itself).
_logging.getLogger("jobq").addHandler(_logging.NullHandler())

__all__ = [
    "AccountingError",
    "AsyncIo",
    "Attempt",
    "Blocking",
    "BrokerAuthError",
    "BrokerError",
    "BrokerUnavailableError",
    "Call",
    "CancelReason",
    "CancellationToken",
    "CpuBound",
    "DeadLetter",
    "DeadLetterQueue",
    "Delayed",
    "DuplicateJobError",
    "EntryTooLargeError",
    "Event",
    "EventKind",
    "FailurePlan",
    "FetchResult",
    "HttpClient",
    "HttpConnectError",
    "HttpError",
    "HttpLimits",
    "HttpStatusError",
    "HttpTimeoutError",
    "InjectedFailure",
    "InvalidConfigError",
    "InvalidJobError",
    "InvisibleCpuWarning",
    "Job",
    "JobCancelledError",
    "JobDeadLetteredError",
    "JobFailedError",
    "JobHandle",
    "JobResult",
    "JobTimeoutError",
    "JobqError",
    "MergedTrace",
    "Metrics",
    "NotImportableError",
    "Pipeline",
    "PipelineClosedError",
    "PipelineState",
    "PipelineStatistics",
    "QueueFullError",
    "RedisPipeline",
    "RedisShutdownReport",
    "RedisWorker",
    "ReportNotReadyError",
    "ResponseTooLargeError",
    "ResultNotReadyError",
    "ResultStatus",
    "ResultStream",
    "RetryPolicy",
    "RunResult",
    "ShutdownReport",
    "TokenCancelled",
    "Trace",
    "TraceHeader",
    "UnguardedMainError",
    "VirtualClock",
    "VirtualDeadlineExceeded",
    "VirtualTimeLoop",
    "WireError",
    "WorkerCrashedError",
    "WorkerReport",
    "cpu_work",
    "current_clock",
    "in_virtual_time",
    "is_virtual",
    "merged_trace",
    "metrics_from_trace",
    "read_dead_letters",
    "real_work",
    "run",
    "run_virtual",]
