"""CpuBound jobs on the virtual clock without a cost model: said once, never silently.

Real CPU work runs between two virtual instants (the clock stands still while the loop is
busy), so such jobs last 0 s in every plot and metric. The pipeline warns once, at the
first such submit; with `cpu_cost`, or on the real clock, there is nothing to warn about.
"""

from __future__ import annotations

import asyncio
import warnings

import pytest

import jobq
from jobq import CpuBound, InvisibleCpuWarning, Job, Pipeline


async def _two_cpu_jobs(**options: object) -> list[float]:
    async with Pipeline(workers=2, executor="inline", **options) as pipe:  # type: ignore[arg-type]
        await pipe.submit(Job(1, b"x", CpuBound(100)))
        await pipe.submit(Job(2, b"y", CpuBound(100)))
    return [r.duration for r in pipe.results]


def test_cpu_jobs_on_the_virtual_clock_without_a_cost_model_warn_once() -> None:
    with pytest.warns(InvisibleCpuWarning, match="cpu_cost") as caught:
        durations = jobq.run_virtual(_two_cpu_jobs())
    assert len(caught) == 1, [str(w.message) for w in caught]  # once per pipeline, not per job
    assert durations == [0.0, 0.0]  # what the warning is about: they took no virtual time


def test_a_cost_model_or_the_real_clock_gives_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", InvisibleCpuWarning)
        modelled = jobq.run_virtual(_two_cpu_jobs(cpu_cost=0.01))
        asyncio.run(_two_cpu_jobs())  # real clock: real CPU time shows in the plots
    assert modelled == [1.0, 1.0]  # 100 iterations x 0.01 virtual s
