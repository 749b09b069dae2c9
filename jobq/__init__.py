"""jobq - an asyncio job queue with backpressure, a concurrency limit, retries, metrics and
graceful shutdown, built step by step in the notebooks next to it.

A map of the package, one line per module, in pipeline order:

    jobs.py        Job, CpuBound / AsyncIo / Delayed, JobResult, ResultStatus - the data
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
    trace.py       Trace, Event: one record of everything that happened
    metrics.py     Metrics: throughput, latency percentiles, queue depth, utilisation
    clock.py       the virtual clock: run_virtual, in_virtual_time, advance
    plotting.py    every plot (the only module that imports matplotlib)
    progress.py    the progress bar (tqdm)
    testing.py     LocalServer: a real HTTP server on 127.0.0.1 for tests and demos
    cli.py         `python -m jobq run ...`

What is simplified for teaching: one process runs the queue (no persistence, no
distribution); a job's payload is opaque bytes; CpuBound work is a stand-in loop.
"""

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
    JobFailedError,
    JobqError,
    NotImportableError,
    PipelineClosedError,
    QueueFullError,
    ResponseTooLargeError,
    UnguardedMainError,
    VirtualDeadlineExceeded,
    WorkerCrashedError,
)
from jobq.http import HttpClient, HttpLimits
from jobq.jobs import AsyncIo, CancelReason, CpuBound, Delayed, Job, JobResult, ResultStatus
from jobq.metrics import Metrics, metrics_from_trace
from jobq.pipeline import (
    Pipeline,
    PipelineState,
    PipelineStatistics,
    RunResult,
    ShutdownReport,
    run,
)
from jobq.retry import Attempt, DeadLetter, DeadLetterQueue, FailurePlan, RetryPolicy
from jobq.trace import Event, EventKind, Trace
from jobq.work import cpu_work

__version__ = "0.1.0"

__all__ = [
    "AccountingError",
    "AsyncIo",
    "Attempt",
    "CancelReason",
    "CancellationToken",
    "CpuBound",
    "DeadLetter",
    "DeadLetterQueue",
    "Delayed",
    "DuplicateJobError",
    "Event",
    "EventKind",
    "FailurePlan",
    "HttpClient",
    "HttpConnectError",
    "HttpError",
    "HttpLimits",
    "HttpStatusError",
    "HttpTimeoutError",
    "InjectedFailure",
    "InvalidConfigError",
    "InvalidJobError",
    "Job",
    "JobFailedError",
    "JobResult",
    "JobqError",
    "Metrics",
    "NotImportableError",
    "Pipeline",
    "PipelineClosedError",
    "PipelineState",
    "PipelineStatistics",
    "QueueFullError",
    "ResponseTooLargeError",
    "ResultStatus",
    "RetryPolicy",
    "RunResult",
    "ShutdownReport",
    "TokenCancelled",
    "Trace",
    "UnguardedMainError",
    "VirtualClock",
    "VirtualDeadlineExceeded",
    "VirtualTimeLoop",
    "WorkerCrashedError",
    "cpu_work",
    "current_clock",
    "in_virtual_time",
    "is_virtual",
    "metrics_from_trace",
    "real_work",
    "run",
    "run_virtual",
]
