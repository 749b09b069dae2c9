"""Work functions for the reliability tests, in an importable module so that a process pool's
children can import them by name. Each is a `cpu_function(iterations, payload) -> int` whose
payload says how to misbehave."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from jobq import cpu_work


class TwoArgumentError(Exception):
    """Pickles fine, but unpickling calls __init__ with one argument: it cannot travel back
    from a pool process."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")


def hostile(iterations: int, payload: bytes) -> int:
    """b"exit" SystemExit, b"interrupt" KeyboardInterrupt, b"cancelled" CancelledError,
    b"unpicklable" an exception the parent cannot unpickle; anything else: ordinary work."""
    if payload == b"exit":
        raise SystemExit(3)
    if payload == b"interrupt":
        raise KeyboardInterrupt
    if payload == b"cancelled":
        raise asyncio.CancelledError
    if payload == b"unpicklable":
        raise TwoArgumentError("job", "refuses")
    return cpu_work(iterations, payload)


def sleeper(iterations: int, payload: bytes) -> int:
    """Write this process's pid to the file named by the payload, then sleep `iterations`
    tenths of a second (a job that will not finish before the drain deadline)."""
    Path(payload.decode()).write_text(str(os.getpid()))
    time.sleep(iterations / 10)
    return iterations


def crash_once_then_sleep(iterations: int, payload: bytes) -> int:
    """First call: the process dies (the pool breaks, the job is retried on a process of its
    own). Later calls: like `sleeper` - so the isolated retry runs past the deadline."""
    marker = Path(payload.decode() + ".crashed")
    if not marker.exists():
        marker.write_text("")
        os._exit(70)
    return sleeper(iterations, payload)


def power(base: int, exponent: int = 2) -> int:
    """A Blocking job with arguments and a keyword."""
    return int(base**exponent)


class _NoWayBack:
    """Pickles, but unpickling fails: a result that cannot travel back to the parent."""

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (_refuse, ())


def _refuse() -> None:
    raise RuntimeError("this object cannot be rebuilt")


def unpicklable_result() -> object:
    return _NoWayBack()


async def napping(seconds: float, *, fail: bool = False) -> float:
    """A Call job: sleep (on the loop's clock), then succeed or raise."""
    await asyncio.sleep(seconds)
    if fail:
        raise ValueError(f"napped {seconds} s and failed")
    return seconds
