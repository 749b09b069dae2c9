"""Every error jobq raises, in one place.

    JobqError
    ├── InvalidJobError          bad input, refused before it is accepted (names the field)
    │   └── DuplicateJobError    an id this pipeline has already accepted
    ├── InvalidConfigError       bad pipeline / retry / HTTP settings (names the field)
    ├── PipelineClosedError      submit after shutdown began
    ├── QueueFullError           submit_nowait on a full queue (the waiting twin is submit)
    ├── JobFailedError           one attempt of a job failed; retryable
    │   ├── JobTimeoutError      the attempt ran longer than the job's timeout
    │   ├── InjectedFailure      the failure plan asked for this failure (demos and tests)
    │   ├── WorkerCrashedError   the process running a CpuBound job died
    │   └── HttpError            an AsyncIo request failed
    │       ├── HttpStatusError      the server answered 4xx/5xx
    │       ├── HttpTimeoutError     connect or read took longer than allowed
    │       ├── HttpConnectError     nobody answered at that address
    │       └── ResponseTooLargeError the body exceeded the size cap
    ├── JobDeadLetteredError     awaiting a handle: the job failed every attempt (has the letter)
    ├── JobCancelledError        awaiting a handle: the job was cancelled (has the reason)
    ├── ResultNotReadyError      handle.result() before the job ended
    ├── ReportNotReadyError      pipe.report before shutdown has finished
    ├── NotImportableError       a work function the process pool cannot import in a child
    ├── UnguardedMainError       a process pool started by a script's unguarded top-level code
    ├── AccountingError          a job was lost or reported twice: a bug in jobq, never expected
    └── VirtualDeadlineExceeded  a virtual-time run did not finish before its deadline

    InvisibleCpuWarning          (a UserWarning, not an error) CpuBound jobs on the virtual
                                 clock without a cost model: they take no virtual time
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobq.jobs import CancelReason, JobResult
    from jobq.retry import DeadLetter

__all__ = [
    "AccountingError",
    "DuplicateJobError",
    "HttpConnectError",
    "HttpError",
    "HttpStatusError",
    "HttpTimeoutError",
    "InjectedFailure",
    "InvalidConfigError",
    "InvalidJobError",
    "InvisibleCpuWarning",
    "JobCancelledError",
    "JobDeadLetteredError",
    "JobFailedError",
    "JobTimeoutError",
    "JobqError",
    "NotImportableError",
    "PipelineClosedError",
    "QueueFullError",
    "ReportNotReadyError",
    "ResponseTooLargeError",
    "ResultNotReadyError",
    "UnguardedMainError",
    "VirtualDeadlineExceeded",
    "WorkerCrashedError",
]


class JobqError(Exception):
    """Base class of every error raised by jobq."""


class InvalidJobError(JobqError, ValueError):
    """A job (or one of its fields) is not acceptable. The message names the field and value."""


class DuplicateJobError(InvalidJobError):
    """A job id was submitted twice to the same pipeline."""


class InvalidConfigError(JobqError, ValueError):
    """A setting is out of range. The message names the setting and the value."""


class PipelineClosedError(JobqError, RuntimeError):
    """The pipeline has begun shutting down and accepts no more jobs."""


class QueueFullError(JobqError):
    """`submit_nowait` found the queue full; `await submit(job)` would have waited."""


class JobFailedError(JobqError):
    """One attempt of a job failed. The worker may retry it (see RetryPolicy)."""


class JobTimeoutError(JobFailedError):
    """An attempt ran longer than its job's `timeout`: it was cut, and counts as failed."""


class JobDeadLetteredError(JobqError):
    """Raised by awaiting a handle whose job failed every attempt.

    `.result` is the job's JobResult; `.dead_letter` has every attempt's error and timing
    (None if the letter was already taken out of the queue, e.g. by a replay)."""

    def __init__(self, result: JobResult, dead_letter: DeadLetter | None) -> None:
        super().__init__(f"job {result.job_id} failed all {result.attempts} attempt(s); "
                         f"last error: {result.error}")
        self.result = result
        self.dead_letter = dead_letter


class JobCancelledError(JobqError):
    """Raised by awaiting a handle whose job was cancelled; `.reason` says at which stage
    (never started, interrupted, awaiting a retry). Not an asyncio.CancelledError: the job
    was cancelled, not the code awaiting it."""

    def __init__(self, result: JobResult) -> None:
        reason = result.cancel_reason
        super().__init__(f"job {result.job_id} was cancelled "
                         f"({reason.value if reason is not None else 'no reason'})")
        self.result = result
        self.reason: CancelReason | None = reason


class ResultNotReadyError(JobqError):
    """`handle.result()` was called before the job ended; `await handle` waits instead."""


class ReportNotReadyError(JobqError):
    """`pipe.report` was read before shutdown had finished: there is no report yet (leave
    `async with`, or `await pipe.shutdown()`, which returns it)."""


class InjectedFailure(JobFailedError):
    """A failure the FailurePlan asked for, so demos and tests fail on purpose, repeatably."""


class WorkerCrashedError(JobFailedError):
    """The worker process running a CpuBound job died (the pool is rebuilt)."""


class HttpError(JobFailedError):
    """An AsyncIo job's request failed."""


class HttpStatusError(HttpError):
    """The server answered with a 4xx or 5xx status (kept in `.status`)."""

    status: int


class HttpTimeoutError(HttpError):
    """Connecting or reading took longer than HttpLimits allows."""


class HttpConnectError(HttpError):
    """Nothing answered at that host and port."""


class ResponseTooLargeError(HttpError):
    """The response body was larger than HttpLimits.max_response_bytes."""


class NotImportableError(JobqError, TypeError):
    """A function given to the process pool lives in a notebook or __main__ and cannot be
    imported by a child process."""


class UnguardedMainError(JobqError, RuntimeError):
    """A process pool would start from a script's top-level code that is not under
    `if __name__ == "__main__":` - code that every pool process runs again when it starts."""


class AccountingError(JobqError, AssertionError):
    """A job ended twice or not at all. jobq's accounting forbids it; seeing this is a bug."""


class VirtualDeadlineExceeded(JobqError, TimeoutError):
    """A run on the virtual clock passed its virtual deadline (an endless simulation ends)."""


class InvisibleCpuWarning(UserWarning):
    """CpuBound jobs run on the virtual clock without `cpu_cost`: real CPU work takes no
    virtual time, so in plots and metrics those jobs last 0 s. Warned once per pipeline."""
