"""The dispatcher: takes jobs from the queue and starts them, at most N at once.

The problem: "at most N jobs at once" must hold however fast jobs arrive, and a job must
never be lost between the queue and a worker - not even when shutdown cuts in.

The loop, once per job:

    1. wait for a free worker slot   - asyncio.Semaphore(N): the counterpart of tokio's
                                       Semaphore(N); a permit is a free slot
    2. wait for the next job OR for our token to be cancelled, whichever comes first
    3. hand the job to the free slot

Order matters: we take a slot *before* taking a job, so a job leaves the queue only when a
worker can start it at once. While every worker is busy, jobs stay in the queue, the queue
fills, and the producer waits - that is backpressure reaching all the way back.

Step 2 is the cancel-safe receive (tokio's `select!` on `recv()` and `cancelled()`):
`JobQueue.get(token)` returns a job or None, and takes the job off the queue in the same
step that returns it. There is no await between "taken" and "handed to a worker", so there is
no moment at which a cancellation could leave a job in nobody's hands.

The shortcut for busy workers (`next_for`). Going through the loop above costs a free slot
(a semaphore release and acquire), a future to hand the job over and two task wake-ups per
job - more than a small job itself. So a worker whose job has just ended does not give its
slot back while jobs are waiting: it asks `next_for(slot)` for the next queued job and takes
it in the same step (the slot stays taken, so "at most N" still holds: a worker runs one job
at a time). Only when the queue is empty does the worker free its slot and wait for the loop
above to hand it a job. Under load the loop above sleeps; it serves idle workers.
"""

from __future__ import annotations

import asyncio
from collections import deque

from jobq.cancel import CancellationToken
from jobq.jobs import Job
from jobq.queue import JobQueue
from jobq.trace import Trace
from jobq.worker import Worker

__all__ = ["Dispatcher"]


class Dispatcher:
    def __init__(self, queue: JobQueue, token: CancellationToken, trace: Trace) -> None:
        self._queue = queue
        self.token = token
        self._trace = trace
        self.workers: list[Worker] = []
        self._free_slots: deque[int] = deque()
        self._permits = asyncio.Semaphore(0)  # one permit per free slot; see add_worker

    def add_worker(self, worker: Worker) -> None:
        self.workers.append(worker)
        self.slot_freed(worker.slot)

    def slot_freed(self, slot: int) -> None:
        """A worker finished its job (workers call this)."""
        self._free_slots.append(slot)
        self._permits.release()

    def next_for(self, slot: int, now: float) -> Job | None:
        """The next queued job for the busy worker in `slot`, whose job ended at loop time
        `now` (this very step), or None (nothing queued, or we are cancelled: then the
        worker frees its slot). Taken off the queue in the step that returns it, like step 2
        - the worker owns it at once."""
        if self.token.cancelled:
            return None
        job = self._queue.get_nowait()
        if job is not None:
            self._trace.dispatched(self._trace.open[job.id], now, slot, len(self._queue))
        return job

    @property
    def busy(self) -> int:
        return len(self.workers) - len(self._free_slots)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # A worker killed from outside jobq never frees its slot. Once we are cancelled, one
        # extra permit makes sure we never wait for it forever (step 2 then returns None).
        self.token.on_cancel(self._permits.release)
        while True:
            await self._permits.acquire()  # 1. a free slot (waits while all N are busy)
            job = await self._queue.get(self.token)  # 2. next job, or None on cancel/close
            if job is None:
                self._permits.release()
                return
            slot = self._free_slots.popleft()  # 3. hand over - no await since step 2
            if not self.workers[slot].can_take():
                # Its task was killed from outside while we waited: the slot is gone (and so
                # is its permit). The job goes back to the head of the queue, still accounted.
                self._queue.put_back(job)
                continue
            self._trace.dispatched(self._trace.open[job.id], loop.time(), slot,
                                   len(self._queue))
            self.workers[slot].assign(job)

    def __repr__(self) -> str:
        return f"<Dispatcher busy={self.busy}/{len(self.workers)} {self.token!r}>"
