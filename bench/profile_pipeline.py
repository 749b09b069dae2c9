"""Profile jobq's hot path on measurement 1's workload (no-op jobs, inline, 8 workers).

    python bench/profile_pipeline.py                  # pyinstrument call tree, 100,000 jobs
    python bench/profile_pipeline.py --jobs 20000 --calls   # + cProfile: calls per job

pyinstrument shows where the time goes (wall time, sampled); `--calls` adds a deterministic
count of Python function calls per job, which - unlike times on a shared machine - is the
same on every run, so it is a good before/after measure for a change to jobq's hot path.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats

from jobq import Delayed, Job, Pipeline


async def pipeline(jobs: list[Job], bounded: bool) -> None:
    options = {"trace": False, "keep_results": False} if bounded else {}
    async with Pipeline(workers=8, capacity=10, executor="inline", progress=False,
                        **options) as pipe:  # type: ignore[arg-type]
        await pipe.submit_many(jobs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--bounded", action="store_true", help="trace=False, keep_results=False")
    parser.add_argument("--calls", action="store_true", help="also count calls with cProfile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    jobs = [Job(i, b"", Delayed(0)) for i in range(args.jobs)]

    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    asyncio.run(pipeline(jobs, args.bounded))
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False))

    if args.calls:
        prof = cProfile.Profile()
        prof.enable()
        asyncio.run(pipeline(jobs, args.bounded))
        prof.disable()
        stats = pstats.Stats(prof)
        n = args.jobs
        print(f"Python + builtin calls per job: {stats.total_calls / n:.1f}")
        table = stats.stats  # type: ignore[attr-defined]
        rows = sorted(table.items(), key=lambda kv: -kv[1][1])[: args.top]
        for (path, line, func), (_, ncalls, tottime, _, _) in rows:
            where = f"{path.rsplit('/', 1)[-1]}:{line}({func})"
            us = tottime / n * 1e6
            print(f"{ncalls / n:7.2f} calls/job  {us:7.2f} us/job (profiled)  {where}")


if __name__ == "__main__":
    main()
