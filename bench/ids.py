"""How much refusing duplicate ids costs, by id order: sequential vs random, before/after.

    python bench/ids.py                  # 200,000 ids: IdSet alone, memory, and whole pipelines
    python bench/ids.py --no-pipeline    # IdSet alone and memory (a few seconds)
    python bench/ids.py --jobs 50000

One JSON line per measurement (as bench/run.py): `before` is the IdSet jobq had until the
change (sorted intervals in two flat Python lists, kept below as `ListIdSet`), `after` is
`jobq.accounting.IdSet`. Times are CPU seconds (`time.process_time`, steadier than wall time
on a shared machine), the median of `--rounds` alternating rounds.

* `ids.idset.*`: n `add` calls on an empty set, the ids in order 0..n-1 or random (drawn
  from 0..2^40 with `random.Random(1)`). `growth` is the time for n ids over the time for
  n/2: about 2 is linear (or n log n), about 4 is quadratic.
* `ids.memory.*`: bytes allocated per id (tracemalloc), the int objects of the ids included;
  `set` is a plain Python set of the same ids, for scale. `runs`: how many runs IdSet keeps.
* `ids.pipeline.*`: n `Job(id, b"", Delayed(0))` through `Pipeline(workers=8, capacity=10,
  executor="inline", trace=False, keep_results=False)`: what a user sees. The "before" of
  the random order takes tens of seconds: this is the slow part of the script.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import random
import statistics
import sys
import time
import tracemalloc
from bisect import bisect_right
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:
    import jobq
except ImportError:  # not installed: use the checkout this file belongs to
    sys.path.append(str(Path(__file__).resolve().parent.parent))
    import jobq

import jobq.pipeline
from jobq import Delayed, Job, Pipeline
from jobq.accounting import IdSet


class ListIdSet:
    """The IdSet before: sorted, disjoint intervals [start, end] in two Python lists.

    Kept here only to measure against. A new interval is inserted into the middle of both
    lists, which moves every entry after it: quadratic for ids that do not come in order.
    """

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value <= self._ends[i]

    def add(self, value: int) -> None:
        if value in self:
            return
        self._count += 1
        i = bisect_right(self._starts, value) - 1
        joins_left = i >= 0 and self._ends[i] == value - 1
        joins_right = i + 1 < len(self._starts) and self._starts[i + 1] == value + 1
        if joins_left and joins_right:
            self._ends[i] = self._ends[i + 1]
            del self._starts[i + 1], self._ends[i + 1]
        elif joins_left:
            self._ends[i] = value
        elif joins_right:
            self._starts[i + 1] = value
        else:
            self._starts.insert(i + 1, value)
            self._ends.insert(i + 1, value)

    def discard(self, value: int) -> None:
        raise NotImplementedError("not needed to measure submit")


VARIANTS: dict[str, type[Any]] = {"before": ListIdSet, "after": IdSet}


def id_orders(n: int) -> dict[str, list[int]]:
    return {
        "sequential": list(range(n)),
        "random": random.Random(1).sample(range(2**40), n),
    }


def cpu_seconds(work: Callable[[], object]) -> float:
    gc.collect()
    start = time.process_time()
    work()
    return time.process_time() - start


def fill(kind: type[Any], ids: Sequence[int]) -> object:
    id_set = kind()
    for value in ids:
        id_set.add(value)
    return id_set


def fill_fresh(kind: type[Any], ids: Sequence[int]) -> object:
    """As fill, but each id a new int object, as when the Job that held it is gone: then
    the int lives on in the set, and its 28-32 bytes count."""
    id_set = kind()
    for value in ids:
        id_set.add(value + 0)  # `+ 0` makes a new int (except -5..256, which are shared)
    return id_set


def bytes_per_id(make: Callable[[], object], n: int) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        kept = make()
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return size / n


async def pipeline(ids: Sequence[int]) -> None:
    jobs = [Job(i, b"", Delayed(0)) for i in ids]
    async with Pipeline(workers=8, capacity=10, executor="inline", progress=False,
                        trace=False, keep_results=False) as pipe:
        await pipe.submit_many(jobs)
    assert pipe.report is not None and pipe.report.succeeded == len(ids)


def run_pipeline(kind: type[Any], ids: Sequence[int]) -> float:
    # The Pipeline builds its IdSet by the name it imported: swap the class for one run.
    saved = jobq.pipeline.IdSet  # type: ignore[attr-defined]
    jobq.pipeline.IdSet = kind  # type: ignore[attr-defined]
    try:
        return cpu_seconds(lambda: asyncio.run(pipeline(ids)))
    finally:
        jobq.pipeline.IdSet = saved  # type: ignore[attr-defined]


def emit(name: str, unit: str, values: dict[str, list[float]], **extra: object) -> None:
    record: dict[str, object] = {"name": name, "unit": unit}
    for variant, samples in values.items():
        record[variant] = round(statistics.median(samples), 4)
    if "before" in record and "after" in record:
        record["before/after"] = round(float(record["before"]) / float(record["after"]), 2)  # type: ignore[arg-type]
    record.update(extra)
    print(json.dumps(record), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200_000, help="ids per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of IdSet alone")
    parser.add_argument("--pipeline-rounds", type=int, default=1)
    parser.add_argument("--no-pipeline", action="store_true", help="skip whole pipelines")
    args = parser.parse_args()
    n = args.jobs
    print(json.dumps({"name": "machine", "python": sys.version.split()[0],
                      "jobq": str(Path(jobq.__file__).parent), "jobs": n}), flush=True)

    for order, ids in id_orders(n).items():
        half = ids[: n // 2]
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        halves: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):  # alternating: before, after, before, after, ...
            for variant, kind in VARIANTS.items():
                times[variant].append(cpu_seconds(functools.partial(fill, kind, ids)))
                halves[variant].append(cpu_seconds(functools.partial(fill, kind, half)))
        growth = {v: round(statistics.median(times[v]) / statistics.median(halves[v]), 2)
                  for v in VARIANTS}
        emit(f"ids.idset.{order}", "CPU s", times, n=n, growth_n_over_half=growth)

    for order, ids in id_orders(n).items():
        sizes = {variant: [bytes_per_id(functools.partial(fill_fresh, kind, ids), n)]
                 for variant, kind in VARIANTS.items()}
        sizes["set"] = [bytes_per_id(functools.partial(fill_fresh, set, ids), n)]
        runs = fill(IdSet, ids).runs  # type: ignore[attr-defined]
        emit(f"ids.memory.{order}", "bytes per id", sizes, n=n, runs=runs)

    if not args.no_pipeline:
        for order, ids in id_orders(n).items():
            times = {v: [] for v in VARIANTS}
            for _ in range(args.pipeline_rounds):
                for variant, kind in VARIANTS.items():
                    times[variant].append(run_pipeline(kind, ids))
            emit(f"ids.pipeline.{order}", "CPU s", times, n=n)


if __name__ == "__main__":
    main()
