"""The hand-written Redis Streams floor of issue 12: the least a consumer-group queue can do.

    python bench/redis_floor.py --jobs 20000 --processes 2      # own private redis-server
    python bench/redis_bench.py                                  # beside arq and jobq

What one run does (`run_floor`), on a stream and a results hash of its own:

    parent (producer)                      worker process x P (`python bench/redis_floor.py worker`)
    -----------------                      -------------------------------------------------------
    XGROUP CREATE ... MKSTREAM
    start P workers, wait for "ready"      XREADGROUP GROUP workers <name> COUNT 100 BLOCK 100
    t0; XADD x N, pipelined 1,000 a call     -> run every job of the batch (a no-op, or cpu_work)
    poll HLEN results every 2 ms           MULTI; XACK <batch ids>; HSET results <id> <json> x
    t1 = the poll that sees N results        batch; EXEC                      (~2 commands a job)
    SIGTERM the workers, wait for exit     stop reading at SIGTERM, say how many jobs it ran

jobs/s = N / (t1 - t0): from the first XADD to the poll that finds the last result stored (the
2 ms poll is the same for every variant of bench/redis_bench.py; it adds at most 2 ms).
Also measured between t0 and t1, from the server's INFO commandstats (the bench's own polls
left out): Redis commands per job (MULTI and EXEC count; in a Lua script, every command it
calls counts too) and the server's microseconds per job; and from /proc, the shares of the
machine's CPU time used by the run's own processes and by everything else (`per_job`).

What the floor leaves out, and a job queue with jobq's guarantees cannot: a ledger of accepted
jobs (so `lost` can be computed), backpressure on the producer, reclaiming entries of a dead
worker, retries and dead letters, a trace. It does keep what any real worker needs: an entry
per job (an id, a function name, JSON arguments) decoded and dispatched by name, a JSON
result per job, and no job acknowledged before its result is stored (one MULTI/EXEC).

CPU mode (`kind="cpu"`): every job runs `jobq.work.cpu_work(iterations, b"")`, and a worker
reads one entry at a time (`count=1`: one slot per process), so that 2 processes share the
jobs instead of the first one taking a batch of 100.

The Redis URL reaches the workers in an environment variable, not on their command line: a
password in it would be visible to every local user there (`ps`, /proc/PID/cmdline).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis

HERE = Path(__file__).resolve()
URL_ENV = "JOBQ_BENCH_REDIS_URL"  # how the workers learn the URL (never argv: see above)
GROUP = "workers"
CHUNK = 1_000  # XADDs per pipelined call
POLL = 0.002  # seconds between two looks at the result count
READY_TIMEOUT = 30.0  # seconds a worker process may take to say "ready"


def stream_key(queue: str) -> str:
    # One hash tag per queue ({queue}), as issue 12 asks of jobq: a Redis Cluster keeps a
    # queue's keys on one node, so MULTI over the stream and the results hash stays legal.
    return f"floor:{{{queue}}}:jobs"


def results_key(queue: str) -> str:
    return f"floor:{{{queue}}}:results"


# -- the jobs ---------------------------------------------------------------------------


def noop() -> None:
    return None


def cpu(iterations: int) -> int:
    from jobq.work import cpu_work

    return cpu_work(iterations, b"")


FUNCTIONS: dict[str, Callable[..., Any]] = {"noop": noop, "cpu": cpu}


def entry(job_id: int, kind: str, iterations: int) -> dict[str, str]:
    """The fields of one job's stream entry: id, function name, JSON arguments."""
    args = [iterations] if kind == "cpu" else []
    return {"id": str(job_id), "fn": kind, "args": json.dumps(args)}


# -- the worker process -----------------------------------------------------------------


