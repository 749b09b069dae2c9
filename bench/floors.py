"""The floors that jobq's pipeline overhead is measured against (measurement 1).

Both do the least work that still has the shape of a job queue, so the difference between
them and `jobq.Pipeline` is what jobq's features (trace, metrics, ledger, retries, shutdown
phases) cost per job.

    floor_pipeline   hand-written asyncio: Queue(capacity) -> Semaphore(workers) -> one task per
                     job -> results Queue -> a counting collector
    aiojobs_floor    aiojobs.Scheduler(limit=workers, pending_limit=capacity), one coroutine
                     per job that does `await asyncio.sleep(0)`
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from jobq import Job


async def floor_pipeline(jobs: Sequence[Job], *, workers: int = 8, capacity: int = 10) -> int:
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
            await asyncio.sleep(job.job_type.delay)  # type: ignore[union-attr]
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
