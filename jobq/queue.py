"""The bounded queue between producers and the dispatcher: where backpressure happens.

The problem: a producer that is faster than the workers would, with an unbounded queue,
pile up every job it makes in memory. A queue with a fixed `capacity` makes the producer
*wait* in `put()` once `capacity` jobs are waiting, so memory is bounded by the capacity, not
by the number of jobs - the producer is slowed to the speed of the workers.

This is `asyncio.Queue(maxsize=capacity)` with three things asyncio's queue lacks, each of
which the pipeline needs:

* `close()`: producers blocked in `put()` wake up with `PipelineClosedError`, so a shutdown
  never leaves a producer waiting forever and never half-accepts its job;
* `get(token)`: waits for "next job" *and* "token cancelled" at once, and is cancel-safe:
  a job leaves the queue only in the same step that returns it, so no cancellation can land
  between "taken" and "handed over" (the trap `wait_for(queue.get(), ...)` falls into);
* `drain_nowait()`: shutdown takes every queued job at once to report it cancelled.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from functools import partial

from jobq.cancel import CancellationToken, wake
from jobq.errors import PipelineClosedError, QueueFullError
from jobq.jobs import Job
from jobq.validation import count as require_count

__all__ = ["JobQueue"]


class JobQueue:
    """A FIFO of at most `capacity` jobs; `put` waits while it is full."""

    def __init__(self, capacity: int = 10, *, held: Callable[[], bool] | None = None) -> None:
        require_count("capacity", capacity)
        self.capacity = capacity
        # Something else that can make producers wait besides a full queue (a results stream
        # whose reader lags behind): while it says True, the queue counts as full.
        self._held = held
        self._items: deque[Job] = deque()
        # Futures of tasks waiting for space (producers) and for an item (the dispatcher).
        # Each waiter is woken at most once per change; it re-checks the condition itself.
        self._putters: deque[asyncio.Future[None]] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def waiting_producers(self) -> int:
        return sum(1 for w in self._putters if not w.done())

    def full(self) -> bool:
        return len(self._items) >= self.capacity or (self._held is not None and self._held())

    def hold_while(self, held: Callable[[], bool] | None) -> None:
        """Let `held()` make the queue count as full (None: only its size does). The pipeline
        sets it only while result streams exist, so a submit asks nothing more otherwise."""
        self._held = held

    def wake_producer(self) -> None:
        """Whatever held producers back has let go: let one waiting producer re-check."""
        _wake_one(self._putters)

    def put_nowait(self, job: Job) -> None:
        """Add `job` or raise QueueFullError / PipelineClosedError. Never waits."""
        if not self.offer(job):  # (offer raises PipelineClosedError itself)
            why = (f"the queue holds {self.capacity} jobs (its capacity)"
                   if len(self._items) >= self.capacity
                   else "a results stream is full (its reader is behind)")
            raise QueueFullError(
                f"{why}; job {job.id} was not accepted - await submit() to wait for space"
            )

    def offer(self, job: Job) -> int:
        """Add `job` if there is room now and return how many jobs the queue holds with it
        (at least 1: true); 0 if the queue is full (the job is not added). The producer's
        fast path: one check, no exception when full, and the depth its trace event needs
        without another call. Raises PipelineClosedError if the queue is closed."""
        if self._closed:
            raise PipelineClosedError(f"the queue is closed; job {job.id} was not accepted")
        items = self._items
        if len(items) >= self.capacity or (self._held is not None and self._held()):
            return 0  # full (see full(): the same test, here without a call)
        items.append(job)
        if self._getters:
            _wake_one(self._getters)
        return len(items)

    async def put(self, job: Job) -> bool:
        """Add `job`, waiting while the queue is full. Returns True if it had to wait.

        If the queue is closed while we wait, raises PipelineClosedError and the job is
        *not* in the queue - the caller still owns it.
        """
        waited = False
        while self.full() and not self._closed:
            waited = True
            await _wait_on(self._putters)
        self.put_nowait(job)  # raises if we were woken by close()
        return waited

    def get_nowait(self) -> Job | None:
        """Take the next job, or None if there is none."""
        if not self._items:
            return None
        job = self._items.popleft()
        if self._putters:
            _wake_one(self._putters)
        return job

    async def get(self, token: CancellationToken) -> Job | None:
        """Wait for the next job; return None once `token` is cancelled (or the queue is
        closed and empty).

        Cancel-safe: if the task calling this is cancelled while it waits, no job was taken.
        A job is removed from the queue only by `get_nowait()` below, in the same step that
        returns it - there is no await between taking and returning.
        """
        while not self._items:
            if token.cancelled or self._closed:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            remove = token.on_cancel(partial(wake, waiter))
            try:
                await waiter
            except asyncio.CancelledError:
                # Woken and cancelled in the same step: pass the wake-up on, or another
                # getter could sleep while a job waits (as _wait_on does for producers).
                if waiter.done() and not waiter.cancelled():
                    _wake_one(self._getters)
                raise
            finally:
                remove()
                if not waiter.done():
                    waiter.cancel()
        if token.cancelled:
            return None
        return self.get_nowait()

    def remove(self, job_id: int) -> Job | None:
        """Take the queued job with this id out of the queue (handle.cancel()), or None if it
        is not queued. O(capacity): the queue is short by design."""
        for job in self._items:
            if job.id == job_id:
                self._items.remove(job)
                _wake_one(self._putters)
                return job
        return None

    def put_back(self, job: Job) -> None:
        """Return a job that was taken but could not be handed over to the head of the queue.
        It was accepted already, so neither the capacity nor close() refuses it."""
        self._items.appendleft(job)
        _wake_one(self._getters)

    def close(self) -> None:
        """Refuse further puts; wake every waiting producer (they get PipelineClosedError)
        and the waiting dispatcher (it drains what is left, then gets None)."""
        self._closed = True
        for waiters in (self._putters, self._getters):
            while waiters:
                _wake_one(waiters)

    def drain_nowait(self) -> list[Job]:
        """Remove and return every queued job (shutdown uses it for `cancel_queued`)."""
        jobs = list(self._items)
        self._items.clear()
        while self._putters:
            _wake_one(self._putters)
        return jobs

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<JobQueue {state} {len(self._items)}/{self.capacity}>"


async def _wait_on(waiters: deque[asyncio.Future[None]]) -> None:
    waiter = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    try:
        await waiter
    except asyncio.CancelledError:
        # We were woken and cancelled in the same step: pass the wake-up on, or another
        # waiter could sleep forever although there is space (asyncio.Queue does the same).
        if waiter.done() and not waiter.cancelled():
            _wake_one(waiters)
        raise
    finally:
        if waiter in waiters:
            waiters.remove(waiter)


def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return
