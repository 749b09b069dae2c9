"""The floors that jobq's pipeline overhead is measured against (measurements 1 and 1u).

Each does the least work that still has the shape of a job queue, so the difference between
them and `jobq.Pipeline` is what jobq's features (trace, metrics, ledger, retries, shutdown
phases, handles) cost per job. All run `Delayed` jobs: they sleep the job's delay - and a
`Delayed(0)` job does not sleep at all, except in the yielding floor.

    floor_pipeline   THE floor of issue 11, hand-written asyncio: producer -> Queue(capacity)
                     -> dispatcher with Semaphore(workers) that starts one task per job ->
                     the job -> unbounded results Queue -> a collector that counts.
                     No `sleep(0)` in a job of delay 0.
    floor_yielding   the same, but every job awaits `asyncio.sleep(delay)` even for delay 0
                     (it yields once per job, as jobq's Delayed(0) does): the bench's floor
                     before issue 11, kept as a second, labelled reference
    pool_floor       the same queue, results queue and collector, but `workers` long-lived
                     worker tasks pull jobs straight from the queue (no dispatcher, no
                     semaphore, no task per job)
    aiojobs_floor    aiojobs.Scheduler(limit=workers, pending_limit=capacity), one coroutine
                     per job that does `await asyncio.sleep(0)`
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from jobq import Job


def _delay(job: Job) -> float:
    return job.job_type.delay  # type: ignore[union-attr]


async def floor_pipeline(jobs: Sequence[Job], *, workers: int = 8, capacity: int = 10,
                         yielding: bool = False) -> int:
    """Run every job (each sleeps its Delayed delay) and return how many results arrived."""
    queue: asyncio.Queue[Job | None] = asyncio.Queue(capacity)
    results: asyncio.Queue[int | None] = asyncio.Queue()
    slots = asyncio.Semaphore(workers)

    async def producer() -> None:
        for job in jobs:
            await queue.put(job)  # waits while the queue is full: backpressure
        await queue.put(None)

    async def run_one(job: Job) -> None:
        try:
            delay = _delay(job)
            if delay or yielding:
                await asyncio.sleep(delay)
            results.put_nowait(job.id)
        finally:
            slots.release()

    async def dispatcher() -> None:
        running: set[asyncio.Task[None]] = set()
        while True:
            await slots.acquire()
            job = await queue.get()
            if job is None:
                break
            task = asyncio.create_task(run_one(job))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.wait(running)
        results.put_nowait(None)

    async def collector() -> int:
        count = 0
        while await results.get() is not None:
            count += 1
        return count

    _, _, count = await asyncio.gather(producer(), dispatcher(), collector())
    return count


async def floor_yielding(jobs: Sequence[Job], *, workers: int = 8, capacity: int = 10) -> int:
    """The floor whose jobs yield once even for delay 0 (the bench's floor before issue 11)."""
    return await floor_pipeline(jobs, workers=workers, capacity=capacity, yielding=True)


async def pool_floor(jobs: Sequence[Job], *, workers: int = 8, capacity: int = 10) -> int:
    """`workers` long-lived tasks pull from the bounded queue; same results queue, collector."""
    queue: asyncio.Queue[Job | None] = asyncio.Queue(capacity)
    results: asyncio.Queue[int | None] = asyncio.Queue()

    async def producer() -> None:
        for job in jobs:
            await queue.put(job)
        for _ in range(workers):
            await queue.put(None)  # one "that was all" per worker

    async def worker() -> None:
        while (job := await queue.get()) is not None:
            delay = _delay(job)
            if delay:
                await asyncio.sleep(delay)
            results.put_nowait(job.id)

    async def workers_then_end() -> None:
        await asyncio.gather(*(worker() for _ in range(workers)))
        results.put_nowait(None)

    async def collector() -> int:
        count = 0
        while await results.get() is not None:
            count += 1
        return count

    _, _, count = await asyncio.gather(producer(), workers_then_end(), collector())
    return count


async def aiojobs_floor(jobs: Sequence[Job], *, workers: int = 8, capacity: int = 10) -> int:
    """The same workload through aiojobs; returns how many jobs ran to the end."""
    import aiojobs

    done = 0

    async def run_one() -> None:
        nonlocal done
        await asyncio.sleep(0)
        done += 1

    scheduler = aiojobs.Scheduler(limit=workers, pending_limit=capacity)
    for _job in jobs:
        await scheduler.spawn(run_one())  # waits while `capacity` jobs are pending
    await scheduler.wait_and_close(timeout=3600)
    return done
