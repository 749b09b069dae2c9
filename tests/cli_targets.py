"""TARGETs for `jobq run module:function` in tests/test_cli.py: functions that give jobs in
every shape the command accepts, and the mistakes it must refuse.

Imported by name (`tests.cli_targets:sync_jobs`) and by path (`tests/cli_targets.py:...`,
then as a top-level module `cli_targets`): so no relative imports here.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator

from jobq import Blocking, Call, Delayed, Job

NOT_A_FUNCTION = 42


async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def square(x: int) -> int:
    return x * x


# -- shapes that work ------------------------------------------------------------------------


def sync_jobs() -> Iterator[Job | Call[float] | Delayed]:
    """A plain generator of 12: Jobs with ids of their own, and bare job types (next free id)."""
    for i in range(4):
        yield Job(100 + i, b"", Delayed(0.01))
        yield Call(nap, 0.01)
        yield Delayed(0.02)


async def async_jobs() -> AsyncIterator[Call[float]]:
    """An async generator of 10: it may await between jobs (a page of a query, say)."""
    for _ in range(10):
        await asyncio.sleep(0.001)
        yield Call(nap, 0.01)


async def coroutine_list() -> list[Call[float] | Delayed]:
    """An async function that returns a list of 6 (the bar then knows the total)."""
    await asyncio.sleep(0.001)
    return [Call(nap, 0.01) for _ in range(3)] + [Delayed(0.01) for _ in range(3)]


def blocking_jobs() -> list[Blocking[int]]:
    """8 squares, for a process pool: `square` must be importable in its processes."""
    return [Blocking(square, x) for x in range(8)]


def slow_jobs() -> Iterator[Call[float]]:
    """1000 naps of 0..0.5 s (seeded): many seconds of work, for a signal to cut short."""
    rng = random.Random(1)
    for _ in range(1000):
        yield Call(nap, rng.uniform(0, 0.5))


async def slow_to_start() -> list[Call[float]]:
    """Takes a minute to work out its jobs (a slow query): a signal must not wait for it."""
    await asyncio.sleep(60)
    return [Call(nap, 0.01)]


# -- mistakes ------------------------------------------------------------------------------


def needs_an_argument(count: int) -> list[Delayed]:
    return [Delayed(0) for _ in range(count)]


def raises_at_once() -> list[Delayed]:
    raise ValueError("no jobs today")


def returns_a_number() -> int:
    return 42


def returns_nothing() -> None:
    return None


def raises_midway() -> Iterator[Delayed]:
    """3 good jobs, then the generator raises."""
    for _ in range(3):
        yield Delayed(0.01)
    raise RuntimeError("lost the connection to the job list")


def bad_item() -> Iterator[object]:
    """3 good jobs, then a str."""
    for _ in range(3):
        yield Delayed(0.01)
    yield "oops"
    yield Delayed(0.01)  # never taken


def coroutine_item() -> Iterator[object]:
    """The commonest slip: a call of the function instead of Call(function, ...)."""
    yield Call(nap, 0.01)
    yield nap(0.01)


def duplicate_ids() -> list[Job]:
    return [Job(1, b"", Delayed(0.01)), Job(2, b"", Delayed(0.01)), Job(1, b"", Delayed(0.01))]


def unimportable_blocking() -> list[Blocking[int]]:
    """A nested function: a process pool's processes cannot import it by name."""

    def inner() -> int:
        return 1

    return [Blocking(inner)]
