"""What `submit` gives back: a handle on one job, and a stream of results as they complete.

The problem: a job queue that only reports at the end is a simulation, not a tool. A caller
wants *this* job's value (`await handle`), or every result the moment it exists
(`async for result in pipe.as_completed()`), without polling and without memory that grows
with every job a long-running service has ever run.

    handle = await pipe.submit(Call(fetch_user, 42))
    user = await handle                      # the value, or the job's error (see below)

    async for result in pipe.as_completed():
        print(result.job_id, result.status, result.value)

Who holds what:
* The pipeline keeps a *weak* reference to each handle. A handle nobody holds is collected;
  its job runs on and is accounted for as always, and nothing is kept for it once it ends.
* A handle keeps its job's one `JobResult` once it has it. Awaiting the handle returns
  `result.value`, or raises `JobDeadLetteredError` (with the dead letter: every attempt's
  error) or `JobCancelledError` (with the reason) - the job's outcome, as an exception.
* A `ResultStream` holds the results that ended since it was opened and that its reader has
  not taken yet - at most `maxsize`: while a stream is full, `submit` waits (backpressure
  reaches from a slow reader all the way back to the producer; workers never wait for it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, Generic, TypeVar

from jobq.errors import JobCancelledError, JobDeadLetteredError, ResultNotReadyError
from jobq.jobs import JobResult, ResultStatus
from jobq.retry import DeadLetter

__all__ = ["JobHandle", "ResultStream"]

T = TypeVar("T")


class JobHandle(Generic[T]):
    """One submitted job: wait for it, look at it, cancel it.

        handle = await pipe.submit(job)
        value = await handle          # or: result = await handle.wait()  (never raises)
        handle.status                 # None while it runs, then its ResultStatus
        handle.cancel()               # queued: never starts; running: interrupted
    """

    __slots__ = ("__weakref__", "_cancel", "_dead_letter", "_result", "_waiters", "job_id")

    def __init__(self, job_id: int, cancel: Callable[[int], bool]) -> None:
        self.job_id = job_id
        self._cancel = cancel
        self._result: JobResult | None = None
        self._dead_letter: DeadLetter | None = None
        self._waiters: list[asyncio.Future[None]] = []

    # -- called by the pipeline ---------------------------------------------------------
    def _resolve(self, result: JobResult, dead_letter: DeadLetter | None) -> None:
        self._result, self._dead_letter = result, dead_letter
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- for the user -------------------------------------------------------------------
    def done(self) -> bool:
        """Has the job ended (with any status)?"""
        return self._result is not None

    @property
    def status(self) -> ResultStatus | None:
        """The job's final status, or None while it is queued or running."""
        return None if self._result is None else self._result.status

    def cancel(self) -> bool:
        """Ask for the job to end now: a queued job is CANCELLED(never-started), a running
        one is cut (CANCELLED(interrupted)). Returns False if it had ended already (or the
        pipeline has stopped)."""
        if self._result is not None:
            return False
        return self._cancel(self.job_id)

    async def wait(self) -> JobResult:
        """Wait for the job to end and return its JobResult (whatever the status)."""
        while self._result is None:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self._result

    def result(self) -> T:
        """The job's value now: raises ResultNotReadyError while it runs, and the job's
        outcome as an exception if it did not succeed (see `__await__`)."""
        if self._result is None:
            raise ResultNotReadyError(f"job {self.job_id} has not ended yet; await the handle")
        value: T = _value_of(self._result, self._dead_letter)
        return value

    def __await__(self) -> Generator[Any, None, T]:
        result = yield from self.wait().__await__()
        value: T = _value_of(result, self._dead_letter)
        return value

    def __repr__(self) -> str:
        state = "pending" if self._result is None else self._result.status.value
        return f"<JobHandle job={self.job_id} {state}>"


def _value_of(result: JobResult, letter: DeadLetter | None) -> Any:
    if result.status is ResultStatus.SUCCEEDED:
        return result.value
    if result.status is ResultStatus.DEAD_LETTERED:
        raise JobDeadLetteredError(result, letter)
    raise JobCancelledError(result)


class ResultStream:
    """Results as they complete, in the order they ended; see `Pipeline.as_completed`.

    Cancel-safe: a result leaves the buffer only in the step that returns it, so a reader
    cancelled while it waits loses nothing. The stream ends once the pipeline has stopped
    and the buffer is empty.
    """

    def __init__(
        self,
        maxsize: int,
        on_space: Callable[[], None],
        on_close: Callable[[ResultStream], None],
    ) -> None:
        self.maxsize = maxsize
        self._buffer: deque[JobResult] = deque()
        self._reader: asyncio.Future[None] | None = None
        self._ended = False
        self._on_space = on_space  # wakes producers waiting for this stream to have room
        self._on_close = on_close  # unsubscribes the stream from the pipeline

    @property
    def full(self) -> bool:
        return len(self._buffer) >= self.maxsize

    def _put(self, result: JobResult) -> None:
        self._buffer.append(result)
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def __aiter__(self) -> AsyncIterator[JobResult]:
        return self

    async def __anext__(self) -> JobResult:
        while not self._buffer:
            if self._ended:
                self.close()
                raise StopAsyncIteration
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        result = self._buffer.popleft()
        if len(self._buffer) == self.maxsize - 1:  # it was full: a producer may go on
            self._on_space()
        return result

    def close(self) -> None:
        """Stop receiving results (a reader that breaks out of its loop should; `async
        with`/`aclose()` do it). Idempotent."""
        self._ended = True
        self._buffer.clear()
        self._on_close(self)
        self._on_space()

    async def aclose(self) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "ended" if self._ended else "open"
        return f"<ResultStream {state} buffered={len(self._buffer)}/{self.maxsize}>"
