"""Issue 12's Redis benchmark: jobq over Redis Streams beside the hand-written floor and arq,
on one private redis-server, in one run. One JSON line per figure on stdout (the same fields
as bench/run.py, so bench/table.py renders them too), a Markdown table on stderr.

    pip install -e '.[dev,bench]'                # redis-py, arq (apt-get install redis-server)
    python bench/redis_bench.py > bench/redis.jsonl           # everything, ~3-5 minutes
    python bench/redis_bench.py --quick                       # smaller, 2 rounds (~1 min)
    python bench/redis_bench.py --only noop --rounds 5
    python bench/redis_bench.py --only cpu                    # 1 vs 2 processes, CPU jobs

Variants (no-op jobs, end to end: from the first job sent to the last result stored, worker
processes started and ready before the clock starts, the producer in this process):

    floor          bench/redis_floor.py: pipelined XADD; XREADGROUP COUNT 100; XACK + one
                   HSET per result in one MULTI/EXEC (~2 commands a job)
    arq_tuned      bench/redis_arq.py: arq with max_jobs=8, poll_delay=5 ms
    arq_defaults   arq's defaults (max_jobs=10, poll_delay=0.5 s), fewer jobs
    jobq           `run_jobq` below: jobq's own Redis Streams mode (jobq.RedisPipeline and
                   `python -m jobq worker`), its defaults but 100 slots per worker process
                   (--jobq-slots); "skipped", with the reason, where it is not available
    jobq_lean      the same without trace events (producer and workers) and without the
                   producer keeping every result: what the trace costs

each with 1 and 2 worker processes. CPU mode (`--only cpu`): CPU jobs of `jobq.work.cpu_work`
(iterations calibrated to about --cpu-ms each), the floor (one entry per read: one slot per
process) and jobq with 1 and 2 worker processes; the figure is the speed-up from 1 to 2
processes, per round.

How it is measured, as bench/run.py does: every round runs all variants once, in an order
that ROTATES from round to round; each figure is the median, min and max over the rounds, and
its ratio to the floor is computed per round (the floor with the same number of processes,
measured in the same round), then summarised. Before every run the server is emptied
(FLUSHALL, then its append-only file rewritten, so no rewrite starts in the middle of a run)
and every run has a queue name of its own. The 1-minute load average is read before and
after every run; a figure with any reading above 1 has `"valid_for_targets": false`. The
bench itself runs up to four busy processes (producer, two workers, redis-server) on the two
cores, which lifts the 1-minute average too; so every line also says which share of the
machine's CPU time the run's own processes used (`ours_cpu_share`) and which share went to
everything else (`others_cpu_share`, median and max over the rounds, from /proc): that one is
the neighbours, measured; `others_quiet` is true when it stayed <= 10 % in every round.

Targets (issue 12): jobq with 1 process >= 0.5x the floor and >= 10x arq (tuned), no-op jobs;
CPU jobs >= 1.7x from 1 to 2 processes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
try:
    import jobq
except ImportError:  # not installed: use the checkout this file belongs to
    sys.path.append(str(ROOT))
    import jobq

import redis  # noqa: E402
from redis_arq import run_arq  # noqa: E402
from redis_floor import (  # noqa: E402
    URL_ENV,
    per_job,
    run_floor,
    server_info,
    snapshot,
    stop_processes,
)
from run import LOAD_LIMIT, emit, load_fields, measured, per_round  # noqa: E402

from jobq.testing import RedisServer  # noqa: E402

PROCESSES = (1, 2)
# The neighbours were quiet in every round of a figure if they took at most this share of the
# machine's CPU time in each (`others_quiet`; an addition to bench/run.py's load rule).
OTHERS_LIMIT = 0.10


class Unavailable(Exception):
    """A variant that cannot run here (e.g. jobq's Redis mode is not written yet)."""


# -- the slot for jobq ------------------------------------------------------------------
#
# >>> JOBQ VARIANT: jobq's Redis Streams mode (issue 12) - adjust here if its API changes. <<<
#
# Like the other variants: `processes` worker processes, started and ready (each waits in a
# blocking read) before the clock starts; then jobq's producer in this process,
# `jobq.redis_producer.RedisPipeline`, times from the first job submitted to the moment it
# has received the last result (`wait_drained()`); `shutdown()` and its report (lost must be
# 0) come after the clock. Unavailable(reason) skips the variant with that reason.
#
# The worker processes: `python -m jobq worker --queue NAME --workers N` (the URL in
# $JOBQ_REDIS_URL) when the CLI has that command, else - and for the lean variant, which
# turns the trace events off, unless the CLI has `--no-events` -
# `python bench/redis_bench.py jobq-worker`, a few lines
# around `jobq.redis_worker.RedisWorker` (what the CLI runs). No-op jobs are
# `Job(i, b"", Delayed(0))` (like bench/run.py's no-op, each yields once), with `slots`
# (--jobq-slots, default JOBQ_SLOTS) per process; CPU jobs get one slot per process and run
# inline in the worker process - as the floor's do - so that N processes use N cores.

JOBQ_SLOTS = 100  # no-op jobs: the floor reads 100 entries per call; jobq reads free slots


def jobq_redis_api() -> tuple[Any, Any]:
    """(jobq.redis_producer, jobq.redis_worker), or Unavailable saying what is missing."""
    try:
        producer = importlib.import_module("jobq.redis_producer")
        worker = importlib.import_module("jobq.redis_worker")
    except ImportError as error:
        raise Unavailable(f"jobq's Redis mode cannot be imported ({error})") from None
    for module, name in ((producer, "RedisPipeline"), (worker, "RedisWorker")):
        if not hasattr(module, name):
            raise Unavailable(f"{module.__name__} has no {name}")
    return producer, worker


@functools.cache
def jobq_cli_worker() -> str | None:
    """`python -m jobq worker --help`, if jobq's CLI has that command (else None)."""
    shown = subprocess.run([sys.executable, "-m", "jobq", "worker", "--help"],
                           capture_output=True, text=True, timeout=60)
    ok = shown.returncode == 0 and "--queue" in shown.stdout and "--redis" in shown.stdout
    return shown.stdout if ok else None


def jobq_worker_main(queue: str, slots: int, executor: str, events: bool) -> None:
    """A jobq worker process without the CLI: RedisWorker until SIGTERM, then its report."""
    import asyncio
    import signal

    from jobq.redis_worker import RedisWorker

    async def work() -> Any:
        worker = RedisWorker(os.environ[URL_ENV], queue, workers=slots,
                             executor=executor,  # type: ignore[arg-type]
                             events=events)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        return await worker.run()

    report = asyncio.run(work())
    print(json.dumps({"jobs": report.succeeded, "dead_lettered": report.dead_lettered,
                      "reclaimed": report.reclaimed}), flush=True)


def wait_for_readers(client: redis.Redis, count: int, procs: list[subprocess.Popen[str]],
                     limit_s: float = 30.0) -> None:
    """Until `count` clients wait in a blocking read: the workers, idle and reading.

    (Not "consumers in the group": Redis 7 adds a consumer to the group only when a read
    returns entries, not while it blocks on an empty stream.)"""
    deadline = time.monotonic() + limit_s
    while True:
        blocked = int(server_info(client, "clients")["blocked_clients"])
        if blocked >= count:
            return
        dead = [p.args for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"jobq workers not ready: {blocked} of {count} reading; "
                               f"exited: {dead}")
        time.sleep(0.02)


async def jobq_produce(url: str, queue: str, jobs: list[Any], pipeline: Any,
                       options: dict[str, Any],
                       pids: list[int]) -> tuple[float, Any, dict[str, float]]:
    """Submit `jobs` and wait for every result: (seconds, the shutdown report, per job)."""
    stats = redis.Redis.from_url(url)
    pipe = pipeline(url, queue, **options)
    await pipe.start()  # connected and reading results before the clock starts
    try:
        before = snapshot(stats, [], pids)
        started = time.perf_counter()
        await pipe.submit_many(jobs)
        await pipe.wait_drained()  # this producer has every result
        seconds = time.perf_counter() - started
        after = snapshot(stats, [], pids)
    except BaseException:
        await pipe.shutdown(drain_timeout=0.0)  # stop waiting: something went wrong
        raise
    finally:
        stats.close()
    report = await pipe.shutdown()  # after the clock: its report (lost) is read from Redis
    return seconds, report, per_job(before, after, len(jobs))


def run_jobq(url: str, queue: str, jobs: int, processes: int, *, kind: str = "noop",
             iterations: int = 0, lean: bool = False, slots: int = JOBQ_SLOTS,
             timeout: float = 300.0) -> dict[str, Any]:
    """jobq's Redis Streams mode, end to end, like `run_floor`; Unavailable if not there.

    lean: no trace events on either side and no results kept by the producer."""
    import asyncio

    producer, _worker = jobq_redis_api()
    from jobq import CpuBound, Delayed, Job

    slots, executor = (1, "inline") if kind == "cpu" else (slots, "inline")
    cli = jobq_cli_worker()
    if cli is not None and ("--no-events" in cli or not lean) and (
            "--executor" in cli or kind != "cpu"):
        # The URL in $JOBQ_REDIS_URL (set below), not on the command line: see --help.
        argv = [sys.executable, "-m", "jobq", "worker", "--queue", queue,
                "--workers", str(slots)]
        if "--no-progress" in cli:
            argv += ["--no-progress"]
        if "--executor" in cli:
            argv += ["--executor", executor]
        if lean:
            argv += ["--no-events"]
        via = "python -m jobq worker"
    else:
        argv = [sys.executable, str(HERE / "redis_bench.py"), "jobq-worker", "--queue", queue,
                "--slots", str(slots), "--executor", executor]
        argv += ["--no-events"] if lean else []
        via = "bench/redis_bench.py jobq-worker (jobq.redis_worker.RedisWorker)"
    job_type = CpuBound(iterations) if kind == "cpu" else Delayed(0)
    batch = [Job(i, b"", job_type) for i in range(jobs)]  # built before the clock
    options: dict[str, Any] = {"keep_results": False, "events": False} if lean else {}
    client = redis.Redis.from_url(url)
    with contextlib.ExitStack() as stack:
        # Their stderr (start and stop messages) into files, shown only if something fails.
        logs = [stack.enter_context(tempfile.TemporaryFile("w+")) for _ in range(processes)]
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True,
                                  env={**os.environ, URL_ENV: url, "JOBQ_REDIS_URL": url})
                 for log in logs]
        try:
            wait_for_readers(client, processes, procs)
            seconds, report, commands = asyncio.run(asyncio.wait_for(
                jobq_produce(url, queue, batch, producer.RedisPipeline, options,
                             [proc.pid for proc in procs]), timeout))
            assert report.lost == 0 and report.succeeded == jobs, report
        except BaseException:
            stop_processes(procs)
            for log in logs:
                log.seek(0)
                print(log.read()[-2000:], file=sys.stderr)
            raise
        finally:
            stop_processes(procs)
            client.close()
    return {"jobs": jobs, "seconds": seconds, "jobs_per_s": jobs / seconds, **commands,
            "workers_via": via, "slots_per_process": slots, "executor": executor,
            "producer_options": options or "defaults"}


