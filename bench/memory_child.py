"""One memory measurement in a fresh process (bench/run.py starts one per size and mode).

    python bench/memory_child.py --jobs 1000000 --mode bounded

Prints one JSON object: resident memory after imports and pipeline creation (the start-up),
the peak resident memory over the run, and their difference. Jobs are *generated* as they
are submitted (a generator, not a list), each with its own 1 KiB payload, so the only thing
that could make memory grow with the job count is jobq itself.

Peak: Linux lets a process reset its own high-water mark (`echo 5 > /proc/self/clear_refs`),
so after start-up we reset VmHWM and read it again at the end. Where that is refused, the
peak is compared with VmRSS at start-up instead (which can only overstate the growth).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import time
from collections.abc import Iterator

import jobq
from jobq import Delayed, Job, Pipeline

KIB = 1024


def status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return status_kib("VmHWM") <= status_kib("VmRSS") + 64


def jobs(count: int, payload_size: int) -> Iterator[Job]:
    for i in range(count):
        # A distinct 1 KiB bytes object per job (not one shared object).
        yield Job(i, i.to_bytes(8, "little") * (payload_size // 8), Delayed(0))


async def main(count: int, mode: str, payload_size: int) -> dict[str, object]:
    bounded = mode == "bounded"
    pipe = Pipeline(workers=8, capacity=10, executor="inline", progress=False,
                    trace=not bounded, keep_results=not bounded)
    # Start-up includes one job through the pipeline: tasks, futures, first allocations.
    async with pipe:
        await pipe.submit(Job(-1, bytes(payload_size), Delayed(0)))
        await pipe.wait_drained()
        gc.collect()
        rss_start = status_kib("VmRSS")
        hwm_start = status_kib("VmHWM")
        reset = reset_peak()
        started = time.perf_counter()
        await pipe.submit_many(jobs(count, payload_size))
    elapsed = time.perf_counter() - started
    assert pipe.report is not None and pipe.report.succeeded == count + 1, pipe.report
    hwm_end = status_kib("VmHWM")
    return {
        "jobs": count,
        "mode": mode,
        "payload": payload_size,
        "rss_start_kib": rss_start,
        "hwm_start_kib": hwm_start,
        "hwm_end_kib": hwm_end,
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "peak_reset": reset,
        "growth_kib": hwm_end - rss_start,
        "trace_events": len(pipe.trace.events),
        "results_kept": len(pipe.results),
        "seconds": elapsed,
        "jobq": jobq.__file__,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--mode", choices=("bounded", "trace"), default="bounded")
    parser.add_argument("--payload", type=int, default=KIB)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.jobs, args.mode, args.payload))))
