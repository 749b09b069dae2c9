"""Every error jobq raises, in one place.

    JobqError
    ├── InvalidJobError          bad input, refused before it is accepted (names the field)
    │   └── DuplicateJobError    an id this pipeline has already accepted
    ├── InvalidConfigError       bad pipeline / retry / HTTP settings (names the field)
    ├── PipelineClosedError      submit after shutdown began
    ├── QueueFullError           submit_nowait on a full queue (the waiting twin is submit)
    ├── JobFailedError           one attempt of a job failed; retryable
    │   ├── InjectedFailure      the failure plan asked for this failure (demos and tests)
    │   ├── WorkerCrashedError   the process running a CpuBound job died
    │   └── HttpError            an AsyncIo request failed
    │       ├── HttpStatusError      the server answered 4xx/5xx
    │       ├── HttpTimeoutError     connect or read took longer than allowed
    │       ├── HttpConnectError     nobody answered at that address
    │       └── ResponseTooLargeError the body exceeded the size cap
    ├── NotImportableError       a work function the process pool cannot import in a child
    ├── AccountingError          a job was lost or reported twice: a bug in jobq, never expected
    └── VirtualDeadlineExceeded  a virtual-time run did not finish before its deadline
"""

from __future__ import annotations

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
    "JobFailedError",
    "JobqError",
    "NotImportableError",
    "PipelineClosedError",
    "QueueFullError",
    "ResponseTooLargeError",
    "VirtualDeadlineExceeded",
    "WorkerCrashedError",
    "require_count",
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


class AccountingError(JobqError, AssertionError):
    """A job ended twice or not at all. jobq's accounting forbids it; seeing this is a bug."""


class VirtualDeadlineExceeded(JobqError, TimeoutError):
    """A run on the virtual clock passed its virtual deadline (an endless simulation ends)."""


def require_count(name: str, value: object) -> int:
    """Return `value` if it is a whole number >= 1 (workers, capacity, producers), else raise
    InvalidConfigError naming the setting. A bool is refused: True workers is a mistake."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidConfigError(f"{name} must be an int >= 1, got {value!r}")
    return value
