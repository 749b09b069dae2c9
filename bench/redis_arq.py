"""arq, the reference job queue on Redis that issue 12 measures jobq against (`pip install arq`,
in the `bench` extra; arq 0.28 at the time of writing).

    python bench/redis_arq.py --jobs 2000 --processes 2           # tuned, own redis-server
    python bench/redis_arq.py --jobs 300 --processes 1 --defaults
    python bench/redis_bench.py                                    # beside the floor and jobq

What one run does (`run_arq`):

    parent (producer)                        worker process x P (`python bench/redis_arq.py worker`)
    -----------------                        ---------------------------------------------------
    start P workers, wait for "ready"        arq.Worker(functions=[noop], queue_name=QUEUE,
    t0; enqueue_job("noop") x N                         max_jobs=M, poll_delay=D).run()
        (8 enqueuers at a time)                every D seconds: ZRANGEBYSCORE the queue, then per
    poll ZCARD <queue> every 2 ms              job WATCH/MULTI an in-progress key, GET the job,
    t1 = the poll that finds it empty          INCR its retry key, run it, store the result and
        (arq removes a job from the queue      delete the job's keys (and ZREM it from the
        in the MULTI that stores its result)   queue) in one MULTI
    SIGTERM the workers, wait for exit

jobs/s = N / (t1 - t0), the same clock and the same 2 ms poll as the floor
(bench/redis_floor.py), and the same count of Redis commands per job (issue 12 says about 23,
in about 9 round trips: job, in-progress, retry and result keys, and workers racing for the
head of the queue with WATCH/MULTI).

Settings, from arq's `Worker` arguments:
    tuned      max_jobs=8, poll_delay=0.005 s (issue 12's tuned settings)
    defaults   max_jobs=10, poll_delay=0.5 s: arq sleeps half a second whenever the queue
               was empty, so use few jobs (a few hundred) to finish in reasonable time
Each job's result is kept (arq's default `keep_result=3600`): a result is part of the work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from redis_floor import (  # noqa: E402
    POLL,
    URL_ENV,
    per_job,
    snapshot,
    start_processes,
    stop_processes,
)

ENQUEUERS = 8  # enqueue_job calls in flight at once in the producer
SETTINGS: dict[str, dict[str, Any]] = {
    "tuned": {"max_jobs": 8, "poll_delay": 0.005},
    "defaults": {},  # max_jobs=10, poll_delay=0.5
}
RESULT_PREFIX = "arq:result:"  # arq.constants.result_key_prefix


async def noop(ctx: dict[str, Any]) -> None:
    return None


def worker_main(queue: str, settings: str) -> None:
    """One arq worker process; SIGTERM stops it (arq's own handler)."""
    import os

    from arq.connections import RedisSettings
    from arq.worker import Worker

    async def ready(ctx: dict[str, Any]) -> None:
        print("ready", flush=True)

    # arq's Worker asks for the current event loop in __init__; give it one of its own.
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = Worker(functions=[noop], queue_name=queue, on_startup=ready,
                    redis_settings=RedisSettings.from_dsn(os.environ[URL_ENV]),
                    **SETTINGS[settings])
    worker.run()
    print(json.dumps({"jobs": worker.jobs_complete, "failed": worker.jobs_failed,
                      "retried": worker.jobs_retried}), flush=True)


async def produce_and_wait(url: str, queue: str, jobs: int, limit_s: float,
                           pids: list[int]) -> tuple[float, dict[str, float]]:
    """Enqueue `jobs` no-op jobs and wait for every result: the seconds from the first
    enqueue to the last result, and Redis commands and server microseconds per job."""
    import redis
    from arq.connections import RedisSettings, create_pool

    pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=queue)
    stats = redis.Redis.from_url(url)  # INFO commandstats, outside the timed loop's client
    run = uuid.uuid4().hex[:8]
    ids = [f"{run}-{i}" for i in range(jobs)]  # built before the clock
    try:
        before = snapshot(stats, ["zcard"], pids)
        started = time.perf_counter()
        todo = iter(ids)

        async def enqueuer() -> None:
            for job_id in todo:  # the enqueuers share one iterator: each id once
                job = await pool.enqueue_job("noop", _job_id=job_id, _queue_name=queue)
                assert job is not None, job_id

        await asyncio.gather(*(enqueuer() for _ in range(ENQUEUERS)))
        # Every job is enqueued: the queue (a sorted set) is empty once the last job is
        # finished, and arq removes a job from it in the MULTI that stores its result.
        deadline = started + limit_s
        while True:
            now = time.perf_counter()
            if int(await pool.zcard(queue)) == 0:
                break
            if now > deadline:
                raise TimeoutError(f"arq: {await pool.zcard(queue)} of {jobs} jobs still "
                                   f"queued after {limit_s} s")
            await asyncio.sleep(POLL)
        after = snapshot(stats, ["zcard"], pids)
        stored = int(await pool.exists(*(RESULT_PREFIX + job_id for job_id in ids)))
        assert stored == jobs, (stored, jobs)
        return now - started, per_job(before, after, jobs)
    finally:
        stats.close()
        await pool.aclose()


def run_arq(url: str, queue: str, jobs: int, processes: int, *, settings: str = "tuned",
            timeout: float = 300.0) -> dict[str, Any]:
    """One end-to-end run of arq; returns jobs, seconds and jobs_per_s."""
    argvs = [[sys.executable, str(HERE), "worker", "--queue", queue, "--settings", settings]
             for _ in range(processes)]
    procs = start_processes(argvs, url)
    try:
        seconds, commands = asyncio.run(produce_and_wait(url, queue, jobs, timeout,
                                                         [proc.pid for proc in procs]))
    finally:
        reports = stop_processes(procs)
    counts = [json.loads(text.splitlines()[-1]) for text in reports if text.strip()]
    ran = sum(c["jobs"] for c in counts)
    assert ran == jobs and not any(c["failed"] for c in counts), (counts, jobs)
    return {"jobs": jobs, "seconds": seconds, "jobs_per_s": jobs / seconds,
            "retried": sum(c["retried"] for c in counts), **commands}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("worker", help="an arq worker process (the URL in $" + URL_ENV + ")")
    worker.add_argument("--queue", required=True)
    worker.add_argument("--settings", choices=sorted(SETTINGS), default="tuned")
    parser.add_argument("--jobs", type=int, default=2_000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--defaults", action="store_true", help="arq's defaults, not tuned")
    args = parser.parse_args(argv)
    if args.command == "worker":
        worker_main(args.queue, args.settings)
        return
    sys.path.insert(0, str(HERE.parent.parent))  # jobq from this checkout if not installed
    from jobq.testing import RedisServer

    settings = "defaults" if args.defaults else "tuned"
    with RedisServer() as server:
        result = run_arq(server.url, f"arq-{uuid.uuid4().hex[:8]}", args.jobs, args.processes,
                         settings=settings)
    print(json.dumps({"variant": f"arq_{settings}", "processes": args.processes, **result}))


if __name__ == "__main__":
    main()
