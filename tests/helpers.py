"""Small helpers the tests share: a trace written by hand, watching processes (is it
gone? what did a test leave running?), and which notebooks cannot run here. Building jobs
and reading a trace's accounting and concurrency is the public test kit's job: `jobq.testing`."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from jobq import Trace
from jobq.testing import delayed_jobs  # noqa: F401 - for the modules that import it from here
from jobq.trace import EventKind

from .conftest import IN_CI

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def emit_two_workers(trace: Trace, *, job3_fails: bool = False) -> None:
    """2 workers, queue capacity 1, 4 jobs. On paper:

        worker 0: job 1 [0, 1)   job 3 [1, 2.5)
        worker 1: job 2 [0, 2)   job 4 [2, 4)
        queue:    depth 1 on [0, 2), 0 after     -> area 2
        producer: job 4 waits on [0, 1) for room -> 1 s blocked, once
        latency:  job1 1, job2 2, job3 2.5, job4 3 (enqueued at 1) -> mean 2.125, p50 2.25
        service:  1, 2, 1.5, 2 -> mean 1.625
        busy:     1 + 2 + 1.5 + 2 = 6.5 worker-seconds of 2 x 4 -> utilisation 0.8125
        in system: 3 on [0, 2), 2 on [2, 2.5), 1 on [2.5, 4) -> area 8.5 = sum of latencies
    """
    e = trace.emit
    e(0.0, EventKind.ENQUEUED, 1, info="cpu", value=1)
    e(0.0, EventKind.DISPATCHED, 1, worker=0, value=0)
    e(0.0, EventKind.STARTED, 1, worker=0, attempt=1)
    e(0.0, EventKind.ENQUEUED, 2, info="io", value=1)
    e(0.0, EventKind.DISPATCHED, 2, worker=1, value=0)
    e(0.0, EventKind.STARTED, 2, worker=1, attempt=1)
    e(0.0, EventKind.ENQUEUED, 3, info="cpu", value=1)
    e(0.0, EventKind.PRODUCER_BLOCKED, 4)
    e(1.0, EventKind.SUCCEEDED, 1, worker=0, attempt=1)
    e(1.0, EventKind.DISPATCHED, 3, worker=0, value=0)
    e(1.0, EventKind.STARTED, 3, worker=0, attempt=1)
    e(1.0, EventKind.PRODUCER_RESUMED, 4)
    e(1.0, EventKind.ENQUEUED, 4, info="delay", value=1)
    e(2.0, EventKind.SUCCEEDED, 2, worker=1, attempt=1)
    e(2.0, EventKind.DISPATCHED, 4, worker=1, value=0)
    e(2.0, EventKind.STARTED, 4, worker=1, attempt=1)
    if job3_fails:  # its only attempt fails: dead-lettered at 2.5 instead
        e(2.5, EventKind.ATTEMPT_FAILED, 3, worker=0, attempt=1, info="InjectedFailure: boom")
        e(2.5, EventKind.DEAD_LETTERED, 3, worker=0, attempt=1, info="InjectedFailure: boom")
    else:
        e(2.5, EventKind.SUCCEEDED, 3, worker=0, attempt=1)
    e(4.0, EventKind.SUCCEEDED, 4, worker=1, attempt=1)


def wait_for_file(path: Path, seconds: float = 60.0) -> None:
    """Wait until a work function has written `path` (blocking: from async code, call it
    with asyncio.to_thread)."""
    end = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)


def is_gone(pid: int) -> bool:
    """Has process `pid` exited? (A zombie waiting to be reaped counts as gone.)"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    """Wait until process `pid` has exited; False if it is still there after `seconds`."""
    end = time.monotonic() + seconds
    while not is_gone(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def session_processes(session: int) -> list[int]:
    """Pids of the live processes in this session (a subprocess started with
    start_new_session=True): what a test left running."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()  # after "(command name)"
        if int(fields[3]) == session and fields[0] != "Z":  # field 6 of stat: session id
            pids.append(int(entry.name))
    return pids


def missing_program(name: str) -> str | None:
    """Why notebook `name` cannot run here - a program it needs is not installed - or None.

    notebooks/conftest.py says which notebooks need what, and nbval skips them the same way
    (with the install command); in CI nothing is skipped: .ci/run installs every program.
    """
    if IN_CI or not (NOTEBOOKS / "conftest.py").exists():
        return None
    spec = importlib.util.spec_from_file_location("notebooks_conftest",
                                                  NOTEBOOKS / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = getattr(module, "_redis_missing", None)
    if missing is not None and name.startswith(tuple(getattr(module, "NEEDS_REDIS", ()))):
        reason = missing()
        return None if reason is None else str(reason)
    return None