def worker_main(queue: str, consumer: str, count: int) -> None:
    """Read, run, acknowledge + store results in one MULTI/EXEC, until SIGTERM."""
    client = redis.Redis.from_url(os.environ[URL_ENV])
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True  # the blocking read returns within 100 ms; the loop ends there

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stream, results = stream_key(queue), results_key(queue)
    client.ping()
    import jobq.work  # noqa: F401  (what a CPU job needs: imported before "ready", untimed)

    print("ready", flush=True)
    done = 0
    while not stopping:
        reply = cast(list[Any], client.xreadgroup(GROUP, consumer, {stream: ">"},
                                                  count=count, block=100))
        if not reply:
            continue
        ids: list[bytes] = []
        values: dict[str, str] = {}
        for entry_id, fields in reply[0][1]:
            function = FUNCTIONS[fields[b"fn"].decode()]
            values[fields[b"id"].decode()] = json.dumps(function(*json.loads(fields[b"args"])))
            ids.append(entry_id)
        pipe = client.pipeline(transaction=True)  # MULTI ... EXEC: all of it or none
        pipe.xack(stream, GROUP, *ids)
        for job_id, value in values.items():
            pipe.hset(results, job_id, value)  # one command per job, as a real result is
        pipe.execute()
        done += len(ids)
    client.close()
    print(json.dumps({"consumer": consumer, "jobs": done}), flush=True)


# -- worker processes, for every variant of the bench -----------------------------------


def start_processes(argvs: Sequence[list[str]], url: str) -> list[subprocess.Popen[str]]:
    """Start one process per argv and return once each has printed its "ready" line."""
    env = {**os.environ, URL_ENV: url}
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
             for argv in argvs]
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        for proc in procs:
            assert proc.stdout is not None
            # Wait for a line, but not forever; a process that died gives "" at once.
            waiting = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = proc.stdout.readline() if waiting[0] else "(nothing within the timeout)"
            if line.strip() != "ready":
                raise RuntimeError(f"worker process {proc.args!r} did not start: {line!r} "
                                   f"(exit code {proc.poll()})")
    except BaseException:
        stop_processes(procs)
        raise
    return procs


