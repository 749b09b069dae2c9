"""Functions the Redis drills run on worker processes, in a module the workers import by
name (`python -m jobq worker --import tests.redis_workfns`). Each writes nothing to the
broker itself: what a job returns travels back as JSON."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path


async def add(a: int, b: int) -> int:
    """A Call job: returns a + b."""
    await asyncio.sleep(0)
    return a + b


def square(x: int) -> int:
    """A Blocking job (runs in the worker's process pool)."""
    return x * x


async def nap(seconds: float, marker_dir: str | None = None, tag: str = "") -> int:
    """A Call job that sleeps. With `marker_dir`, it first writes a file named
    `<pid>-<tag>` there, so a test can see which worker process started it."""
    if marker_dir is not None:
        await asyncio.to_thread(Path(marker_dir, f"{os.getpid()}-{tag}").write_text, "")
    await asyncio.sleep(seconds)
    return os.getpid()


def sleep_blocking(seconds: float) -> float:
    """A Blocking job that holds its process for `seconds`."""
    time.sleep(seconds)
    return seconds


async def always_fails(message: str) -> None:
    """A Call job whose every attempt fails."""
    raise ValueError(message)


async def not_json() -> object:
    """A Call job whose value cannot travel as JSON."""
    return {1, 2, 3}
