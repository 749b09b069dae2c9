"""The job model: what a producer submits and what the collector receives.

A `Job` is plain data - an id, some bytes, and a job type. The seed's three job types are
how the series teaches:

    CpuBound(iterations)  pure-Python work, run off the event loop (processes or threads)
    AsyncIo(url)          a real HTTP GET, awaited on the loop
    Delayed(delay)        sleep for `delay` seconds, then execute

and two more run your own work the same way (retries, cancellation, deadline, trace):

    Call(fn, *args, **kwargs)      `await fn(*args, **kwargs)` on the loop: an async def
    Blocking(fn, *args, **kwargs)  `fn(*args, **kwargs)` in the pipeline's executor (processes
                                   by default): a plain def - the counterpart of spawn_blocking

A job of your own is named after its function in the trace, the metrics and the plots.

Every field is checked when the object is built, so bad input fails where it was written,
with an `InvalidJobError` that names the field and the value. Checks that need the pipeline
(a duplicate id, a submit after shutdown) happen in `Pipeline.submit`.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, ParamSpec, TypeVar
from urllib.parse import urlsplit

from jobq import validation as check
from jobq.errors import InvalidJobError
from jobq.http import redact

__all__ = [
    "AsyncIo",
    "Blocking",
    "Call",
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
    """A real HTTP GET of `url` (http or https only).

    A password in the URL (`http://ann:secret@host/`) is sent to the server (HTTP Basic
    auth) and shown nowhere: the repr, and every message about the job, show `ann:***@`
    (see `jobq.http.redact`). `url` itself keeps it - the request needs it.
    """

    url: str

    def __post_init__(self) -> None:
        if not isinstance(self.url, str):
            raise InvalidJobError(f"AsyncIo.url must be a str, got {type(self.url).__name__}")
        shown = redact(self.url)  # a message about a bad URL must not show its password either
        try:
            parts = urlsplit(self.url)
            port = parts.port  # raises ValueError for a port that is not a number
        except ValueError as exc:
            raise InvalidJobError(
                f"AsyncIo.url is malformed ({redact(str(exc))}): {shown!r}"
            ) from None
        if parts.scheme not in ("http", "https"):
            raise InvalidJobError(
                f"AsyncIo.url must be an http or https URL, got scheme {parts.scheme!r} "
                f"in {shown!r}"
            )
        if not parts.hostname:
            raise InvalidJobError(f"AsyncIo.url has no host: {shown!r}")
        if port == 0:
            raise InvalidJobError(f"AsyncIo.url has port 0, which nobody listens on: {shown!r}")

    def __repr__(self) -> str:
        # Job's repr shows this one, and reprs end up in logs, notebooks and error messages.
        return f"AsyncIo(url={redact(self.url)!r})"


@dataclass(frozen=True, slots=True, init=False)
class Delayed:
    """Sleep for `delay` seconds (a float or a timedelta), then execute. `Delayed(0)` does not
    wait at all: it runs to its end in the step that started it (no `sleep(0)`)."""

    delay: float

    def __init__(self, delay: float | timedelta) -> None:
        check.instance("Delayed.delay", delay, int, float, timedelta, error=InvalidJobError)
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        # Finite: also refuses an int too large for a float (10**400), which float() cannot
        # convert. A huge finite delay (1e300 s, timedelta.max) is accepted like any other.
        check.seconds("Delayed.delay", seconds, error=InvalidJobError)
        object.__setattr__(self, "delay", float(seconds))


T = TypeVar("T")
P = ParamSpec("P")


class _Function(Generic[T]):
    """What Call and Blocking share: a function, its arguments, and a name for plots."""

    __slots__ = ("args", "fn", "kwargs", "name")
    _wants_async = False

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        _check_function(type(self).__name__, fn, self._wants_async)
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.name: str = getattr(fn, "__name__", None) or type(fn).__name__

    def __repr__(self) -> str:
        shown = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        text = ", ".join([self.name, *shown])
        return f"{type(self).__name__}({text if len(text) < 80 else text[:70] + '...'})"


class Call(_Function[T]):
    """Your own async function as a job: `await fn(*args, **kwargs)` on the event loop.

        await pipe.submit(Call(fetch_user, 42))

    Retried, cut at the drain deadline, traced and timed like the seed's job types. It runs
    on the loop, so it must not block it: for blocking or CPU-heavy code use `Blocking`.
    """

    __slots__ = ()
    _wants_async = True

    def __init__(self, fn: Callable[P, Awaitable[T]], /, *args: P.args,
                 **kwargs: P.kwargs) -> None:
        super().__init__(fn, args, kwargs)


class Blocking(_Function[T]):
    """Your own blocking function as a job: `fn(*args, **kwargs)` in the pipeline's executor
    (a process pool by default, threads with executor="thread") - tokio's spawn_blocking.

        await pipe.submit(Blocking(resize_image, "cat.png", width=200))

    With processes, `fn`, its arguments and its result travel by pickle: `fn` must be
    importable (defined in a module, not in a notebook cell or a lambda).
    """

    __slots__ = ()

    def __init__(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> None:
        super().__init__(fn, args, kwargs)


def _check_function(kind: str, fn: object, wants_async: bool) -> None:
    """Refuse what cannot run as `kind`, saying what to write instead."""
    if inspect.iscoroutine(fn):
        name = getattr(fn, "__qualname__", "fn")
        fn.close()  # never awaited: close it, so Python does not warn about it later
        raise InvalidJobError(
            f"{kind}.fn must be a function, got a coroutine object {name}(...): pass the "
            f"function and its arguments, {kind}({name}, ...), not {kind}({name}(...))"
        )
    if not callable(fn):
        raise InvalidJobError(
            f"{kind}.fn must be a function, got {type(fn).__name__} {check.shown(fn)}")
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))  # noqa: B004 - an object with `async def __call__`
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    if wants_async and not is_async:
        raise InvalidJobError(
            f"Call.fn must be an async function (async def), got the plain function {name}: "
            f"run it with Blocking({name}, ...) in the executor instead"
        )
    if not wants_async and is_async:
        raise InvalidJobError(
            f"Blocking.fn must be a plain function, got the async function {name}: run it "
            f"with Call({name}, ...) on the event loop instead"
        )


JobType = CpuBound | AsyncIo | Delayed | Call[Any] | Blocking[Any]
_JOB_TYPES = (CpuBound, AsyncIo, Delayed, Call, Blocking)


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of work. `id` must be unique within a pipeline (or submit the job type alone,
    `await pipe.submit(Call(fn, x))`, and the pipeline gives it the next free id).

    `timeout`: seconds one attempt may take; past it the attempt is cut and fails with
    JobTimeoutError (and is retried like any failure). None: no limit.
    """

    id: int
    payload: bytes
    job_type: JobType
    timeout: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or not isinstance(self.id, int):
            raise InvalidJobError(
                f"Job.id must be an int, got {type(self.id).__name__} {self.id!r}"
            )
        if not isinstance(self.payload, bytes):
            raise InvalidJobError(
                f"Job.payload must be bytes, got {type(self.payload).__name__} (job {self.id})"
            )
        job_type: object = self.job_type  # what was passed, whatever the annotation says
        if not isinstance(job_type, _JOB_TYPES):
            hint = ""
            if callable(job_type) or inspect.iscoroutine(job_type):
                hint = " - wrap your function: Call(fn, ...) for async def, Blocking(fn, ...)"
                if inspect.iscoroutine(job_type):
                    job_type.close()
            raise InvalidJobError(
                f"Job.job_type must be CpuBound, AsyncIo, Delayed, Call or Blocking, got "
                f"{type(job_type).__name__} (job {self.id}){hint}"
            )
        check.seconds("Job.timeout", self.timeout, positive=True, allow_none=True,
                      error=InvalidJobError)

    @property
    def kind(self) -> str:
        """'cpu', 'io' or 'delay', or your function's name - what plots and metrics group by."""
        if isinstance(self.job_type, _Function):
            return self.job_type.name
        return _KIND[type(self.job_type)]

    def __repr__(self) -> str:
        # The payload can be large; show its size, not its bytes.
        timeout = "" if self.timeout is None else f", timeout={self.timeout}"
        return (f"Job(id={self.id}, payload=<{len(self.payload)} bytes>, "
                f"job_type={self.job_type!r}{timeout})")


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
    # What the job returned: your function's value, an AsyncIo job's FetchResult (status,
    # headers, body), a CpuBound job's checksum, a Delayed job's payload length.
    value: Any = field(default=None, compare=False)

    @property
    def latency(self) -> float:
        return self.finished_at - self.submitted_at

    @property
    def ok(self) -> bool:
        return self.status is ResultStatus.SUCCEEDED
