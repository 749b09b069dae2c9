"""Notebook 09 ("Beyond one machine"): a private Redis, worker processes, and their jobs.

The problem: notebook 9 starts real processes from a kernel - a `redis-server` and several
`python -m jobq worker`s. A process outlives the cell that started it and, unless somebody
stops it, the kernel too: after a kernel restart the old workers would still be reading the
queue, and every run of the notebook would leave more of them. So every process started here
is stopped **by its PID**, by whichever of these comes first:

    demo.stop(), or leaving `with RedisDemo()`   SIGTERM: each worker drains and exits 0,
                                                 then Redis stops and its directory goes
    the kernel exits (restart, shutdown, or      weakref.finalize (Python runs the remaining
      the demo object is collected)              finalizers at exit, through atexit):
                                                 kill -9 the workers, then Redis
    the kernel itself is killed (kill -9, or     the *reaper*: a tiny process that reads a
      Jupyter gives up waiting for it)           pipe from the kernel; when the pipe closes -
                                                 the kernel is gone - it kills what is left

    demo = RedisDemo().start()                   # a private redis-server, with a password
    a, b = demo.start_workers(2, "orders", slots=2, imports=["redis_demo"])
    async with jobq.RedisPipeline(demo.url, "orders") as pipe: ...
    a.kill()                                     # kill -9: what a crash looks like
    demo.stop()

The workers get the URL - password included - from the environment (`JOBQ_REDIS_URL`),
never on their command line, which every local user can read (`ps`). `demo.url` is a secret
too: pass it on, never print it; the reprs here do not show it.

And the jobs the workers of the notebook run (they import this module: `--import
redis_demo`, from this folder, their working directory):

    send_receipt(outbox, order_id, amount, seconds)   sends the order's receipt, then works
                                                      for `seconds`: NOT idempotent
    append_receipt, read_receipts, receipt_senders    the receipts file: write one line,
                                                      read them all, who sent which

plus two helpers for the pictures: `step_trace` (one step's jobs out of a queue's merged
trace) and `plot_by_process` (the concurrency trace, each row named by process and slot).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from jobq.trace import Event, EventKind, Trace

if TYPE_CHECKING:  # (imported where used: a worker imports this module for its jobs only)
    from matplotlib.axes import Axes

    from jobq.redis_producer import MergedTrace
    from jobq.testing import RedisServer

__all__ = [
    "RECEIPTS",
    "RedisDemo",
    "Step",
    "WorkerProcess",
    "append_receipt",
    "plot_by_process",
    "read_receipts",
    "receipt_senders",
    "send_receipt",
    "step_trace",
]

HERE = Path(__file__).resolve().parent  # the workers' working directory: they import from here
READY_TIMEOUT = 30.0  # seconds for a worker to connect and read (a busy machine: a few)
STOP_TIMEOUT = 30.0  # seconds for a worker to drain after SIGTERM before it is killed


# -- the jobs ---------------------------------------------------------------------------------

RECEIPTS = "receipts.csv"  # in an outbox folder: one line "order,amount,sender PID" each


def append_receipt(outbox: str, order_id: int, amount: int) -> None:
    """Send the receipt of an order - here: append a line to `outbox/receipts.csv`, the
    stand-in for an email. Like an email, it cannot be taken back once it is out. The line
    names the process that sent it, as a mail server's log would."""
    # One short write to a file opened for appending: whole lines, even when two processes
    # append at the same moment.
    with open(Path(outbox) / RECEIPTS, "a", encoding="utf-8") as file:
        file.write(f"{order_id},{amount},{os.getpid()}\n")


def _receipt_lines(outbox: str) -> list[tuple[int, int, int]]:
    path = Path(outbox) / RECEIPTS
    if not path.exists():
        return []
    rows = (line.split(",") for line in path.read_text(encoding="utf-8").split())
    return [(int(order), int(amount), int(pid)) for order, amount, pid in rows]


