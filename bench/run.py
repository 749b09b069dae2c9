"""jobq benchmarks: one JSON line per measurement (see bench/README.md).

    python bench/run.py              # everything, a few minutes
    python bench/run.py --quick      # smaller workloads, fewer rounds: a smoke run
    python bench/run.py --only pipeline --only virtual

Sections (--only NAME): pipeline, uvloop, cpu, virtual, memory, io, notebooks.

The machine is shared, so every section runs its variants in ALTERNATING rounds and
ROTATES their order every round (A B C, B C A, C A B, ...: no variant always runs first,
right after a gc or a neighbour's burst), and reports median, min and max over the rounds;
each variant is also given as a ratio to the section's baseline *of the same round*
(median/min/max of those per-round ratios), which cancels most of the drift caused by the
neighbours.

Load: the 1-minute load average is read before and after every single measurement. A
figure any of whose measurements saw a load average above 1 (`LOAD_LIMIT`) is printed as
usual, with `"valid_for_targets": false`: it says how jobq compares under load, not
whether a target is met on a quiet machine.

To measure a patched copy of jobq: PYTHONPATH=/tmp/jobq-patched python bench/run.py
(the `jobq` field of the first line says which copy was imported).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
try:
    import jobq
except ImportError:  # not installed: use the checkout this file belongs to
    sys.path.append(str(ROOT))
    import jobq

from jobq import CpuBound, Delayed, Job, Pipeline  # noqa: E402

sys.path.insert(0, str(HERE))
from floors import aiojobs_floor, floor_pipeline, floor_yielding, pool_floor  # noqa: E402

SECTIONS = ("pipeline", "uvloop", "cpu", "virtual", "memory", "io", "notebooks")


# -- reporting --------------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def emit(
    name: str,
    unit: str,
    values: Sequence[float],
    *,
    baseline: str | None = None,
    ratios: Sequence[float] | None = None,
    target: str | None = None,
    met: bool | None = None,
    **extra: Any,
) -> dict[str, Any]:
    s = summary(values)
    line: dict[str, Any] = {"name": name, "unit": unit, **{k: round(v, 6) for k, v in s.items()},
                            "n": len(values)}
    if baseline is not None and ratios is not None:
        r = summary(ratios)
        line["baseline"] = baseline
        line["ratio"] = round(r["median"], 4)
        line["ratio_min"] = round(r["min"], 4)
        line["ratio_max"] = round(r["max"], 4)
    line["target"] = target
    line["met"] = met
    line.update(extra)
    if target is not None and line.get("valid_for_targets") is False:
        line["note_load"] = (f"load average up to {line['loadavg_max']} (> {LOAD_LIMIT}): "
                             "not valid for the target")
    print(json.dumps(line), flush=True)
    return line


LOAD_LIMIT = 1.0  # a 1-minute load average above this makes a figure not valid for targets

# Load averages seen around each measurement, by measurement name: (before, after) pairs.
LOADS: dict[str, list[tuple[float, float]]] = {}


def load1() -> float:
    return os.getloadavg()[0]


def measured(name: str, measure: Callable[[], Any]) -> Any:
    """Run one measurement, recording the load average before and after it."""
    gc.collect()
    before = load1()
    value = measure()
    LOADS.setdefault(name, []).append((round(before, 2), round(load1(), 2)))
    return value


def load_fields(*names: str) -> dict[str, Any]:
    """The load seen by the measurements behind one figure (and by those it is a ratio to)."""
    pairs = [pair for name in names for pair in LOADS.get(name, [])]
    if not pairs:
        return {}
    highest = max(max(pair) for pair in pairs)
    return {"loadavg_max": highest, "valid_for_targets": highest <= LOAD_LIMIT}


def rounds_of(variants: dict[str, Callable[[], Any]], rounds: int,
              section: str = "") -> dict[str, list[Any]]:
    """Run every variant once per round, rotating the order each round: A B C, B C A, ..."""
    out: dict[str, list[Any]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(measured(f"{section}.{name}", variants[name]))
    return out


def per_round(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


def run_on(loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
           coro: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


# -- 1. pipeline overhead ---------------------------------------------------------------

WORKERS, CAPACITY = 8, 10


async def jobq_pipeline(jobs: Sequence[Job], **options: Any) -> int:
    """The defaults (trace kept, metrics, results kept): one `submit` per job, whose handle
    is returned and dropped (not held), and the metrics asked for at the end - all timed."""
    async with Pipeline(workers=WORKERS, capacity=CAPACITY, executor="inline",
                        progress=False, **options) as pipe:
        for job in jobs:
            await pipe.submit(job)
    assert pipe.report is not None and pipe.report.lost == 0
    assert pipe.metrics().jobs == len(jobs)
    return pipe.report.succeeded


async def jobq_lean(jobs: Sequence[Job]) -> int:
    """Lean settings: no trace kept, no results kept, `submit_many` (no handles)."""
    async with Pipeline(workers=WORKERS, capacity=CAPACITY, executor="inline",
                        progress=False, trace=False, keep_results=False) as pipe:
        await pipe.submit_many(jobs)
    assert pipe.report is not None and pipe.report.lost == 0
    return pipe.report.succeeded


def throughput(
    loop_factory: Any, make: Callable[[], Coroutine[Any, Any, int]], n: int
) -> tuple[float, float]:
    """(jobs per wall second, jobs per CPU second of this process).

    The loop never idles here (every job is ready at once), so wall time is CPU time plus
    the time the neighbours on this shared machine took the core from us; CPU time is far
    steadier under such load, and it is what an optimisation of jobq's code changes.
    """

    async def timed() -> tuple[float, float]:
        started, cpu_started = time.perf_counter(), time.process_time()
        done = await make()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        assert done == n, (done, n)
        return n / elapsed, n / cpu

    result: tuple[float, float] = run_on(loop_factory, timed())
    return result


def pipeline_variants(
    jobs: list[Job], loop_factory: Any
) -> dict[str, Callable[[], tuple[float, float]]]:
    n = len(jobs)
    return {
        "floor": lambda: throughput(loop_factory, lambda: floor_pipeline(
            jobs, workers=WORKERS, capacity=CAPACITY), n),
        "floor_yielding": lambda: throughput(loop_factory, lambda: floor_yielding(
            jobs, workers=WORKERS, capacity=CAPACITY), n),
        "pool": lambda: throughput(loop_factory, lambda: pool_floor(
            jobs, workers=WORKERS, capacity=CAPACITY), n),
        "jobq_full": lambda: throughput(loop_factory, lambda: jobq_pipeline(jobs), n),
        "jobq_lean": lambda: throughput(loop_factory, lambda: jobq_lean(jobs), n),
        "aiojobs": lambda: throughput(loop_factory, lambda: aiojobs_floor(
            jobs, workers=WORKERS, capacity=CAPACITY), n),
    }


def emit_throughput(section: str, loop: str, res: dict[str, list[tuple[float, float]]],
                    n: int, targets: dict[str, tuple[float, str]]) -> None:
    """One line per variant in jobs per wall second (the headline, and what targets are
    judged on) and one in jobs per CPU second (steadier on a loaded machine)."""
    for index, suffix, unit in ((0, "", "jobs/s"), (1, ".cpu", "jobs per CPU-s")):
        base = [x[index] for x in res["floor"]]
        for name, runs in res.items():
            values = [x[index] for x in runs]
            ratios = per_round(values, base)
            goal = targets.get(name)
            where = "asyncio" if name.endswith("_asyncio") else loop
            emit(f"{section}.{name}{suffix}", unit, values, baseline=f"{section}.floor{suffix}",
                 ratios=ratios, target=None if goal is None else goal[1],
                 met=None if goal is None else statistics.median(ratios) >= goal[0],
                 jobs=n, loop=where, **load_fields(f"{section}.{name}", f"{section}.floor"))


PIPELINE_JOBS: int | None = None  # --jobs


def bench_pipeline(quick: bool, rounds: int) -> None:
    n = PIPELINE_JOBS or (10_000 if quick else 100_000)
    jobs = [Job(i, b"", Delayed(0)) for i in range(n)]
    res = rounds_of(pipeline_variants(jobs, None), rounds, "pipeline")
    # Ratios are judged on CPU time (steadier on a shared machine); wall lines are printed too.
    emit_throughput("pipeline", "asyncio", res, n, {
        "jobq_full": (1.5, "P1: >= 1.5x floor (defaults: trace, metrics, results, handles)"),
        "jobq_lean": (2.0, "P1: >= 2.0x floor (trace=False, keep_results=False)")})


def bench_uvloop(quick: bool, rounds: int) -> None:
    try:
        import uvloop
    except ImportError:
        emit("uvloop.jobq_full", "jobs/s", [0.0], target=">= 1.5x floor on uvloop", met=False,
             skipped="uvloop is not installed (pip install -e '.[uvloop]')")
        return
    n = PIPELINE_JOBS or (10_000 if quick else 100_000)
    jobs = [Job(i, b"", Delayed(0)) for i in range(n)]
    variants = pipeline_variants(jobs, uvloop.new_event_loop)
    del variants["jobq_lean"], variants["aiojobs"]
    # asyncio's floor in the same rounds: how much uvloop itself gives.
    variants["floor_asyncio"] = pipeline_variants(jobs, None)["floor"]
    res = rounds_of(variants, rounds, "uvloop")
    emit_throughput("uvloop", "uvloop", res, n, {
        "jobq_full": (1.5, "P1u: >= 1.5x floor (the floor on uvloop too)")})


# -- 2. CPU offload ---------------------------------------------------------------------

JOB_SECONDS = 0.050
CPU_JOBS, CPU_WORKERS = 16, 4


def calibrate(seconds: float) -> int:
    """Iterations of jobq.cpu_work that take about `seconds` here (best of a few tries)."""
    probe = 200_000
    best = min(_time_cpu(probe) for _ in range(3))
    return max(1, round(probe * seconds / best))


def _time_cpu(iterations: int) -> float:
    started = time.perf_counter()
    jobq.cpu_work(iterations, b"")
    return time.perf_counter() - started


def serial_seconds(iterations: int) -> float:
    started = time.perf_counter()
    for _ in range(CPU_JOBS):
        jobq.cpu_work(iterations, b"")
    return time.perf_counter() - started


async def _heartbeat(lateness: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.010)
        lateness.append((time.perf_counter() - started - 0.010) * 1000)


def cpu_run(iterations: int, executor: Any) -> tuple[float, list[float]]:
    """Wall seconds of 16 CpuBound jobs through the pipeline, and the heartbeat lateness (ms)."""
    jobs = [Job(i, b"", CpuBound(iterations)) for i in range(CPU_JOBS)]

    async def main() -> tuple[float, list[float]]:
        lateness: list[float] = []
        stop = asyncio.Event()
        beat = asyncio.create_task(_heartbeat(lateness, stop))
        await asyncio.sleep(0.02)  # the heartbeat is running before the first job
        started = time.perf_counter()
        async with Pipeline(workers=CPU_WORKERS, capacity=CAPACITY, executor=executor,
                            progress=False) as pipe:
            await pipe.submit_many(jobs)
        elapsed = time.perf_counter() - started
        stop.set()
        await beat
        assert pipe.report is not None and pipe.report.succeeded == CPU_JOBS, pipe.report
        return elapsed, lateness

    result: tuple[float, list[float]] = asyncio.run(main())
    return result


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = q / 100 * (len(ordered) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def warm_process_pool() -> tuple[ProcessPoolExecutor, float]:
    """The pool `executor="process"` would build (forkserver, min(workers, cores) processes),
    started and warmed up before the timed region. Returns it and its start-up seconds."""
    import multiprocessing

    workers = max(1, min(CPU_WORKERS, os.cpu_count() or 1))
    started = time.perf_counter()
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
    # One small task per process at once, so every process is started and has imported jobq.
    futures = [pool.submit(jobq.cpu_work, 300_000, b"") for _ in range(workers)]
    for f in futures:
        f.result()
    return pool, time.perf_counter() - started


def bench_cpu(quick: bool, rounds: int) -> None:
    iterations = calibrate(JOB_SECONDS)
    pool, startup = warm_process_pool()
    try:
        walls: dict[str, list[float]] = {"serial": [], "process": [], "process_cold": [],
                                         "thread": [], "inline": []}
        lags: dict[str, list[list[float]]] = {k: [] for k in walls if k != "serial"}
        order: list[tuple[str, Any]] = [("serial", None), ("process", pool),
                                        ("process_cold", "process"), ("thread", "thread"),
                                        ("inline", "inline")]
        for r in range(rounds):
            shift = r % len(order)
            for name, executor in order[shift:] + order[:shift]:
                if name == "serial":
                    walls["serial"].append(measured("cpu.serial",
                                                    lambda: serial_seconds(iterations)))
                    continue
                wall, lateness = measured(f"cpu.{name}",
                                          lambda ex=executor: cpu_run(iterations, ex))
                walls[name].append(wall)
                lags[name].append(lateness)
    finally:
        pool.shutdown()
    serial = walls["serial"]
    common = {"jobs": CPU_JOBS, "workers": CPU_WORKERS, "iterations": iterations,
              "cores": os.cpu_count()}
    emit("cpu.serial", "s", serial, baseline="cpu.serial", ratios=[1.0] * len(serial),
         note="16 x cpu_work in this process, no pipeline", **common)
    emit("cpu.process_pool_startup", "s", [startup],
         note="forkserver pool of min(4, cores) processes, started and warmed once; "
              "excluded from cpu.process", **common)
    targets = {"process": 1.8}
    for name in ("process", "process_cold", "thread", "inline"):
        speedups = per_round(serial, walls[name])  # > 1: faster than serial
        p50 = [percentile(x, 50) for x in lags[name]]
        p99 = [percentile(x, 99) for x in lags[name]]
        worst = [max(x, default=0.0) for x in lags[name]]
        label = {"process": "warm process pool (start-up excluded)",
                 "process_cold": "executor='process', pool start-up included",
                 "thread": "executor='thread'", "inline": "executor='inline'"}[name]
        goal = targets.get(name)
        emit(f"cpu.{name}.wall", "s", walls[name], baseline="cpu.serial (speed-up = serial/wall)",
             ratios=speedups, target=None if goal is None else f">= {goal}x faster than serial",
             met=None if goal is None else statistics.median(speedups) >= goal, note=label,
             **common, **load_fields(f"cpu.{name}", "cpu.serial"))
        emit(f"cpu.{name}.lag_p50", "ms", p50, note=label)
        emit(f"cpu.{name}.lag_p99", "ms", p99, target="<= 10 ms" if name == "process" else None,
             met=statistics.median(p99) <= 10 if name == "process" else None, note=label,
             samples=sum(len(x) for x in lags[name]), **load_fields(f"cpu.{name}"))
        emit(f"cpu.{name}.lag_max", "ms", worst, note=label)


# -- 3. virtual time --------------------------------------------------------------------


def virtual_jobs(n: int) -> list[Job]:
    rng = random.Random(1)
    # Delays on a microsecond grid, so looptime (which counts whole microseconds) and our
    # clock (exact floats) can agree to far below 1 us.
    return [Job(i, b"", Delayed(round(rng.uniform(0, 60), 6))) for i in range(n)]


async def _run_and_time(jobs: list[Job]) -> tuple[Any, float]:
    result = await jobq.run(jobs, workers=8, executor="inline")
    return result, asyncio.get_running_loop().time()


def run_ours(jobs: list[Job]) -> tuple[float, float, float]:
    started = time.perf_counter()
    result, end = jobq.run_virtual(_run_and_time(jobs))
    wall = time.perf_counter() - started
    assert result.report.succeeded == len(jobs), result.report
    return wall, end, result.metrics.elapsed


def run_looptime(jobs: list[Job], **settings: Any) -> tuple[float, float, float]:
    import looptime

    started = time.perf_counter()
    with asyncio.Runner(loop_factory=lambda: looptime.new_event_loop(start=0.0, **settings)) as r:
        result, end = r.run(_run_and_time(jobs))
    wall = time.perf_counter() - started
    assert result.report.succeeded == len(jobs), result.report
    return wall, end, result.metrics.elapsed


def bench_virtual(quick: bool, rounds: int) -> None:
    n = 2_000 if quick else 10_000
    jobs = virtual_jobs(n)
    runs: dict[str, list[tuple[float, float, float]]] = {"jobq": [], "looptime": [],
                                                         "looptime_default": []}
    for r in range(rounds):
        # The fair setting for this workload: no I/O and no timer that a coroutine has yet
        # to set when the loop goes idle, so the clock may jump after one idle cycle.
        pair: list[tuple[str, Callable[[], tuple[float, float, float]]]] = [
            ("jobq", lambda: run_ours(jobs)),
            ("looptime", lambda: run_looptime(jobs, noop_cycles=1))]
        if r % 2:
            pair.reverse()  # rotate: neither always runs first
        for name, measure in pair:
            runs[name].append(measured(f"virtual.{name}", measure))
        if r < 2:  # looptime's defaults (noop_cycles=42): slow; two rounds are enough
            runs["looptime_default"].append(measured("virtual.looptime_default",
                                                     lambda: run_looptime(jobs)))
    ours, theirs = runs["jobq"], runs["looptime"]
    ends = {k: {round(end, 6) for _, end, _ in v} for k, v in runs.items()}
    lasts = {k: {round(last, 6) for _, _, last in v} for k, v in runs.items()}
    same = len(lasts["jobq"] | lasts["looptime"] | lasts["looptime_default"]) == 1
    speed = per_round([w for w, _, _ in theirs], [w for w, _, _ in ours])
    walls = [w for w, _, _ in ours]
    emit("virtual.looptime", "s", [w for w, _, _ in theirs], baseline="virtual.looptime",
         ratios=[1.0] * len(theirs), jobs=n, settings="noop_cycles=1",
         final_virtual_s=sorted(ends["looptime"]), last_job_end_s=sorted(lasts["looptime"]))
    emit("virtual.looptime_default", "s", [w for w, _, _ in runs["looptime_default"]],
         jobs=n, settings="defaults (noop_cycles=42)",
         last_job_end_s=sorted(lasts["looptime_default"]))
    emit("virtual.jobq", "s", walls, baseline="virtual.looptime (speed-up = looptime/jobq)",
         ratios=speed, target="P3: <= 0.25 s and >= 2x faster than looptime(noop_cycles=1)",
         met=statistics.median(walls) <= 0.25 and statistics.median(speed) >= 2.0, jobs=n,
         **load_fields("virtual.jobq", "virtual.looptime"),
         final_virtual_s=sorted(ends["jobq"]), last_job_end_s=sorted(lasts["jobq"]),
         same_virtual_time=same,
         note="last_job_end_s: the last job's final event; final_virtual_s: loop time after "
              "shutdown (includes the real microseconds of the executor hop that closes the "
              "pool, during which our clock is held)")


# -- 4. memory --------------------------------------------------------------------------


def memory_child(jobs: int, mode: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(HERE / "memory_child.py"), "--jobs", str(jobs), "--mode", mode],
        check=True, capture_output=True, text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def bench_memory(quick: bool, rounds: int) -> None:
    big = 100_000 if quick else 1_000_000
    small = 10_000 if quick else 100_000
    cases = [("bounded", small), ("bounded", big), ("trace", small)]
    # RSS does not depend on CPU contention, so two children run side by side (2 cores);
    # the order within a round still alternates the cases.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        futures = [(case, pool.submit(memory_child, case[1], case[0]))
                   for _ in range(rounds) for case in cases]
        found: dict[tuple[str, int], list[dict[str, Any]]] = {case: [] for case in cases}
        for case, future in futures:
            found[case].append(future.result())
    mib = 1024.0

    def line(case: tuple[str, int], name: str, **extra: Any) -> list[float]:
        runs = found[case]
        growth = [r["growth_kib"] / mib for r in runs]
        # Ratio: peak RSS over the run / RSS at start-up (1.0 = no growth at all).
        ratios = [r["hwm_end_kib"] / r["rss_start_kib"] for r in runs]
        emit(name, "MiB over start-up", growth, baseline="RSS at start-up (ratio = peak/start)",
             ratios=ratios, jobs=case[1], mode=case[0],
             rss_start_mib=round(statistics.median(r["rss_start_kib"] / mib for r in runs), 1),
             peak_reset=all(r["peak_reset"] for r in runs),
             run_seconds=round(statistics.median(r["seconds"] for r in runs), 1), **extra)
        return growth

    base = line(("bounded", small), f"memory.bounded_{small}")
    big_growth = [r["growth_kib"] / mib for r in found[("bounded", big)]]
    extra = statistics.median(big_growth) - statistics.median(base)
    line(("bounded", big), f"memory.bounded_{big}",
         target=f"<= 10 MiB over start-up and not growing with the job count "
                f"(<= 2 MiB more than {small} jobs)",
         met=statistics.median(big_growth) <= 10.0 and extra <= 2.0,
         more_than_small_mib=round(extra, 3))
    kept = line(("trace", small), f"memory.trace_kept_{small}",
                note="trace and results kept (the default): grows with the job count",
                trace_events=found[("trace", small)][0]["trace_events"])
    per_job = [g * mib * 1024 / small for g in kept]
    emit(f"memory.trace_kept_{small}.per_job", "bytes per job", per_job,
         target="P4: <= 250 bytes per job with trace and results kept",
         met=statistics.median(per_job) <= 250, jobs=small,
         note="peak RSS growth / jobs (RSS does not depend on the load)")


# -- 5. real I/O ------------------------------------------------------------------------

IO_JOBS, IO_WORKERS = 2_000, 32


async def bare_aiohttp(url: str, n: int) -> float:
    """The reference: one ClientSession, Semaphore(32), n GETs of `url`, bodies read."""
    import aiohttp

    slots = asyncio.Semaphore(IO_WORKERS)

    async def one(session: aiohttp.ClientSession) -> None:
        async with slots, session.get(url) as response:
            await response.read()

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session) for _ in range(n)))
    return time.perf_counter() - started


async def bare_with_client(url: str, n: int) -> float:
    """The same Semaphore(32) loop, each request through jobq's own HttpClient.fetch: what
    the client's limits cost (read timeout, size cap, FetchResult), without the pipeline."""
    from jobq.http import HttpClient

    slots = asyncio.Semaphore(IO_WORKERS)
    client = HttpClient()

    async def one() -> None:
        async with slots:
            await client.fetch(url)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    elapsed = time.perf_counter() - started
    await client.aclose()
    return elapsed