# -- one run of a variant ---------------------------------------------------------------


def reset(client: redis.Redis) -> None:
    """An empty server before every run: FLUSHALL, then rewrite the append-only file (now
    tiny) and wait for it, so no automatic rewrite (a fork) starts in the middle of a run."""
    client.flushall()
    if server_info(client, "persistence").get("aof_enabled"):
        while server_info(client, "persistence")["aof_rewrite_in_progress"]:
            time.sleep(0.01)  # one that had started before: BGREWRITEAOF would be refused
        client.bgrewriteaof()  # type: ignore[no-untyped-call]  # redis-py: untyped
        while True:
            info = server_info(client, "persistence")
            if not (info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]):
                break
            time.sleep(0.01)


Runner = Callable[[str, str, int], dict[str, Any]]  # (url, queue, processes) -> result


def calibrate(seconds: float) -> int:
    """Iterations of jobq.work.cpu_work that take about `seconds` here (best of 3 probes)."""
    from jobq.work import cpu_work

    probe = 200_000
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        cpu_work(probe, b"")
        best = min(best, time.perf_counter() - started)
    return max(1, round(probe * seconds / best))


def variants(args: argparse.Namespace, mode: str, iterations: int) -> dict[str, tuple[int,
                                                                                     Runner]]:
    """name -> (jobs per run, runner) for one mode ("noop" or "cpu")."""
    if mode == "cpu":
        n = args.cpu_jobs
        return {
            "floor_cpu": (n, lambda url, q, p: run_floor(url, q, n, p, kind="cpu",
                                                         iterations=iterations)),
            "jobq_cpu": (n, lambda url, q, p: run_jobq(url, q, n, p, kind="cpu",
                                                       iterations=iterations)),
        }
    return {
        "floor": (args.jobs, lambda url, q, p: run_floor(url, q, args.jobs, p)),
        "arq_tuned": (args.arq_jobs, lambda url, q, p: run_arq(url, q, args.arq_jobs, p,
                                                               settings="tuned")),
        "arq_defaults": (args.arq_default_jobs, lambda url, q, p: run_arq(
            url, q, args.arq_default_jobs, p, settings="defaults")),
        "jobq": (args.jobq_jobs or args.jobs, lambda url, q, p: run_jobq(
            url, q, args.jobq_jobs or args.jobs, p, slots=args.jobq_slots)),
        "jobq_lean": (args.jobq_jobs or args.jobs, lambda url, q, p: run_jobq(
            url, q, args.jobq_jobs or args.jobs, p, lean=True, slots=args.jobq_slots)),
    }


