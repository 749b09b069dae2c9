"""The job model: what a producer submits and what the collector receives.

A `Job` is plain data - an id, some bytes, and one of three job types:

    CpuBound(iterations)  pure-Python work, run off the event loop (processes or threads)
    AsyncIo(url)          a real HTTP GET, awaited on the loop
    Delayed(delay)        sleep for `delay` seconds, then execute

Every field is checked when the object is built, so bad input fails where it was written,
with an `InvalidJobError` that names the field and the value. Checks that need the pipeline
(a duplicate id, a submit after shutdown) happen in `Pipeline.submit`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

from jobq.errors import InvalidJobError

__all__ = [
    "AsyncIo",
    "CancelReason",
    "CpuBound",
    "Delayed",
    "Job",
    "JobResult",
    "JobType",
    "ResultStatus",
]


@dataclass(frozen=True, slots=True)
class CpuBound:
    """Pure-Python CPU work: `iterations` rounds of a hash-mixing loop over the payload."""

    iterations: int

    def __post_init__(self) -> None:
        # bool is an int in Python; True iterations is almost certainly a mistake.
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int):
            raise InvalidJobError(
                f"CpuBound.iterations must be an int, got {type(self.iterations).__name__} "
                f"{self.iterations!r}"
            )
        if self.iterations < 0:
            raise InvalidJobError(f"CpuBound.iterations must be >= 0, got {self.iterations}")


@dataclass(frozen=True, slots=True)
class AsyncIo:
    """A real HTTP GET of `url` (http or https only)."""

    url: str

    def __post_init__(self) -> None:
        if not isinstance(self.url, str):
            raise InvalidJobError(f"AsyncIo.url must be a str, got {type(self.url).__name__}")
        try:
            parts = urlsplit(self.url)
            port = parts.port  # raises ValueError for a port that is not a number
        except ValueError as exc:
            raise InvalidJobError(f"AsyncIo.url is malformed ({exc}): {self.url!r}") from None
        if parts.scheme not in ("http", "https"):
            raise InvalidJobError(
                f"AsyncIo.url must be an http or https URL, got scheme {parts.scheme!r} "
                f"in {self.url!r}"
            )
        if not parts.hostname:
            raise InvalidJobError(f"AsyncIo.url has no host: {self.url!r}")
        if port == 0:
            raise InvalidJobError(f"AsyncIo.url has port 0, which nobody listens on: {self.url!r}")


@dataclass(frozen=True, slots=True, init=False)
class Delayed:
    """Sleep for `delay` seconds (a float or a timedelta), then execute."""

    delay: float

    def __init__(self, delay: float | timedelta) -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise InvalidJobError(
                f"Delayed.delay must be seconds (float) or a timedelta, got "
                f"{type(delay).__name__} {delay!r}"
            )
        if math.isnan(seconds) or math.isinf(seconds):
            raise InvalidJobError(
                f"Delayed.delay must be a finite number of seconds, got {seconds}"
            )
        if seconds < 0:
            raise InvalidJobError(f"Delayed.delay must be >= 0 seconds, got {float(seconds)}")
        object.__setattr__(self, "delay", float(seconds))


JobType = CpuBound | AsyncIo | Delayed


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of work. `id` must be unique within a pipeline."""

    id: int
    payload: bytes
    job_type: JobType

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or not isinstance(self.id, int):
            raise InvalidJobError(
                f"Job.id must be an int, got {type(self.id).__name__} {self.id!r}"
            )
        if not isinstance(self.payload, bytes):
            raise InvalidJobError(
                f"Job.payload must be bytes, got {type(self.payload).__name__} (job {self.id})"
            )
        if not isinstance(self.job_type, CpuBound | AsyncIo | Delayed):
            raise InvalidJobError(
                f"Job.job_type must be CpuBound, AsyncIo or Delayed, got "
                f"{type(self.job_type).__name__} (job {self.id})"
            )

    @property
    def kind(self) -> str:
        """'cpu', 'io' or 'delay' - the short name plots and metrics group by."""
        return _KIND[type(self.job_type)]

    def __repr__(self) -> str:
        # The payload can be large; show its size, not its bytes.
        return f"Job(id={self.id}, payload=<{len(self.payload)} bytes>, job_type={self.job_type!r})"


_KIND: dict[type, str] = {CpuBound: "cpu", AsyncIo: "io", Delayed: "delay"}


class ResultStatus(enum.Enum):
    """How a job ended. Every accepted job ends with exactly one of these."""

    SUCCEEDED = "succeeded"
    DEAD_LETTERED = "dead-lettered"  # failed on every attempt; kept in the DeadLetterQueue
    CANCELLED = "cancelled"  # ended by shutdown; `JobResult.cancel_reason` says when

    __hash__ = object.__hash__  # members are singletons: hash by identity, in C (as EventKind)

    def __repr__(self) -> str:
        return f"ResultStatus.{self.name}"


class CancelReason(enum.Enum):
    """Why a cancelled job did not finish."""

    NEVER_STARTED = "never-started"  # still queued when shutdown cancelled the queue
    INTERRUPTED = "interrupted"  # running when the drain deadline passed
    AWAITING_RETRY = "awaiting-retry"  # waiting out a retry backoff at the deadline

    __hash__ = object.__hash__  # members are singletons: hash by identity, in C (as EventKind)

    def __repr__(self) -> str:
        return f"CancelReason.{self.name}"


@dataclass(frozen=True, slots=True)
class JobResult:
    """The one final report for one job.

    Times are loop times (virtual seconds on a virtual clock). `duration` is the service time
    of the job (first start to end); `latency` is submit to end, waiting in the queue included.
    """

    job_id: int
    duration: float
    status: ResultStatus
    kind: str = "cpu"
    attempts: int = 0
    worker: int | None = None
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float = 0.0
    error: str | None = None
    cancel_reason: CancelReason | None = None
    value: int | None = field(default=None, compare=False)

    @property
    def latency(self) -> float:
        return self.finished_at - self.submitted_at

    @property
    def ok(self) -> bool:
        return self.status is ResultStatus.SUCCEEDED