async def jobq_io(url: str, n: int) -> float:
    from jobq import AsyncIo

    jobs = [Job(i, b"", AsyncIo(url)) for i in range(n)]
    started = time.perf_counter()
    async with Pipeline(workers=IO_WORKERS, capacity=CAPACITY, executor="inline",
                        progress=False) as pipe:
        for job in jobs:
            await pipe.submit(job)
    elapsed = time.perf_counter() - started
    assert pipe.report is not None and pipe.report.succeeded == n, pipe.report
    return elapsed


def bench_io(quick: bool, rounds: int) -> None:
    from jobq.testing import LocalServer

    n = 500 if quick else IO_JOBS
    with LocalServer() as server:
        url = server.url("/ok")
        res = rounds_of({"aiohttp": lambda: asyncio.run(bare_aiohttp(url, n)),
                         "client": lambda: asyncio.run(bare_with_client(url, n)),
                         "jobq": lambda: asyncio.run(jobq_io(url, n))}, rounds, "io")
    rates = {k: [n / w for w in v] for k, v in res.items()}
    emit("io.aiohttp", "jobs/s", rates["aiohttp"], baseline="io.aiohttp",
         ratios=[1.0] * rounds, jobs=n, note="aiohttp.ClientSession + Semaphore(32), one run")
    emit("io.client", "jobs/s", rates["client"], baseline="io.aiohttp",
         ratios=per_round(rates["client"], rates["aiohttp"]), jobs=n,
         note="the same loop, each request through jobq.http.HttpClient.fetch (no pipeline)")
    emit("io.jobq_vs_client", "ratio", per_round(rates["jobq"], rates["client"]), jobs=n,
         note="jobq's pipeline against the same HttpClient in a bare loop: the pipeline's "
              "own share of the gap")
    ratios = per_round(rates["jobq"], rates["aiohttp"])
    emit("io.jobq", "jobs/s", rates["jobq"], baseline="io.aiohttp", ratios=ratios,
         target="P8: >= 0.9x a bare aiohttp + Semaphore(32) loop",
         met=statistics.median(ratios) >= 0.9, jobs=n, workers=IO_WORKERS,
         **load_fields("io.jobq", "io.aiohttp"))