def read_receipts(outbox: str) -> list[tuple[int, int]]:
    """Every receipt sent to `outbox`, as (order, amount), in the order they were sent."""
    return [(order, amount) for order, amount, _pid in _receipt_lines(outbox)]


def receipt_senders(outbox: str) -> dict[int, list[int]]:
    """Order -> the PIDs of the processes that sent its receipts, in the order they did."""
    senders: dict[int, list[int]] = {}
    for order, _amount, pid in _receipt_lines(outbox):
        senders.setdefault(order, []).append(pid)
    return senders


async def send_receipt(outbox: str, order_id: int, amount: int, seconds: float = 0.0) -> int:
    """A `Call` job: send the order's receipt, then do the rest of the order's work for
    `seconds`. Returns the PID of the worker process that ran it.

    NOT idempotent: delivery is at least once, and a job that runs twice - its first worker
    died after the receipt went out - sends two receipts."""
    await asyncio.to_thread(append_receipt, outbox, order_id, amount)
    await asyncio.sleep(seconds)
    return os.getpid()


# -- a worker process ---------------------------------------------------------------------


class WorkerProcess:
    """One `python -m jobq worker` process; its output goes to files (a pipe that nobody
    reads fills up and blocks the process). Stopped by PID: `stop()` (SIGTERM: drain, give
    back, exit 0) or `kill()` (SIGKILL: a crash)."""

    def __init__(self, name: str, url: str, queue: str, *, slots: int,
                 imports: Sequence[str], visibility_timeout: float, drain_timeout: float,
                 executor: str, folder: Path) -> None:
        self.name = name
        self.queue = queue
        self.slots = slots
        self._out = folder / f"worker-{name}.out"
        self._err = folder / f"worker-{name}.err"
        argv = [sys.executable, "-m", "jobq", "worker", "--queue", queue,
                "--workers", str(slots), "--executor", executor,
                "--visibility-timeout", str(visibility_timeout),
                "--drain-timeout", str(drain_timeout), "--no-progress"]
        for module in imports:
            argv += ["--import", module]
        env = {**os.environ, "JOBQ_REDIS_URL": url}  # the password by environment
        with open(self._out, "wb") as out, open(self._err, "wb") as err:
            self._process = subprocess.Popen(
                argv, cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                # A session of its own: the notebook's interrupt (SIGINT to the kernel's
                # process group) stops a cell, not the workers.
                start_new_session=True)
        self.pid = self._process.pid
        shown = ["python", *argv[1:]]
        self.command = "JOBQ_REDIS_URL=<the URL> " + " ".join(shown)  # (no secret in it)
        # If nobody stops it: killed when this object is collected or Python exits. The
        # finalizer holds the process, not `self`, so it does not keep this object alive.
        self._finalizer = weakref.finalize(self, _kill, self._process)

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """None while it runs; its exit code after (-9: killed by SIGKILL)."""
        return self._process.poll()

    def signal_stop(self) -> None:
        """Send SIGTERM and return at once (`stop()` also waits)."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM - stop reading, drain, give back, exit 0 - and wait; kill -9 after
        `timeout` seconds. Returns the exit code."""
        self.signal_stop()
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = self.kill()
        self._finalizer.detach()
        return code

    def kill(self) -> int:
        """kill -9: no drain, no give-back, no final - the worker just stops, as in a crash
        (or a machine that goes away). What it held waits out the visibility timeout."""
        if self._process.poll() is None:
            self._process.kill()
        code = self._process.wait()
        self._finalizer.detach()
        return code

    def report(self) -> dict[str, str]:
        """The table the worker printed when it stopped: {"succeeded": "4", ...}. Empty
        while it runs, and after a kill -9 (a killed process prints nothing)."""
        if self.running or not self._out.exists():
            return {}
        rows: dict[str, str] = {}
        for line in self._out.read_text().splitlines():
            name, _, value = line.rstrip().rpartition("  ")
            if name.strip() and value and not set(line) <= {"-", " "}:
                rows[name.strip()] = value.strip()
        return rows

    @property
    def stderr(self) -> str:
        """What it said on stderr (jobq never shows the URL's password there)."""
        return self._err.read_text() if self._err.exists() else ""

    def __repr__(self) -> str:
        # No PID: it changes on every run, and the notebook's outputs are compared.
        code = self.returncode
        state = "running" if code is None else f"exited {code}"
        return f"<WorkerProcess {self.name} {state} queue={self.queue!r} slots={self.slots}>"