def stop_processes(procs: Sequence[subprocess.Popen[str]], timeout: float = 10.0) -> list[str]:
    """SIGTERM each process, wait for it (SIGKILL after `timeout`), return what it printed."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    out: list[str] = []
    for proc in procs:
        try:
            text, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            text, _ = proc.communicate()
        out.append(text or "")
    return out


def server_info(client: redis.Redis, section: str) -> dict[str, Any]:
    """INFO <section> as a dict (redis-py's types also allow an awaitable: not here)."""
    return cast(dict[str, Any], client.info(section))


@dataclass(frozen=True)
class Snapshot:
    """What the server and the CPUs had done at one instant (see `snapshot`)."""

    calls: int  # Redis commands the server has run (INFO commandstats), minus ignored ones
    usec: int  # the server's microseconds in them
    busy: int  # clock ticks all CPUs spent not idle (/proc/stat), everybody's
    ours: int  # clock ticks of this process, the server and the workers (/proc/PID/stat)
    at: float  # time.perf_counter()


def snapshot(client: redis.Redis, ignore: Sequence[str], pids: Sequence[int]) -> Snapshot:
    """INFO commandstats (leaving out INFO and `ignore`: the bench's own polls) and the CPU
    time of the machine and of our processes: this one, redis-server and `pids`."""
    info = server_info(client, "commandstats")
    skip = {f"cmdstat_{name}" for name in ("info", *ignore)}
    kept = [stats for name, stats in info.items() if name not in skip]
    server = int(server_info(client, "server")["process_id"])
    return Snapshot(sum(int(s["calls"]) for s in kept), sum(int(s["usec"]) for s in kept),
                    _busy_ticks(), _ticks_of([os.getpid(), server, *pids]),
                    time.perf_counter())


def per_job(before: Snapshot, after: Snapshot, jobs: int) -> dict[str, float]:
    """Redis commands and server microseconds per job between two snapshots, and who used
    the CPUs meanwhile, as shares of all CPU time (cores x wall time): `ours_cpu_share`
    (producer, workers, redis-server) and `others_cpu_share` (everything else on the
    machine: the neighbours - what the load average only hints at)."""
    capacity = (after.at - before.at) * CLOCK_TICKS * (os.cpu_count() or 1)
    ours = after.ours - before.ours
    others = max(0, after.busy - before.busy - ours)
    return {"commands_per_job": round((after.calls - before.calls) / jobs, 2),
            "redis_us_per_job": round((after.usec - before.usec) / jobs, 2),
            "ours_cpu_share": round(ours / capacity, 3) if capacity else 0.0,
            "others_cpu_share": round(others / capacity, 3) if capacity else 0.0}


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc counts CPU time in these (100 a second)


def _busy_ticks() -> int:
    """Ticks all CPUs spent busy: /proc/stat's first line minus idle and iowait (guest time
    is in user time already, so its columns are not added)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4]


def _ticks_of(pids: Sequence[int]) -> int:
    """User + system ticks of these processes (all threads); gone ones count 0."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": field 3 is fields[0]
        total += int(fields[11]) + int(fields[12])  # utime (field 14) + stime (field 15)
    return total


def wait_for(count: Callable[[], int], jobs: int, timeout: float) -> float:
    """Poll `count()` every POLL seconds until it reaches `jobs`; the perf_counter then."""
    deadline = time.perf_counter() + timeout
    while True:
        now = time.perf_counter()
        if count() >= jobs:
            return now
        if now > deadline:
            raise TimeoutError(f"only {count()} of {jobs} results after {timeout} s")
        time.sleep(POLL)


# -- one run ----------------------------------------------------------------------------


def run_floor(url: str, queue: str, jobs: int, processes: int, *, kind: str = "noop",
              iterations: int = 0, timeout: float = 300.0) -> dict[str, Any]:
    """One end-to-end run of the floor; returns jobs, seconds and jobs_per_s."""
    client = redis.Redis.from_url(url)
    stream, results = stream_key(queue), results_key(queue)
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    count = 1 if kind == "cpu" else 100
    argvs = [[sys.executable, str(HERE), "worker", "--queue", queue,
              "--consumer", f"w{index}", "--count", str(count)] for index in range(processes)]
    entries = [entry(i, kind, iterations) for i in range(jobs)]  # built before the clock
    procs = start_processes(argvs, url)
    try:
        pids = [proc.pid for proc in procs]
        before = snapshot(client, ["hlen"], pids)
        started = time.perf_counter()
        for first in range(0, jobs, CHUNK):
            pipe = client.pipeline(transaction=False)  # pipelined, not a transaction
            for fields in entries[first:first + CHUNK]:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            pipe.execute()
        ended = wait_for(lambda: cast(int, client.hlen(results)), jobs, timeout)
        after = snapshot(client, ["hlen"], pids)
    finally:
        reports = stop_processes(procs)
    ran = sum(json.loads(text.splitlines()[-1])["jobs"] for text in reports if text.strip())
    pending = cast(dict[str, Any], client.xpending(stream, GROUP))["pending"]
    client.close()
    assert ran == jobs and pending == 0, (ran, pending, jobs)
    seconds = ended - started
    return {"jobs": jobs, "seconds": seconds, "jobs_per_s": jobs / seconds,
            **per_job(before, after, jobs)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("worker", help="a worker process (the URL in $" + URL_ENV + ")")
    worker.add_argument("--queue", required=True)
    worker.add_argument("--consumer", required=True)
    worker.add_argument("--count", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "worker":
        worker_main(args.queue, args.consumer, args.count)
        return
    sys.path.insert(0, str(HERE.parent.parent))  # jobq from this checkout if not installed
    from jobq.testing import RedisServer

    with RedisServer() as server:
        result = run_floor(server.url, f"q-{uuid.uuid4().hex[:8]}", args.jobs, args.processes)
    print(json.dumps({"variant": "floor", "processes": args.processes, **result}))


if __name__ == "__main__":
    main()