def bench_mode(server: RedisServer, args: argparse.Namespace, mode: str) -> list[dict[str, Any]]:
    """Every variant x processes, in rotating rounds; emits the lines, returns them."""
    iterations = calibrate(args.cpu_ms / 1000) if mode == "cpu" else 0
    chosen = variants(args, mode, iterations)
    client = redis.Redis.from_url(server.url)
    cases = [(name, p) for name in chosen for p in PROCESSES]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {case: [] for case in cases}
    skipped: dict[str, str] = {}
    for r in range(args.rounds):
        shift = r % len(cases)
        for name, p in cases[shift:] + cases[:shift]:
            if name in skipped:
                continue
            reset(client)
            queue = f"{name}-{p}-{r}-{uuid.uuid4().hex[:6]}"
            runner = chosen[name][1]

            def measure(runner: Runner = runner, queue: str = queue,
                        p: int = p) -> dict[str, Any]:
                return runner(server.url, queue, p)

            try:
                result = measured(f"redis.{name}.p{p}", measure)
            except Unavailable as why:
                skipped[name] = str(why)
                continue
            runs[(name, p)].append(result)
    client.close()
    return emit_mode(mode, chosen, runs, skipped, iterations, args)


def emit_mode(mode: str, chosen: dict[str, tuple[int, Runner]],
              runs: dict[tuple[str, int], list[dict[str, Any]]], skipped: dict[str, str],
              iterations: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    floor = "floor_cpu" if mode == "cpu" else "floor"
    lines: list[dict[str, Any]] = []
    for (name, p), results in runs.items():
        jobs = chosen[name][0]
        common: dict[str, Any] = {"variant": name, "processes": p, "jobs": jobs, "mode": mode}
        if mode == "cpu":
            common.update(iterations=iterations, cpu_ms=args.cpu_ms)
        if name in skipped:
            line = emit(f"redis.{name}.p{p}", "jobs/s", [0.0], skipped=skipped[name], **common)
            lines.append(line)
            continue
        rates = [x["jobs_per_s"] for x in results]
        extra: dict[str, Any] = {
            key: round(statistics.median(x[key] for x in results), 2)
            for key in ("seconds", "commands_per_job", "redis_us_per_job", "ours_cpu_share",
                        "others_cpu_share") if key in results[0]}
        if "others_cpu_share" in results[0]:
            extra["others_cpu_share_max"] = worst = max(x["others_cpu_share"] for x in results)
            extra["others_quiet"] = worst <= OTHERS_LIMIT
        # How the variant ran (the same in every round).
        extra.update({key: results[0][key] for key in (
            "workers_via", "slots_per_process", "executor", "producer_options")
            if key in results[0]})
        target, met = None, None
        base = [x["jobs_per_s"] for x in runs[(floor, p)]]
        ratios = per_round(rates, base) if len(base) == len(rates) else None
        if name == "jobq" and p == 1 and ratios is not None:
            arq = [x["jobs_per_s"] for x in runs.get(("arq_tuned", 1), [])]
            vs_arq = per_round(rates, arq) if len(arq) == len(rates) else []
            target = ">= 0.5x the floor and >= 10x arq_tuned (1 process, no-op jobs)"
            met = statistics.median(ratios) >= 0.5 and bool(vs_arq) and \
                statistics.median(vs_arq) >= 10
            extra["ratio_to_arq_tuned"] = round(statistics.median(vs_arq), 2) if vs_arq else None
        line = emit(f"redis.{name}.p{p}", "jobs/s", rates, baseline=f"redis.{floor}.p{p}",
                    ratios=ratios, target=target, met=met, **common, **extra,
                    **load_fields(f"redis.{name}.p{p}", f"redis.{floor}.p{p}"))
        lines.append(line)
    if mode == "cpu":  # the speed-up from 1 to 2 processes, per round
        for name in chosen:
            one, two = runs[(name, 1)], runs[(name, 2)]
            if name in skipped or not one or len(one) != len(two):
                continue
            speed = per_round([x["jobs_per_s"] for x in two], [x["jobs_per_s"] for x in one])
            goal = name.startswith("jobq")
            line = emit(f"redis.{name}.speedup", "x (2 processes / 1)", speed,
                        target=">= 1.7x from 1 to 2 processes" if goal else None,
                        met=statistics.median(speed) >= 1.7 if goal else None, variant=name,
                        mode=mode, jobs=chosen[name][0], iterations=iterations,
                        cpu_ms=args.cpu_ms,
                        **load_fields(f"redis.{name}.p1", f"redis.{name}.p2"))
            lines.append(line)
    return lines


# -- the Markdown table -----------------------------------------------------------------


def table(lines: list[dict[str, Any]]) -> str:
    """variant | 1 process | 2 processes: jobs/s median (min - max), ratio to the floor."""
    cells: dict[str, dict[int, str]] = {}
    speedups: list[str] = []
    reasons: list[str] = []  # why a variant is not available
    for line in lines:
        if line["name"].endswith(".speedup"):
            speedups.append(f"| {line['variant']}: 2 processes / 1 | {line['median']:.2f}x "
                            f"({line['min']:.2f} - {line['max']:.2f}) |")
            continue
        if line.get("skipped"):
            text = "not available"
            reason = f"{line['variant']}: {line['skipped']}"
            if reason not in reasons:
                reasons.append(reason)
        else:
            text = f"{line['median']:,.0f} ({line['min']:,.0f} - {line['max']:,.0f})"
            if "ratio" in line and not line["variant"].startswith("floor"):
                text += f", {line['ratio']:.3f}x floor"
            if line.get("ratio_to_arq_tuned") is not None:
                text += f", {line['ratio_to_arq_tuned']:.1f}x arq_tuned"
        cells.setdefault(line["variant"], {})[line["processes"]] = text
    out = ["| variant | 1 process: jobs/s (min - max) | 2 processes |", "|---|---:|---:|"]
    out += [f"| {name} | {row.get(1, '')} | {row.get(2, '')} |" for name, row in cells.items()]
    out += [f"\nNot available - {reason}" for reason in reasons]
    if speedups:
        out += ["", "| CPU jobs | speed-up (min - max) |", "|---|---:|", *speedups]
    return "\n".join(out)


# -- main -------------------------------------------------------------------------------


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["jobq-worker"]:  # a worker process of the jobq variant (see run_jobq)
        worker = argparse.ArgumentParser(prog="redis_bench.py jobq-worker")
        worker.add_argument("--queue", required=True)
        worker.add_argument("--slots", type=int, required=True)
        worker.add_argument("--executor", default="inline")
        worker.add_argument("--no-events", action="store_true")
        known = worker.parse_args(argv[1:])
        jobq_worker_main(known.queue, known.slots, known.executor, not known.no_events)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, 2 rounds")
    parser.add_argument("--only", action="append", choices=("noop", "cpu"),
                        help="run only this mode (repeatable)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, --quick 2)")
    parser.add_argument("--jobs", type=int, help="no-op jobs per floor run (default 20,000)")
    parser.add_argument("--jobq-jobs", type=int, help="no-op jobs per jobq run (default --jobs)")
    parser.add_argument("--jobq-slots", type=int, default=JOBQ_SLOTS,
                        help=f"slots per jobq worker process, no-op jobs (default {JOBQ_SLOTS})")
    parser.add_argument("--arq-jobs", type=int, help="jobs per tuned arq run (default 2,000)")
    parser.add_argument("--arq-default-jobs", type=int,
                        help="jobs per arq run with arq's defaults (default 300)")
    parser.add_argument("--cpu-jobs", type=int, help="CPU jobs per run (default 32)")
    parser.add_argument("--cpu-ms", type=float, default=50.0,
                        help="milliseconds of work per CPU job (default 50, as bench/run.py)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (2 if quick else 3)
    args.jobs = args.jobs or (10_000 if quick else 20_000)
    args.arq_jobs = args.arq_jobs or (1_000 if quick else 2_000)
    args.arq_default_jobs = args.arq_default_jobs or (200 if quick else 300)
    args.cpu_jobs = args.cpu_jobs or (16 if quick else 32)
    modes = args.only or ["noop", "cpu"]
    redis_server = shutil.which("redis-server") or "redis-server"
    started = time.perf_counter()
    with RedisServer() as server:  # append-only, appendfsync everysec (its defaults)
        client = redis.Redis.from_url(server.url)
        info = server_info(client, "server")
        client.close()
        print(json.dumps({
            "name": "machine", "nproc": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "jobq": jobq.__file__,
            "redis_server": info.get("redis_version"), "redis_server_path": redis_server,
            "redis_py": version("redis"), "hiredis": version("hiredis"), "arq": version("arq"),
            "appendonly": "yes, appendfsync everysec", "rounds": args.rounds, "quick": quick,
            "load_limit": LOAD_LIMIT, "loadavg_start": os.getloadavg(),
        }), flush=True)
        lines: list[dict[str, Any]] = []
        for mode in ("noop", "cpu"):
            if mode in modes:
                lines += bench_mode(server, args, mode)
    total = round(time.perf_counter() - started, 1)
    print(json.dumps({"name": "total", "unit": "s", "seconds": total,
                      "loadavg_end": os.getloadavg()}), flush=True)
    loads = [x["loadavg_max"] for x in lines if "loadavg_max" in x]
    note = (f"1-minute load average up to {max(loads):.2f} during the runs"
            + (f" (> {LOAD_LIMIT}: not valid for targets)" if max(loads) > LOAD_LIMIT else "")
            ) if loads else ""
    others = [x["others_cpu_share_max"] for x in lines if "others_cpu_share_max" in x]
    if others:
        note += (f"; other processes used up to {max(others):.0%} of the CPU time during a "
                 f"run (median over runs: {statistics.median(others):.0%})")
    print(table(lines) + ("\n\n" + note if note else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