# -- Redis and the workers together ------------------------------------------------------


class RedisDemo:
    """A private redis-server (jobq.testing.RedisServer, with a random password) and the
    worker processes started for it, each named by a letter: A, B, C, ..."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerProcess] = {}
        self._redis: RedisServer | None = None
        self._folder: Path | None = None
        self._reaper: subprocess.Popen[bytes] | None = None

    # -- starting -------------------------------------------------------------------------
    def start(self) -> RedisDemo:
        """Start redis-server (and the reaper). Returns once Redis answers."""
        if self._redis is not None:
            return self
        from jobq.testing import RedisServer

        self._folder = Path(tempfile.mkdtemp(prefix="jobq-demo-"))
        weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)
        self._reaper = subprocess.Popen(
            [sys.executable, "-I", "-c", _REAPER], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        weakref.finalize(self, _close_reaper, self._reaper, forget=False)
        self._tell_reaper(f"dir {self._folder}")
        # A password, as in production: the URL is a secret (see the module docstring).
        self._redis = RedisServer(password=secrets.token_urlsafe(16)).start()
        self._watch(self._redis.pid)
        return self

    def start_workers(self, count: int, queue: str, *, slots: int = 2,
                      imports: Sequence[str] = (), visibility_timeout: float = 30.0,
                      drain_timeout: float = 5.0, executor: str = "process",
                      ) -> list[WorkerProcess]:
        """Start `count` worker processes for `queue` (all at once), and return when each
        of them reads the queue - so that a job submitted now finds every one of them."""
        redis, folder = self._redis, self._folder
        if redis is None or folder is None:
            raise RuntimeError("RedisDemo is not running: call start() first")
        started = []
        for _ in range(count):
            name = chr(ord("A") + len(self.workers))
            worker = WorkerProcess(name, redis.url, queue, slots=slots, imports=imports,
                                   visibility_timeout=visibility_timeout,
                                   drain_timeout=drain_timeout, executor=executor,
                                   folder=folder)
            self.workers[name] = worker
            self._watch(worker.pid)
            started.append(worker)
        self._wait_reading(started)
        return started

    def _wait_reading(self, workers: Sequence[WorkerProcess]) -> None:
        """Until each worker has said "worker-started" in its queue's events stream: it is
        connected, and its reader has started (its first read goes out with that event)."""
        import redis

        from jobq.broker import QueueKeys

        assert self._redis is not None
        deadline = time.monotonic() + READY_TIMEOUT
        seen: dict[str, str] = {}  # queue -> the last events entry read
        waiting = list(workers)
        with redis.Redis.from_url(self._redis.url, socket_timeout=5.0) as client:
            while True:
                for worker in waiting:
                    if not worker.running:
                        raise RuntimeError(f"worker {worker.name} exited with code "
                                           f"{worker.returncode}:\n{worker.stderr}")
                for queue in {worker.queue for worker in waiting}:
                    start = f"({seen[queue]}" if queue in seen else "-"
                    for entry, fields in client.xrange(QueueKeys(queue).events, start, "+"):
                        seen[queue] = _text(entry)
                        # An entry is {"p": process, "e": events}; a worker's process name
                        # is HOST:PID:RANDOM.
                        process = _text(fields.get(b"p", b""))
                        if b"worker-started" in fields.get(b"e", b""):
                            waiting = [w for w in waiting
                                       if not (w.queue == queue and f":{w.pid}:" in process)]
                if not waiting:
                    return
                if time.monotonic() > deadline:
                    names = ", ".join(w.name for w in waiting)
                    raise RuntimeError(f"worker(s) {names} did not start reading within "
                                       f"{READY_TIMEOUT:g} s")
                time.sleep(0.05)

    def _watch(self, pid: int) -> None:
        """Tell the reaper about a process to kill if the kernel dies."""
        self._tell_reaper(f"add {pid} {_start_time(pid)}")

    def _tell_reaper(self, line: str) -> None:
        if self._reaper is not None and self._reaper.stdin is not None:
            self._reaper.stdin.write(f"{line}\n".encode())
            self._reaper.stdin.flush()

    # -- reading ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The Redis URL, with its password: a secret - pass it on, do not print it."""
        if self._redis is None:
            raise RuntimeError("RedisDemo is not running: call start() first")
        return self._redis.url

    def name_of(self, process: str) -> str:
        """A worker's letter from its name in a merged trace (HOST:PID:RANDOM); any other
        process (a producer) is "producer"."""
        for worker in self.workers.values():
            if f":{worker.pid}:" in process:
                return worker.name
        return "producer"

    def slot_names(self, merged: MergedTrace) -> dict[int, str]:
        """The merged trace's worker numbers as "A/0", "A/1", "B/0", ...: process, slot."""
        return {number: f"{self.name_of(process)}/{slot}"
                for number, (process, slot) in merged.workers.items()}

    # -- stopping -------------------------------------------------------------------------
    def stop(self) -> dict[str, int | None]:
        """Stop every worker still running (SIGTERM to all, then wait for each), then Redis
        and the reaper. Returns each worker's exit code. Safe to call twice."""
        running = [w for w in self.workers.values() if w.running]
        for worker in running:
            worker.signal_stop()  # all at once: they drain side by side
        for worker in running:
            worker.stop()
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        if self._reaper is not None:
            _close_reaper(self._reaper, forget=True)  # everything is stopped: nothing to do
            self._reaper = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        return {name: worker.returncode for name, worker in self.workers.items()}

    def __enter__(self) -> RedisDemo:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        # Neither port nor password nor PIDs: they change every run (and one is a secret).
        if self._redis is None:
            return "<RedisDemo stopped>"
        running = [w for w in self.workers.values() if w.running]
        by_queue: dict[str, list[str]] = {}
        for worker in running:
            by_queue.setdefault(worker.queue, []).append(worker.name)
        shown = "; ".join(f"{queue!r}: {', '.join(names)}" for queue, names in by_queue.items())
        return f"<RedisDemo {self._redis!r} workers running: {shown or 'none'}>"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _kill(process: subprocess.Popen[bytes]) -> None:
    """A worker's finalizer: nobody stopped it, and the notebook is going: kill -9 now (a
    drain would outlast a kernel restart's patience; Redis goes right after it anyway)."""
    if process.poll() is None:
        process.kill()
        process.wait()


