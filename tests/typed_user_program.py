"""A small user program that mypy --strict must accept without casts (see test_own_work)."""

from __future__ import annotations

import asyncio

from jobq import Blocking, Call, JobHandle, Pipeline


async def greet(name: str, *, punctuation: str = "!") -> str:
    await asyncio.sleep(0)
    return f"hello {name}{punctuation}"


def square(x: int) -> int:
    return x * x


async def main() -> None:
    async with Pipeline(workers=2, executor="thread") as pipe:
        greeting: JobHandle[str] = await pipe.submit(Call(greet, "ada", punctuation="?"))
        squared = await pipe.submit(Blocking(square, 7))
        text: str = await greeting
        number: int = await squared
        print(text.upper(), number + 1)
        async for result in pipe.as_completed():
            print(result.job_id, result.status.value)
            break


if __name__ == "__main__":
    asyncio.run(main())