# -- 6. notebooks -----------------------------------------------------------------------


def bench_notebooks(quick: bool, rounds: int) -> None:
    books = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not books:
        emit("notebooks.nbval", "s", [0.0], target="<= 60 s", met=False,
             skipped="no notebooks in notebooks/")
        return
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "notebooks", "-p", "no:cacheprovider", "-q"],
        cwd=ROOT, capture_output=True, text=True,
    )
    wall = time.perf_counter() - started
    tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    emit("notebooks.nbval", "s", [wall], target="<= 60 s", met=wall <= 60,
         notebooks=len(books), pytest_exit=proc.returncode, pytest_summary=" ".join(tail),
         note="one run (nbval of every notebook), not repeated")


# -- main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small workloads, 2 rounds")
    parser.add_argument("--only", action="append", choices=SECTIONS, metavar="NAME",
                        help=f"run only this section (repeatable): {', '.join(SECTIONS)}")
    parser.add_argument("--rounds", type=int, help="override the rounds of every section")
    parser.add_argument("--jobs", type=int, help="jobs per run in pipeline and uvloop")
    args = parser.parse_args(argv)
    global PIPELINE_JOBS
    PIPELINE_JOBS = args.jobs
    chosen = args.only or list(SECTIONS)
    # Rounds per section in a full run, chosen to fit the whole run in about 6 minutes.
    full_rounds = {"pipeline": 5, "uvloop": 4, "cpu": 5, "virtual": 5, "memory": 2, "io": 5,
                   "notebooks": 1}
    print(json.dumps({
        "name": "machine", "nproc": os.cpu_count(), "python": platform.python_version(),
        "implementation": platform.python_implementation(), "platform": platform.platform(),
        "jobq": jobq.__file__, "quick": args.quick, "loadavg_start": os.getloadavg(),
    }), flush=True)
    started = time.perf_counter()
    for name in SECTIONS:
        if name not in chosen:
            continue
        rounds = args.rounds or (2 if args.quick else full_rounds[name])
        if args.quick and name == "notebooks" and not args.only:
            continue  # the notebooks take a while: a smoke run only does them if asked
        globals()[f"bench_{name}"](args.quick, rounds)
    total = round(time.perf_counter() - started, 1)
    print(json.dumps({"name": "total", "unit": "s", "seconds": total,
                      "loadavg_end": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