def _start_time(pid: int) -> str:
    """When process `pid` started (in clock ticks since boot, from /proc; "-" where there is
    no /proc): with the PID, it names the process even after the PID is reused."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "-"


def _close_reaper(reaper: subprocess.Popen[bytes], *, forget: bool) -> None:
    """Close the reaper's pipe, so that it ends. `forget=True` (a clean stop): it kills
    nothing. `forget=False` (the finalizer): it kills what still runs of what it knows -
    at exit, nothing, since the workers' and Redis's own finalizers ran first (newest
    first), but it checks."""
    if reaper.poll() is None and reaper.stdin is not None:
        try:
            if forget:
                reaper.stdin.write(b"forget\n")
            reaper.stdin.close()
        except BrokenPipeError:
            pass
        try:
            reaper.wait(5.0)
        except subprocess.TimeoutExpired:
            reaper.kill()
            reaper.wait()


# The reaper: reads lines from the kernel - "add PID START" (a process to watch) and "dir PATH"
# (a folder to remove) - until end of file: the kernel closed the pipe, or died and the
# operating system closed it. Then it kills every process it was told about that still runs
# and is still the same process (same start time: a PID can be reused), removes the folders,
# and exits. "forget" (a clean stop) empties both lists first. Runs with -I: no site
# packages, no current directory on the path.
_REAPER = r"""
import os, shutil, signal, sys
procs, dirs = {}, []
for line in sys.stdin:
    word, _, rest = line.strip().partition(" ")
    if word == "add":
        pid, start = rest.split()
        procs[int(pid)] = start
    elif word == "dir":
        dirs.append(rest)
    elif word == "forget":
        procs.clear()
        dirs.clear()
for pid, start in procs.items():
    try:
        with open(f"/proc/{pid}/stat") as stat:
            now = stat.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        now = "-" if not os.path.isdir("/proc") else None
    if now == start:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
for path in dirs:
    shutil.rmtree(path, ignore_errors=True)
"""


# -- pictures ---------------------------------------------------------------------------


class Step(NamedTuple):
    """One step's part of a merged trace (see `step_trace`)."""

    trace: Trace  # its jobs' events, in seconds from the first of them
    lanes: list[str]  # the name of each worker slot: slot n is lanes[n] ("A/0")
    start: float  # the wall-clock time (time.time()) of the trace's 0 s


def step_trace(merged: MergedTrace, jobs: Iterable[int], names: Mapping[int, str]) -> Step:
    """The events of `jobs` only - one step of the notebook, out of the queue's whole
    history - counted in seconds from the first of them, with the worker slots numbered in
    the order of their names (`names`: the merged trace's worker number -> "A/0")."""
    wanted = set(jobs)
    lanes = sorted(names.values())
    number = {worker: lanes.index(name) for worker, name in names.items()}
    events = [e for e in merged.trace.events if e.job in wanted]
    first = events[0].t if events else 0.0
    header = merged.trace.header
    # The merged trace counts from its first event, whose wall-clock time the header keeps.
    origin = 0.0
    if header is not None and header.started_at is not None:
        origin = datetime.datetime.fromisoformat(header.started_at).timestamp()
    trace = Trace.from_events(
        (Event(i, e.t - first, e.kind, e.job, None if e.worker is None else number[e.worker],
               e.attempt, e.info, e.value) for i, e in enumerate(events)), header)
    return Step(trace, lanes, origin + first)


def plot_by_process(trace: Trace, lanes: Sequence[str], *, ax: Axes | None = None,
                    title: str | None = None, marks: Mapping[str, float] | None = None,
                    ) -> Axes:
    """jobq's concurrency trace (`plotting.plot_concurrency_trace`) with each row named by
    worker process and slot ("A/0": `lanes[n]` for slot n, as `step_trace` gives them), a
    line between two processes, and a dashed line at each of `marks` ({label: seconds})."""
    from matplotlib.lines import Line2D

    from jobq import plotting
    from jobq.metrics import worker_spans

    ax = plotting.plot_concurrency_trace(trace, ax=ax)
    rows = sorted({span.worker for span in worker_spans(trace)})  # as the plot orders them
    shown = [lanes[n] if 0 <= n < len(lanes) else f"worker {n}" for n in rows]
    ax.set_yticks(range(len(rows)), shown)
    ax.set_ylabel("worker process / slot")
    for row, (above, below) in enumerate(pairwise(shown)):
        if above.split("/")[0] != below.split("/")[0]:
            ax.axhline(row + 0.5, color="#555555", linewidth=0.8)
    legend = ax.get_legend()
    if legend is not None:
        handles = [h for h in legend.legend_handles if h is not None]
        if not trace.of_kind(EventKind.RETRY_SCHEDULED):
            # No retries here: a job taken over from a dead worker is not a backoff pause
            # (the plot draws the gap between two attempts of a job as one).
            handles = [h for h in handles if h.get_label() != "backoff pause"]
        for label, x in (marks or {}).items():
            ax.axvline(x, color="#333333", linestyle="--", linewidth=1.2)
            handles.append(Line2D([], [], color="#333333", linestyle="--", label=label))
        ax.legend(handles=handles, title=legend.get_title().get_text(), loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
    if title is not None:
        ax.set_title(title)
    return ax
